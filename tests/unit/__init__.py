"""The core's Python API (SSE, JSON, the event parser) and the small pieces around the app (config, CLI, logs,
transport)."""
