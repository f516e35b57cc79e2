"""Routing policy between the client and the upstreams: which client keys may call what and how often (`keys`)."""
