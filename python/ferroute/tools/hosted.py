"""Hosted tools for one request (`Plan`) and for the app (`Tools`).

A request's `mcp` tools become servers (its own `server_url`, checked by the URL guard, or a `[[mcp_servers]]`
entry named by `server_label`); their tools are offered to the model as functions under names unique across
servers and the client's own function tools. What the upstream sees of hosted items is what every dialect
already reads: an `mcp_call` becomes a `function_call` and its `function_call_output` (`lower`), a refused
approval the same with the refusal as the output; listings and pending approval requests are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferroute.config import AgentsConfig, McpConfig, McpServerConfig
from ferroute.errors import invalid_request
from ferroute.models import (
    AgentCallItem,
    AgentTool,
    AllowedTools,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    McpApprovalRequestItem,
    McpApprovalResponseItem,
    McpCallItem,
    McpListedTool,
    McpListToolsItem,
    McpTool,
    MessageItem,
    ResponsesRequest,
    ToolNames,
)

if TYPE_CHECKING:
    from ferroute.tools.mcp import McpPool, UrlGuard

_HOSTED_ITEMS = (McpListToolsItem, McpCallItem, McpApprovalRequestItem, McpApprovalResponseItem, AgentCallItem)
# A sub-agent's nested response, given its request, tenant and depth, handing each event to a callback as it comes.
OnEvent = Callable[[dict[str, Any]], None]
RunAgent = Callable[[ResponsesRequest, str, int, OnEvent], Awaitable[dict[str, Any]]]
AGENT_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"task": {"type": "string", "description": "What the agent is to do, with what it needs to know."}},
    "required": ["task"],
    "additionalProperties": False,
}
_NAME = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True, slots=True)
class Names:
    """Item and event names under `[mcp] item_names`: OpenAI's, or `ferroute:`-prefixed (the spec's rule for an
    implementor's own types)."""

    list_tools: str
    call: str
    approval_request: str
    events: str  # the event types' prefix: "response." or "ferroute:"

    @classmethod
    def of(cls, item_names: str) -> Names:
        if item_names == "prefixed":
            return cls("ferroute:mcp_list_tools", "ferroute:mcp_call", "ferroute:mcp_approval_request", "ferroute:")
        return cls("mcp_list_tools", "mcp_call", "mcp_approval_request", "response.")


@dataclass(slots=True)
class Server:
    """One MCP server a request uses."""

    label: str
    url: str
    headers: dict[str, str] = field(repr=False)  # credentials: never logged, stored or echoed
    guard: UrlGuard | None  # None: a server of the config (trusted)
    approval: str | dict[str, ToolNames] | None
    allowed: list[str] | None
    description: str | None = None
    tools: list[McpListedTool] | None = None  # listed (this response) or found in the conversation's history

    def needs_approval(self, tool: str) -> bool:
        """OpenAI's rule: approval unless "never"; in the per-tool form a tool named under `never` needs none, one
        named under `always` needs it, and any other needs it unless only `always` was given."""
        approval = self.approval
        if approval is None or approval == "always":
            return True
        if approval == "never":
            return False
        assert isinstance(approval, dict)
        never, always = approval.get("never"), approval.get("always")
        if never is not None and tool in never.tool_names:
            return False
        if always is not None and tool in always.tool_names:
            return True
        return never is not None

    def allows(self, tool: str) -> bool:
        return self.allowed is None or tool in self.allowed


@dataclass(frozen=True, slots=True)
class Hosted:
    """A server's tool as the model sees it: a function."""

    function: str  # the name the model calls
    server: Server
    tool: McpListedTool


class Plan:
    """One request's hosted tools and the loop's state."""

    def __init__(
        self,
        servers: list[Server],
        names: Names,
        max_calls: int,
        parallel: bool,
        *,
        agents: list[AgentTool] | None = None,
        depth: int = 0,
        max_depth: int = 3,
    ) -> None:
        self.servers = servers
        self.agents = {agent.name: agent for agent in agents or []}
        self.depth = depth
        self.nests = depth < max_depth  # whether sub-agents may run from here
        self.by_label = {server.label: server for server in servers}
        self.names = names
        self.max_calls = max_calls
        self.parallel = parallel
        self.calls = 0  # hosted calls run (or refused) so far in this response
        self.functions: dict[str, Hosted] = {}  # model-facing name -> tool
        self.by_tool: dict[tuple[str, str], str] = {}  # (label, tool) -> model-facing name
        # What `tool_choice` lets the model call in the current turn (None: any tool offered).
        self.choice: set[str] | None = None

    def name_functions(self, client_functions: list[str]) -> None:
        """Give every listed tool its model-facing name: its own where that is unique across servers and the client's
        function tools, else `<label>_<name>` (cut to 64 characters with a hash where longer)."""
        taken = set(client_functions) | set(self.agents)
        counts: dict[str, int] = {}
        for server in self.servers:
            for tool in server.tools or []:
                counts[tool.name] = counts.get(tool.name, 0) + 1
        self.functions.clear()
        self.by_tool.clear()
        for server in self.servers:
            for tool in server.tools or []:
                name = _NAME.sub("_", tool.name)[:64]
                if counts[tool.name] > 1 or name in taken or name in self.functions or name != tool.name:
                    name = _function_name(server.label, tool.name, taken | set(self.functions))
                self.functions[name] = Hosted(name, server, tool)
                self.by_tool[(server.label, tool.name)] = name

    def offered(self) -> list[FunctionTool]:
        """The functions the model is offered this turn: the allowed tools, while calls are left."""
        if self.calls >= self.max_calls:
            return []
        tools = []
        if self.nests:
            for agent in self.agents.values():
                about = agent.description or f"Hands a task to the agent {agent.name} (model {agent.model})."
                tools.append(
                    FunctionTool(type="function", name=agent.name, description=about, parameters=AGENT_PARAMETERS)
                )
        for name, hosted in self.functions.items():
            if not hosted.server.allows(hosted.tool.name):
                continue
            description = hosted.tool.description
            if hosted.server.description:
                description = f"{description or ''} (from {hosted.server.label}: {hosted.server.description})".strip()
            tools.append(
                FunctionTool(
                    type="function", name=name, description=description, parameters=_schema(hosted.tool.input_schema)
                )
            )
        return tools

    def turn_request(self, request: ResponsesRequest, items: list[Any], first: bool) -> ResponsesRequest:
        """The request one upstream call gets: the conversation so far as items every dialect reads, the client's
        function tools plus the hosted ones offered, and `tool_choice` (which forces a call only on the first call:
        after it, the model may answer)."""
        tools: list[Any] = [t for t in request.tools or [] if not isinstance(t, McpTool | AgentTool)]
        tools += self.offered()
        choice = request.tool_choice
        self.choice = _choice_names(choice, first)
        if not first and (choice == "required" or getattr(choice, "type", None) == "function"):
            choice = "auto"
        elif not first and isinstance(choice, AllowedTools) and choice.mode == "required":
            choice = choice.model_copy(update={"mode": "auto"})
        return request.model_copy(
            update={"input": lower(items, self), "tools": tools or None, "tool_choice": choice if tools else None}
        )


def _choice_names(choice: Any, first: bool) -> set[str] | None:
    """The functions `tool_choice` allows a turn to call: `none` none, `allowed_tools` its list, a named function
    that one (in the first turn: the one it forces), anything else any."""
    if choice == "none":
        return set()
    kind = getattr(choice, "type", None)
    if kind == "allowed_tools":
        return set() if choice.mode == "none" else {tool.name for tool in choice.tools}
    if kind == "function" and first:
        return {choice.name}
    return None


def _function_name(label: str, tool: str, taken: set[str]) -> str:
    base = _NAME.sub("_", f"{label}_{tool}")
    if len(base) > 64 or base in taken:
        digest = hashlib.sha256(f"{label}\0{tool}".encode()).hexdigest()[:8]
        base = f"{base[:55]}_{digest}"
    return base


def _schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An MCP input schema as a function's parameters (an object schema, as every upstream wants one)."""
    if schema.get("type") != "object":
        return {"type": "object", "properties": {}}
    return schema


def has_hosted_items(items: list[Any]) -> bool:
    return any(isinstance(item, _HOSTED_ITEMS) for item in items)


def lower(items: list[Any], plan: Plan | None) -> list[Any]:
    """Hosted items as every dialect reads them: an `mcp_call` (or a sub-agent's call) as the `function_call` the model
    made and its `function_call_output` (a text note instead where its tool is not offered in this request: some
    upstreams take tool history only with the tool defined); an approval the client refused, the same with the
    refusal as the output; listings, approval responses and unanswered approval requests left out. The calls of one
    turn come first, then their results (one assistant turn with several calls, as the model made them): hosted
    calls and the client's own `function_call`s made beside them, whose outputs the client sent after them."""
    answers = {item.approval_request_id: item for item in items if isinstance(item, McpApprovalResponseItem)}
    ran = {item.approval_request_id for item in items if isinstance(item, McpCallItem) and item.approval_request_id}
    out: list[Any] = []
    calls: list[Any] = []
    results: list[Any] = []
    ids: set[str] = set()  # the call ids of `calls`
    answered = False  # the client's output for one of `calls` came: the turn is over

    def flush() -> None:
        nonlocal answered
        out.extend(calls)
        out.extend(results)
        calls.clear()
        results.clear()
        ids.clear()
        answered = False

    def add(lowered: tuple[FunctionCallItem, FunctionCallOutputItem] | MessageItem) -> None:
        if isinstance(lowered, MessageItem) or answered:
            flush()
        if isinstance(lowered, MessageItem):
            out.append(lowered)
        else:
            calls.append(lowered[0])
            results.append(lowered[1])

    for item in items:
        if isinstance(item, FunctionCallItem) and calls:  # (a client's call beside hosted ones)
            if answered:
                flush()
            calls.append(item)
            ids.add(item.call_id)
        elif isinstance(item, FunctionCallOutputItem) and item.call_id in ids:
            results.append(item)
            answered = True
        elif isinstance(item, McpCallItem):
            add(_call_pair(item.id or "", item.server_label, item.name, item.arguments, _result(item), plan))
        elif isinstance(item, McpApprovalRequestItem):
            answer = answers.get(item.id or "")
            if answer is not None and not answer.approve and item.id not in ran:
                refusal = "The user did not approve this tool call."
                if answer.reason:
                    refusal += f" Reason: {answer.reason}"
                add(_call_pair(item.id or "", item.server_label, item.name, item.arguments, refusal, plan))
        elif isinstance(item, AgentCallItem):
            if plan is None or item.name not in plan.agents:
                add(MessageItem(role="assistant", content=f"[The agent {item.name} was given {item.arguments} and "
                                f"answered: {_result(item)}]"))  # fmt: skip
            else:
                add(
                    _pair(item.id or _call_id(f"{item.name}{item.arguments}"), item.name, item.arguments, _result(item))
                )
        elif isinstance(item, McpListToolsItem | McpApprovalResponseItem):
            continue
        else:
            flush()
            out.append(item)
    flush()
    return out


def error_text(error: str | dict[str, Any]) -> str:
    """What an `mcp_call`'s error says, in words (for the model)."""
    if isinstance(error, str):
        return error
    if isinstance(error.get("message"), str):
        return str(error["message"])
    content = error.get("content")
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return json.dumps(error)


def _call_pair(
    call_id: str, label: str, tool: str, arguments: str, result: str, plan: Plan | None
) -> tuple[FunctionCallItem, FunctionCallOutputItem] | MessageItem:
    function = plan.by_tool.get((label, tool)) if plan is not None else None
    if function is None:
        note = f"[The tool {tool} of {label} was called with {arguments} and returned: {result}]"
        return MessageItem(role="assistant", content=note)
    return _pair(call_id or _call_id(f"{label}{tool}{arguments}"), function, arguments or "{}", result)


def _pair(call_id: str, name: str, arguments: str, result: str) -> tuple[FunctionCallItem, FunctionCallOutputItem]:
    """A call the model made and its result, as items every dialect reads."""
    return (
        FunctionCallItem(type="function_call", call_id=call_id, name=name, arguments=arguments),
        FunctionCallOutputItem(type="function_call_output", call_id=call_id, output=result),
    )


def _call_id(seed: str) -> str:
    """A call id for an item that came without its own (stable: the same item gives the same id every turn)."""
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def _result(item: McpCallItem | AgentCallItem) -> str:
    """What a hosted call gave, as the model reads it: its output, or its error in words."""
    if item.error is not None:
        return f"error: {error_text(item.error)}"
    return item.output or ""


class Tools:
    """The app's hosted tools: the config's MCP servers, the client pool (one per worker), the URL guard."""

    def __init__(
        self,
        config: McpConfig,
        servers: list[McpServerConfig],
        *,
        agents: AgentsConfig | None = None,
        explicit: bool = True,
    ) -> None:
        self.config = config
        self.agents = agents or AgentsConfig()
        self.run_agent: RunAgent | None = None  # (the app's: a nested response)
        self.explicit = explicit and bool(servers or config.allow_url_prefixes)  # (see `warm_up`)
        self.configured = {server.label: server for server in servers}
        self.names = Names.of(config.item_names)
        self._pool: McpPool | None = None
        self._guard: UrlGuard | None = None

    @property
    def pool(self) -> McpPool:
        if self._pool is None:  # (the `mcp` package is imported on first use only)
            from ferroute.tools.mcp import McpPool

            self._pool = McpPool(call_timeout=self.config.call_timeout, max_output_bytes=self.config.max_output_bytes)
        return self._pool

    @property
    def guard(self) -> UrlGuard:
        if self._guard is None:
            from ferroute.tools.mcp import UrlGuard

            self._guard = UrlGuard(self.config.allow_url_prefixes)
        return self._guard

    def warm_up(self) -> None:
        """Import the MCP client (~1.5 s of CPU) in a thread at the worker's start, where a config file names MCP
        servers or lets requests name theirs, so that the first request does not wait for it. (The embedded
        defaults' demo server does not: most runs of them never use it.)"""
        if not self.explicit:
            return
        import importlib
        import threading

        def load() -> None:
            with contextlib.suppress(Exception):
                importlib.import_module("ferroute.tools.mcp.pool")
                importlib.import_module("mcp.client.streamable_http")

        threading.Thread(target=load, name="ferroute-mcp-import", daemon=True).start()

    def secrets(self) -> list[str]:
        """The configured servers' header values (masked wherever text from outside is passed on)."""
        return [value for server in self.configured.values() for value in server.headers().values()]

    def plan(self, request: ResponsesRequest, items: list[Any], depth: int = 0) -> Plan | None:
        """The request's hosted tools (None: it has none); a 400 naming the tool for a server it may not use. The
        tools a server offered earlier in the conversation (`items` holds the history) are reused, not listed
        again."""
        mcp_tools = request.mcp_tools()
        agents = request.agent_tools()
        if not mcp_tools and not agents:
            return None
        index = {id(tool): i for i, tool in enumerate(request.tools or [])}
        names = {tool.name for tool in request.function_tools()}
        for agent in agents:
            param = f"tools[{index[id(agent)]}]"
            if agent.name in names:
                raise invalid_request(f"two tools are named {agent.name!r}", f"{param}.name")
            names.add(agent.name)
            if any(not isinstance(tool, McpTool | AgentTool) for tool in agent.tools or []):
                raise invalid_request(
                    "a sub-agent's tools are hosted tools only (mcp, ferroute:agent): no client runs its functions",
                    f"{param}.tools",
                )
        servers: list[Server] = []
        for tool in mcp_tools:
            param = f"tools[{index[id(tool)]}]"
            if any(server.label == tool.server_label for server in servers):
                raise invalid_request(f"two mcp tools have server_label {tool.server_label!r}", f"{param}.server_label")
            if tool.connector_id is not None:
                raise invalid_request("connectors are not supported: give server_url", f"{param}.connector_id")
            headers = dict(tool.headers or {})
            if tool.authorization:
                headers["Authorization"] = f"Bearer {tool.authorization}"
            if tool.server_url is None:
                configured = self.configured.get(tool.server_label)
                if configured is None:
                    raise invalid_request(
                        f"no MCP server is configured with the label {tool.server_label!r}: give server_url, or use "
                        f"one of {sorted(self.configured)}",
                        f"{param}.server_label",
                    )
                allowed = tool.allowed() if tool.allowed_tools is not None else configured.allowed_tools
                if tool.allowed_tools is not None and configured.allowed_tools is not None:
                    allowed = [name for name in allowed or [] if name in configured.allowed_tools]
                approval: Any = configured.require_approval
                if tool.require_approval is not None:
                    approval = tool.require_approval
                    if configured.require_approval != "never":  # (a request cannot lift the config's approvals)
                        approval = configured.require_approval
                server = Server(
                    label=tool.server_label,
                    url=configured.url,
                    headers={**configured.headers(), **headers},
                    guard=None,
                    approval=_approval(approval),
                    allowed=allowed,
                    description=tool.server_description or configured.description,
                )
            else:
                from ferroute.tools.mcp import McpError

                if not re.match(r"^https?://", tool.server_url):
                    raise invalid_request("server_url must start with http:// or https://", f"{param}.server_url")
                try:
                    self.guard.check(tool.server_url)
                except McpError as e:
                    raise invalid_request(str(e), f"{param}.server_url", code="server_url_not_allowed") from None
                server = Server(
                    label=tool.server_label,
                    url=tool.server_url,
                    headers=headers,
                    guard=self.guard,
                    approval=_approval(tool.require_approval),
                    allowed=tool.allowed(),
                    description=tool.server_description,
                )
            servers.append(server)
        for item in items:  # the latest listing of each server in the conversation
            if isinstance(item, McpListToolsItem) and item.error is None:
                listed = next((s for s in servers if s.label == item.server_label), None)
                if listed is not None:
                    listed.tools = list(item.tools)
        max_calls = request.max_tool_calls or self.config.max_tool_calls
        parallel = request.parallel_tool_calls is not False
        plan = Plan(
            servers, self.names, max_calls, parallel, agents=agents, depth=depth, max_depth=self.agents.max_depth
        )
        plan.name_functions([tool.name for tool in request.function_tools()])
        return plan

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def _approval(value: Any) -> str | dict[str, ToolNames] | None:
    if isinstance(value, dict):
        return {key: v if isinstance(v, ToolNames) else ToolNames.model_validate(v) for key, v in value.items()}
    return value  # type: ignore[no-any-return]
