"""The router as clients see it: a real `ferroute serve` (or the app in-process) in front of a mock upstream."""
