"""The router's MCP client: the tools of MCP servers (streamable HTTP) for the server-side tool loop.

- `UrlGuard`: which server URLs a request may name (prefixes, and no private addresses unless a prefix names the
  host); config servers are trusted.
- `McpTool`, `CallResult`, `McpError`: what comes back.

Importing this package does not import the `mcp` package, so a router that never uses MCP never pays for it.
"""

from ferroute.mcp.guard import UrlGuard
from ferroute.mcp.results import CallResult, McpError, McpTool

__all__ = ["CallResult", "McpError", "McpTool", "UrlGuard"]
