"""Pydantic models of the whole Open Responses request; validation errors become spec error bodies.

Unknown fields and wrong types are a 400 `invalid_request_error` whose `param` names the field
(`input[2].content[0].image_url`). Items a client copies from an earlier response's `output` (ids,
statuses, annotations, logprobs) are accepted as input, as the spec's items are bidirectional.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError

from ferroute import _core
from ferroute.errors import RouterError, invalid_request


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- content parts ------------------------------------------------------------------------------


class InputText(_Model):
    type: Literal["input_text"]
    text: str


class InputImage(_Model):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto"] | None = None


class InputFile(_Model):
    type: Literal["input_file"]
    file_id: str | None = None
    file_url: str | None = None
    file_data: str | None = None
    filename: str | None = None


class InputVideo(_Model):
    type: Literal["input_video"]
    video_url: str


class UrlCitation(_Model):
    type: Literal["url_citation"]
    start_index: int = Field(ge=0)
    end_index: int = Field(ge=0)
    url: str
    title: str


class OutputText(_Model):
    type: Literal["output_text"]
    text: str
    annotations: list[UrlCitation] | None = None
    logprobs: list[dict[str, Any]] | None = None


class Refusal(_Model):
    type: Literal["refusal"]
    refusal: str


class ReasoningText(_Model):
    type: Literal["reasoning_text"]
    text: str


class SummaryText(_Model):
    type: Literal["summary_text"]
    text: str


ContentPart = Annotated[
    InputText | InputImage | InputFile | InputVideo | OutputText | Refusal,
    Field(discriminator="type"),
]
ToolOutputPart = Annotated[InputText | InputImage | InputFile | InputVideo, Field(discriminator="type")]

# --- input items --------------------------------------------------------------------------------

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class MessageItem(_Model):
    type: Literal["message"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    phase: Literal["commentary", "final_answer"] | None = None
    status: ItemStatus | None = None


class FunctionCallItem(_Model):
    type: Literal["function_call"]
    id: str | None = None
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=128)
    arguments: str
    status: ItemStatus | None = None


class FunctionCallOutputItem(_Model):
    type: Literal["function_call_output"]
    id: str | None = None
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[ToolOutputPart]
    status: ItemStatus | None = None


class ReasoningItem(_Model):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None
    # The provider whose own blob `encrypted_content` is (an Anthropic signature, an OpenAI blob), where the router
    # knows it (a stored response's item, a blob it sealed): valid only there (`ferroute.routing.reasoning`).
    _origin: str | None = PrivateAttr(default=None)


class ItemReference(_Model):
    type: Literal["item_reference"]
    id: str


class CompactionItem(_Model):
    type: Literal["compaction"]
    id: str | None = None
    encrypted_content: str


class McpListedTool(BaseModel):
    """One tool of an `mcp_list_tools` item."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = {}
    annotations: dict[str, Any] | None = None


class McpListToolsItem(_Model):
    """The tools an MCP server offered (the router lists them once per conversation and server)."""

    type: Literal["mcp_list_tools", "ferroute:mcp_list_tools"]
    id: str | None = None
    server_label: str
    tools: list[McpListedTool] = []
    error: str | None = None
    status: ItemStatus | Literal["failed"] | None = None


class McpCallItem(_Model):
    """A call the router ran on an MCP server, with its result."""

    type: Literal["mcp_call", "ferroute:mcp_call"]
    id: str | None = None
    server_label: str
    name: str
    arguments: str
    output: str | None = None
    # OpenAI's error objects (`{"type": "mcp_tool_execution_error", "content"}`, `mcp_protocol_error` and `http_error`
    # with `code` and `message`); a plain string as older clients send it.
    error: str | dict[str, Any] | None = None
    approval_request_id: str | None = None
    status: ItemStatus | Literal["calling", "failed"] | None = None


class McpApprovalRequestItem(_Model):
    """A call that waits for the client's approval (the response ended with it)."""

    type: Literal["mcp_approval_request", "ferroute:mcp_approval_request"]
    id: str | None = None
    server_label: str
    name: str
    arguments: str
    status: ItemStatus | None = None


class McpApprovalResponseItem(_Model):
    """The client's answer to an `mcp_approval_request`."""

    type: Literal["mcp_approval_response", "ferroute:mcp_approval_response"]
    id: str | None = None
    approval_request_id: str = Field(min_length=1)
    approve: bool
    reason: str | None = None


class AgentCallItem(_Model):
    """A sub-agent's run (`ferroute:agent` tool): the nested response's id and its final text."""

    type: Literal["ferroute:agent_call"]
    id: str | None = None
    name: str
    arguments: str
    response_id: str | None = None
    output: str | None = None
    error: str | dict[str, Any] | None = None
    status: ItemStatus | Literal["failed"] | None = None


_MCP_ITEMS = {"mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response"}


def _item_type(value: Any) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "message")  # the "easy" message form has no type
        kind = kind if isinstance(kind, str) else ""
    else:
        kind = getattr(value, "type", "")
    if kind.startswith("ferroute:") and kind[9:] in _MCP_ITEMS:
        return str(kind[9:])
    return str(kind)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[CompactionItem, Tag("compaction")]
    | Annotated[McpListToolsItem, Tag("mcp_list_tools")]
    | Annotated[McpCallItem, Tag("mcp_call")]
    | Annotated[McpApprovalRequestItem, Tag("mcp_approval_request")]
    | Annotated[McpApprovalResponseItem, Tag("mcp_approval_response")]
    | Annotated[AgentCallItem, Tag("ferroute:agent_call")],
    Discriminator(_item_type),
]

# --- tools and settings -------------------------------------------------------------------------


class FunctionTool(_Model):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class HostedTool(BaseModel):
    """A tool the model does not call through the client: the spec's hosted tools and providers' own
    (`web_search`, `mcp`, Codex's `namespace`, `custom`, `local_shell`, …). Accepted and echoed as sent;
    a provider offers the model only the tools it can run (Chat Completions upstreams: function tools)."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    type: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_.:-]+$")


class ToolNames(_Model):
    tool_names: list[str] = Field(default=[], max_length=512)
    read_only: bool | None = None


class McpTool(_Model):
    """An MCP server the router calls for the model: named here in full (`server_url`), or by `server_label` alone
    for a server of the config. `headers` and `authorization` are credentials: sent to that server only, never
    echoed, stored, logged or sent to the model's upstream."""

    type: Literal["mcp"]
    server_label: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    server_url: str | None = None
    server_description: str | None = None
    headers: dict[str, str] | None = None
    authorization: str | None = None
    allowed_tools: list[str] | ToolNames | None = None
    require_approval: Literal["always", "never"] | dict[Literal["always", "never"], ToolNames] | None = None
    connector_id: str | None = None

    def allowed(self) -> list[str] | None:
        """The tool names the model may call (None: all the server lists)."""
        if self.allowed_tools is None:
            return None
        if isinstance(self.allowed_tools, ToolNames):
            return list(self.allowed_tools.tool_names)
        return list(self.allowed_tools)


class AgentTool(_Model):
    """A sub-agent (the router's own hosted tool): the model sees a function `name` taking `{"task": string}`; a
    call runs a nested response on `model` with `instructions` and its own `tools` and loop, stored like any other,
    whose final text is the call's output."""

    type: Literal["ferroute:agent"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    model: str = Field(min_length=1)
    instructions: str | None = None
    tools: list[Tool] | None = Field(default=None, max_length=512)
    max_tool_calls: int | None = Field(default=None, ge=1)


def _tool_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in ("function", "mcp", "ferroute:agent"):
        return str(kind)
    return "hosted"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[McpTool, Tag("mcp")]
    | Annotated[AgentTool, Tag("ferroute:agent")]
    | Annotated[HostedTool, Tag("hosted")],
    Discriminator(_tool_type),
]
AgentTool.model_rebuild()


class FunctionChoice(_Model):
    type: Literal["function"]
    name: str


class AllowedTools(_Model):
    type: Literal["allowed_tools"]
    tools: list[FunctionChoice] = Field(min_length=1, max_length=128)
    mode: Literal["none", "auto", "required"] | None = None


ToolChoice = Literal["none", "auto", "required"] | Annotated[FunctionChoice | AllowedTools, Field(discriminator="type")]


class TextFormatText(_Model):
    type: Literal["text"]


class TextFormatJsonObject(_Model):
    type: Literal["json_object"]


class TextFormatJsonSchema(_Model):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)
    type: Literal["json_schema"]
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class TextConfig(_Model):
    format: (
        Annotated[TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")] | None
    ) = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(_Model):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["concise", "detailed", "auto"] | None = None


class StreamOptions(_Model):
    include_obfuscation: bool | None = None


class ResponsesRequest(_Model):
    # Set by the router on the request its upstream gets (`app.continuation`): the providers whose blobs its
    # reasoning items carry, and the target (`<model>:<provider>`) that made the previous response.
    _origins: frozenset[str] = PrivateAttr(default=frozenset())
    _previous_target: str | None = PrivateAttr(default=None)

    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    include: list[Literal["reasoning.encrypted_content", "message.output_text.logprobs"]] | None = None
    tools: list[Tool] | None = Field(default=None, max_length=512)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_output_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    background: bool | None = None
    store: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    service_tier: Literal["auto", "default", "flex", "priority"] | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = Field(default=None, max_length=64)
    user: str | None = None
    # Sent by Codex (turn and session ids); the router neither forwards nor echoes it.
    client_metadata: dict[str, str] | None = Field(default=None, max_length=64)

    def function_tools(self) -> list[FunctionTool]:
        """The function tools, in order (hosted tools are the provider's business)."""
        return [tool for tool in self.tools or [] if isinstance(tool, FunctionTool)]

    def mcp_tools(self) -> list[McpTool]:
        """The MCP servers the router runs tools of for this request."""
        return [tool for tool in self.tools or [] if isinstance(tool, McpTool)]

    def agent_tools(self) -> list[AgentTool]:
        """The sub-agents the router runs for this request."""
        return [tool for tool in self.tools or [] if isinstance(tool, AgentTool)]

    def items(self) -> list[Any]:
        """The input as items (a string is one user message)."""
        if self.input is None:
            return []
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)


def _param(loc: tuple[int | str, ...], data: Any) -> str:
    """pydantic's location → the spec's `param` spelling (`input[0].content[1].image_url`).

    Union members appear in pydantic's locations by tag; a part is a field only where the data has it
    (or, for a missing field, where it is the last part)."""
    out = ""
    current = data
    for position, part in enumerate(loc):
        if isinstance(part, int) and isinstance(current, list) and part < len(current):
            out += f"[{part}]"
            current = current[part]
        elif isinstance(part, str) and isinstance(current, dict) and (part in current or position == len(loc) - 1):
            out += f".{part}" if out else part
            current = current.get(part)
    return out


def _describe(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown parameter"
    if kind == "missing":
        return "missing required parameter"
    if kind == "union_tag_invalid":
        return f"unknown type {error['ctx']['tag']!r}; expected one of {error['ctx']['expected_tags']}"
    if kind == "union_tag_not_found":
        return "missing required parameter `type`"
    return str(error["msg"])


def parse_request(body: bytes, *, max_depth: int, max_input_items: int) -> ResponsesRequest:
    """Validate a request body; raises `RouterError` (400) naming the offending `param`."""
    return parse_request_and_settings(body, max_depth=max_depth, max_input_items=max_input_items)[0]


def parse_request_and_settings(
    body: bytes, *, max_depth: int, max_input_items: int
) -> tuple[ResponsesRequest, dict[str, Any]]:
    """Validate a request body (as `parse_request`); also returns the fields a response echoes, from the values just
    validated: all but `input` (never echoed; a translator made from them reads no input again), and an `mcp`
    tool without its credentials (`headers`, `authorization`)."""
    data = parse_json_object(body, max_depth=max_depth)
    return validate_request(data, max_input_items=max_input_items)


def parse_json_object(body: bytes, *, max_depth: int, what: str = "the request body") -> dict[str, Any]:
    """A JSON object (a request body, a WebSocket message), at most `max_depth` deep; a 400 (`invalid_json`,
    `json_too_deep`) otherwise."""
    stream = _core.JsonStream(max_depth=max_depth)
    try:
        stream.feed(body)
    except _core.JSONError as e:
        if "max_depth" in str(e):
            raise invalid_request(
                f"the request JSON is nested deeper than {max_depth} levels", code="json_too_deep"
            ) from None
        raise invalid_request(f"{what} is not valid JSON: {e}", code="invalid_json") from None
    if not stream.complete:
        raise invalid_request(f"{what} is not valid JSON: it ends before the value does", code="invalid_json")
    data = stream.value()
    if not isinstance(data, dict):
        raise invalid_request(f"{what} must be a JSON object", code="invalid_json")
    return data


def validate_request(data: dict[str, Any], *, max_input_items: int) -> tuple[ResponsesRequest, dict[str, Any]]:
    """A request's parsed JSON object validated (a 400 naming the first problem), and the fields its response
    echoes (see `parse_request_and_settings`)."""
    items = data.get("input")
    if isinstance(items, list) and len(items) > max_input_items:
        raise invalid_request(f"input has {len(items)} items; the limit is {max_input_items}", param="input")
    try:
        request = ResponsesRequest.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        # The most specific error: the one with the longest location (unions report one per member).
        first = max(errors, key=lambda err: len(err["loc"]))
        param = _param(tuple(first["loc"]), data) or None
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            param = f"{param}.type" if param else "type"
        code = _CODES.get(first["type"], "invalid_value")
        raise RouterError(400, f"{param or 'request'}: {_describe(first)}", param=param, code=code) from None
    return request, echo_settings(data)


def echo_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A validated request's fields as the response echoes them: all but `input`, and MCP tools (also a sub-agent's)
    without their credentials."""
    settings = {key: value for key, value in data.items() if key != "input"}
    if isinstance(data.get("tools"), list):
        settings["tools"] = [_echoed_tool(tool) for tool in data["tools"]]
    return settings


def _echoed_tool(tool: Any) -> Any:
    if not isinstance(tool, dict):
        return tool
    if tool.get("type") == "mcp":
        return {k: v for k, v in tool.items() if k not in ("headers", "authorization")}
    if tool.get("type") == "ferroute:agent" and isinstance(tool.get("tools"), list):
        return {**tool, "tools": [_echoed_tool(inner) for inner in tool["tools"]]}
    return tool


_CODES = {
    "extra_forbidden": "unknown_parameter",
    "missing": "missing_required_parameter",
    "union_tag_invalid": "invalid_type",
    "union_tag_not_found": "missing_required_parameter",
}
