"""The router's MCP client: the tools of MCP servers (streamable HTTP) for the server-side tool loop.

- `McpPool`: pooled client sessions; `list_tools` and `call` a tool on a server, by URL and headers.
- `UrlGuard`: which server URLs a request may name (prefixes, and no private addresses unless a prefix names the
  host); config servers are trusted.
- `McpTool`, `CallResult`, `McpError`: what comes back.

Importing this package does not import the `mcp` package: that happens when a pool opens its first session, so a
router that never uses MCP never pays for it. `ferroute.tools.mcp.demo` is a small MCP server for trying it out
(`ferroute mcp-demo`).
"""

from ferroute.tools.mcp.guard import UrlGuard
from ferroute.tools.mcp.pool import McpPool
from ferroute.tools.mcp.results import CallResult, McpError, McpTool

__all__ = ["CallResult", "McpError", "McpPool", "McpTool", "UrlGuard"]
