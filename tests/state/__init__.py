"""Stored responses: continuation, background, reasoning round trips, and each store backend."""
