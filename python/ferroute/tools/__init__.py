"""The server-side tool loop: the router runs the tools of MCP servers for the model, inside one response.

`hosted.Tools` is the app's part (the config's servers, the MCP client pool, the URL guard); `hosted.Plan` is one
request's (the servers it names, the functions the model is offered, the calls made so far); `loop.run_loop` runs
an exchange whose request has hosted tools: list each server's tools, then sample, run the calls, sample again,
on one translator, so that the client sees one response in one `sequence_number` series. `mcp` speaks MCP
(streamable HTTP, the official `mcp` package's client).
"""
