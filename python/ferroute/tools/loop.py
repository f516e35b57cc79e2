"""The loop of one response with hosted tools: list, sample, run the calls, sample again.

It runs on the exchange's one translator: each upstream call is a turn (`next_turn` / `end_turn`), the router's
own items go in between (`open_item` / `item_event` / `done_item`), and the hosted calls the model makes are held
by the translator (`hold`). A call to an MCP tool that needs no approval is *live*: its `mcp_call` item opens and
its arguments stream as the model makes them; once they are complete the call starts at once (while the model may
still be making others), and its item waits, the upstream's later frames behind it, until the call has run and
`close_live` closes it (the turn's `_Live` closer, in the order the calls were made). Other held calls (a
sub-agent's, one that needs approval) are written here as their items once the turn has ended. Frames go out
through one outbox, in the order they were made, whichever task made them. The loop ends when
a turn makes no hosted call, a call waits for approval, the model calls a client function, or a turn fails; the
response then ends as its last turn did.

While a tool runs the upstream timeouts do not count (`Exchange.tooling`); keep-alives go on. The exchange's
cancellation (client gone, timeout, background cancel) cancels the running calls with it.

A route's or a retried request's upstream calls fail over as the plain path does (`Pump._attempts`): until a call's
first content (an item of the upstream's) it may be retried or moved to the next target, whose translator takes
over the response written so far (`adopt`: the items that went out, the sequence), in its own dialect. The first
call by the route's order; each later one at the target the loop is on while its circuit lets it (its reasoning
blobs open there), the others after it in the route's order. A call that moves to another provider takes the loop's
reasoning items without the blobs the one before made (`ferroute.routing.reasoning`). A route with `hedge_after`
races each call as the plain path does (`Pump._race`): the hedge works on a copy of the response as the call found it
(`adopt(copy=True)`), and whichever leg gets content first goes on with the response (`_race`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

import httpx

from ferroute import _core
from ferroute.app.exchange import Failure, Leg, carry_usage, finish_body, read_until, whole_result
from ferroute.errors import (
    RouterError,
    invalid_request,
    malformed_answer,
    upstream_error_from,
    upstream_failed,
)
from ferroute.models import (
    AgentTool,
    McpApprovalRequestItem,
    McpApprovalResponseItem,
    McpCallItem,
    McpListedTool,
    ResponsesRequest,
)
from ferroute.routing.reasoning import for_items, for_provider, made_by
from ferroute.routing.routes import Failover
from ferroute.store.items import to_models
from ferroute.telemetry import start_attempt
from ferroute.tools.hosted import Hosted, Plan, Server

if TYPE_CHECKING:
    from ferroute.app.exchange import Exchange, Pump
    from ferroute.providers import Provider, Translator, Upstream
    from ferroute.telemetry import ToolSpan
    from ferroute.tools.mcp import CallResult

error_log = logging.getLogger("ferroute.error")


class Loop:
    """One exchange's loop (see the module)."""

    def __init__(self, pump: Pump, ex: Exchange, plan: Plan) -> None:
        assert ex.tools_box is not None
        self.pump = pump
        self.ex = ex
        self.plan = plan
        self.box = ex.tools_box
        self.names = plan.names
        self.translator = ex.translator
        self.items: list[Any] = list(ex.request.items())  # the conversation so far (models)
        self.given = len(self.items)  # how many of them the request gave (the rest: the loop's)
        self.secrets = ex.secrets
        self.failover: Failover | None = ex.failover  # until the current turn's first content (see the module)
        self.origin: Failover | None = ex.failover  # the request's: its route and settings make each later turn's
        self.before = 0  # the items of the response when the current turn began
        self.live = _Live()  # the current turn's live calls
        self.outbox: list[bytes] = []  # frames made, not yet sent (see `_emit`)
        self.sender: asyncio.Future[None] | None = None

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            await self._stop_live()

    async def _loop(self) -> None:
        translator = self.translator
        approved = self._approved()  # (checked before anything is sent: a bad approval is a 400)
        try:
            await self._list_tools()
        except _Ended:
            return
        await self._run(approved)
        translator.hold(
            [*self.plan.functions, *self.plan.agents],
            live=self._live_items(),
            prefix="mcp",
            events=self.names.events + "mcp_call",
        )
        first = True
        while True:
            if not await self._sample(first):
                return  # the response ended (failed) or the work is to answer an error
            first = False
            translator = self.translator  # (another target's, after a failover)
            result = translator.turn_result()
            assert result is not None
            if result["status"] != "completed":
                break
            await self._finish_live()  # (its items closed, they are among the turn's items, in their places)
            self.items += made_by(to_models(json.loads(translator.turn_items())), self.ex.provider.name)
            calls = result["function_calls"]
            if not any(call["held"] for call in calls):
                break
            waiting = await self._run_calls([call for call in calls if call["held"] and call["id"] is None])
            if waiting or any(not call["held"] for call in calls):
                break  # an approval is asked for, or the client has a function to run
        await self._stop_live()
        await self._end(translator.finish())

    def _live_items(self) -> dict[str, dict[str, Any]]:
        """The `mcp_call` item each MCP tool's call opens at once: the tools that need no approval (a call that
        needs it becomes an `mcp_approval_request` instead, known only once the model has made it)."""
        call = self.names.call
        return {
            name: {
                "type": call,
                "server_label": hosted.server.label,
                "name": hosted.tool.name,
                "arguments": "",
                "status": "in_progress",
            }
            for name, hosted in self.plan.functions.items()
            if not hosted.server.needs_approval(hosted.tool.name)
        }

    # --- upstream turns ---------------------------------------------------------------------------------------

    async def _sample(self, first: bool) -> bool:
        """One upstream turn; on a failover's first, the attempts until one gets its first content out (or none is
        left: the last failure answers, as without failover). False if the response ended or failed before the
        turn's end."""
        ex = self.ex
        if not first and self.failover is None and self.origin is not None:
            self.failover = self._turn_failover()
        while True:
            request = self.plan.turn_request(ex.request, self.items, first)
            self.translator.next_turn()
            self.live = _Live()
            failover = self.failover
            if failover is None:
                return await self._turn(request) is True
            target, route = failover.target, failover.route
            ex.attempt_began = time.monotonic()  # (its time to content is the target's, the listing's not in it)
            if route is not None and route.hedge_after is not None:
                raced = await self._race(request, failover, first)
                if not isinstance(raced, Failure):
                    return raced
                if not await self._fail_over(failover, raced):
                    return False
                continue
            probe = target.breaker.enter(ex.attempt_began) if route is not None else False
            target.enter()
            verdict = False
            try:
                try:
                    ended = await self._turn(request)
                except asyncio.CancelledError:
                    timeout = self.pump._timed_out(ex, self.before)  # (the clock's first-event timeout, or not)
                    if timeout is None:
                        raise
                    ended = Failure(timeout, timeout=True)
                verdict = True
            finally:
                target.leave()
                if not verdict and route is not None:
                    target.breaker.abandon(probe)
            if not isinstance(ended, Failure):
                if ended and self.failover is not None:  # (a turn that ended with no item of its own answered too)
                    self._answered(failover)
                self.failover = None
                return ended
            if route is not None:
                target.breaker.failed(time.monotonic(), ended.error.code or "error")
            if not await self._fail_over(failover, ended):
                return False

    async def _fail_over(self, failover: Failover, failure: Failure) -> bool:
        """After a turn failed before its content: go on at the next attempt's target (True), or answer with the
        failure when there is none (False), as the plain path does (`Pump._follow`)."""
        ex = self.ex
        provider = ex.provider
        if not await self.pump._follow(ex, failover, failure):
            self.failover = None
            return False
        self._moved(provider)
        return True

    def _turn_failover(self) -> Failover | None:
        """A later turn's way through the targets: the one the loop is on first while its circuit lets it, the route's
        others after it in the route's order (a plain `<model>:<provider>` with retries: its one target). None when
        every circuit is open: the turn goes where the loop is, with no failover (as before it had any)."""
        origin = self.origin
        assert origin is not None
        ex = self.ex
        now = time.monotonic()
        current = f"{ex.upstream_model}:{ex.provider.name}"
        route = origin.route
        if route is None:
            targets = [origin.target]
        else:
            try:
                targets = route.order(now)
            except RouterError:
                return None
            for index, target in enumerate(targets):
                if target.name == current:
                    targets.insert(0, targets.pop(index))
                    break
        failover = Failover(targets, origin.settings, route)
        target = failover.target
        target.budget.request(now)
        if target.name != current:  # (the loop's target is open: the turn starts at the next one)
            provider = ex.provider
            ex.provider, ex.upstream_model = target.provider, target.upstream_model
            if ex.context is not None:
                ex.request = for_provider(ex.context, ex.provider.name)
            ex.log["provider"] = ex.provider.name
            ex.log["target"] = target.name
            self._moved(provider)
        return failover

    def _moved(self, previous: Provider) -> None:
        """The exchange is on another target now: the conversation for its provider (the request's part made again
        from the exchange's; the loop's own reasoning items without another provider's blobs), and a translator of
        its dialect that goes on with the response."""
        ex = self.ex
        own = self.items[self.given :]
        if ex.provider.name != previous.name:
            own = for_items(own, ex.provider.name)
        self.items = [*ex.request.items(), *own]
        self.given = len(self.items) - len(own)
        assert ex.remake is not None
        translator = ex.remake(ex.provider, ex.started)
        translator.adopt(self.translator)
        ex.translator = self.translator = translator

    # --- hedging: the route's next target raced beside a turn slow to its content --------------------------------

    async def _race(self, request: Any, failover: Failover, first: bool) -> bool | Failure:
        """`_turn` for a route with `hedge_after`, as the plain path's `Pump._race`: the turn's upstream is read
        until its first content, sending nothing; if none has come after `hedge_after` seconds, the route's next
        target starts beside it, on a copy of the response as the turn found it (`adopt(copy=True)`) and with the
        conversation as that target can take it (`_conversation`). The first leg to get content (or to end its
        turn) goes on with the response; the other is cancelled at once, its tokens counted in the response. A leg
        that fails leaves the other running; when every leg failed, the exchange is on the last to fail and its
        failure is returned (to go on as one attempt's would)."""
        ex, pump = self.ex, self.pump
        route = failover.route
        assert route is not None and route.hedge_after is not None
        self.before = self.translator.output_items
        base = self.translator.usage  # (the earlier turns')
        lead = pump._leg(ex, failover.target, ex.provider, ex.upstream_model, request, self.translator, failover.tries)
        conversations = {lead: (ex.request, self.items, self.given)}

        # (Each leg's own tokens: what it added to the earlier turns', which both took over.)
        carry = functools.partial(carry_usage, base=base or (0, 0, 0, 0))
        hedge = functools.partial(self._hedge, failover, first, conversations)
        winner, chosen = await pump.race(ex, route, lead, self._until_content, hedge, carry, self.before)
        self._take(chosen, conversations[chosen])
        if winner is None:
            assert chosen.failure is not None
            return chosen.failure
        self.failover = None
        return await self._go_on(winner)

    def _hedge(
        self, failover: Failover, first: bool, conversations: dict[Leg, tuple[ResponsesRequest, list[Any], int]]
    ) -> Leg | None:
        """The hedge: the route's next target's leg (`Failover.hedge`), or None when there is none (or no budget)."""
        ex = self.ex
        if self.translator.output_items > self.before or self.translator.turn_result() is not None:
            return None  # (the lead has its content: it is about to win)
        now = time.monotonic()
        target = failover.hedge(now)
        if target is None:
            return None
        provider = target.provider
        conversation = self._conversation(provider)
        request = self.plan.turn_request(conversation[0], conversation[1], first)
        assert ex.remake is not None
        client_view = ex.client_view
        translator = ex.remake(provider, ex.started)  # (it sets `client_view` for its provider: kept by the leg)
        translator.adopt(self.translator, copy=True)
        translator.next_turn()
        leg = self.pump._leg(ex, target, provider, target.upstream_model, request, translator, 0, hedge=True)
        ex.client_view = client_view
        conversations[leg] = conversation
        ex.attempt_began = now  # (the first-event timeout runs from the newest leg's start)
        ex.log["hedged"] = target.name
        return leg

    def _conversation(self, provider: Provider) -> tuple[ResponsesRequest, list[Any], int]:
        """The conversation as `provider` takes it (the request's part made for it; the loop's own reasoning items
        without another provider's blobs): the request, the items, how many of them are the request's."""
        ex = self.ex
        own = self.items[self.given :]
        if provider.name == ex.provider.name:
            return ex.request, self.items, self.given
        own = for_items(own, provider.name)
        request = for_provider(ex.context, provider.name) if ex.context is not None else ex.request
        items = [*request.items(), *own]
        return request, items, len(items) - len(own)

    def _take(self, leg: Leg, conversation: tuple[ResponsesRequest, list[Any], int]) -> None:
        """The exchange goes on with `leg` (its target and translator, as the plain path's `Pump._adopt`) and the
        conversation as its provider takes it (the exchange's request is that, not the leg's turn request)."""
        ex = self.ex
        self.pump._adopt(ex, leg)
        ex.request, self.items, self.given = conversation
        if leg.dropped:
            self._drop_blobs()
        self.translator = leg.translator

    async def _until_content(self, leg: Leg) -> Failure | None:
        """A leg's upstream opened and read until the turn's first content or its end, what its translator wrote
        kept in `leg.out`: None when content came (or the turn ended without failing), else the `Failure`."""
        translator = leg.translator
        try:
            leg.upstream, leg.dropped = await self._open(
                leg.provider, leg.request, leg.upstream_model, None if leg.attempt is None else leg.attempt.headers
            )
        except RouterError as e:
            return Failure(e)
        before = self.before
        failure = await read_until(
            self.ex, leg, lambda t: t.output_items > before or t.turn_result() is not None, _end_turn
        )
        if failure is not None:
            return failure
        if translator.output_items > self.before:
            return None
        return _turn_failed(translator)

    async def _go_on(self, winner: Leg) -> bool:
        """The winning leg's turn goes on as `_turn` reads one after its content: what it wrote goes out, then the
        rest of its upstream's answer. False if the response ended or failed before the turn's end."""
        ex, translator = self.ex, self.translator
        upstream = winner.upstream
        assert upstream is not None
        ex.upstream = upstream
        try:
            out = winner.out
            if upstream.chunks is not None:
                if translator.turn_result() is None:
                    await self._pass_on(out)
                    if not await self._feed(upstream.chunks):
                        return False
                    out = b""
                else:
                    await finish_body(upstream.chunks)
                out += translator.end_turn()  # (nothing when the leg read its stream's end)
            await self._pass_on(out)
        finally:
            ex.upstream = None
            winner.target.leave()
            if winner.attempt is not None:
                winner.attempt.end(None)
            with contextlib.suppress(Exception):
                await upstream.aclose()
        return True

    async def _turn(self, request: Any) -> bool | Failure:
        """One upstream call, its frames sent (streaming); False if the response ended or failed before its end. While
        `failover` is set, a failure before the upstream's first content that another attempt may meet instead is
        returned, nothing of it sent."""
        ex, pump, translator, failover = self.ex, self.pump, self.translator, self.failover
        # (None when tracing is off)
        attempt = start_attempt(ex) if failover is None else start_attempt(ex, failover.tries, failover.target.name)
        self.before = translator.output_items
        failure: Failure | None = None
        try:
            upstream, dropped = await self._open(
                ex.provider, request, ex.upstream_model, None if attempt is None else attempt.headers
            )
            if dropped:
                self._drop_blobs()
        except RouterError as e:
            if attempt is not None:
                attempt.end(e)
            if failover is not None and e.retryable:
                return Failure(e)
            if ex.started:  # (else the pump counts it when it answers `ex.error`)
                pump.metrics.upstream_error(ex.provider.name, e.code or "error")
                await ex.fail(e)
            else:
                ex.error = e
            return False
        ex.upstream = upstream
        try:
            if upstream.body is not None:
                try:
                    out = translator.feed_whole(upstream.body)
                except _core.UpstreamError:
                    error = malformed_answer(ex.provider.name)
                    if failover is not None:
                        failure = Failure(error)
                        return failure
                    if ex.stream:
                        await ex.fail(error)
                    else:
                        ex.error = error
                    return False
            else:
                assert upstream.chunks is not None
                fed = await self._feed(upstream.chunks)
                if fed is not True:
                    failure = fed or None
                    return fed
                out = translator.end_turn()
            failure = await self._pass_on(out)
            if failure is not None:
                return failure
        finally:
            ex.upstream = None
            if attempt is not None:
                attempt.end(None if failure is None else failure.error)
            with contextlib.suppress(Exception):
                await upstream.aclose()
        return True

    async def _open(
        self, provider: Provider, request: Any, upstream_model: str, headers: list[tuple[bytes, bytes]] | None
    ) -> tuple[Upstream, bool]:
        """A turn's upstream call, and whether it went without reasoning blobs: one whose blob the upstream rejects
        (it came from another key of the same provider, one rotated since) goes once more without any (the
        reasoning's text stays), as the plain path's (`Pump.open`)."""
        upstream, sent = await self.pump._open(self.ex, provider, request, upstream_model, headers)
        return upstream, sent is not request

    def _drop_blobs(self) -> None:
        """The upstream refused a blob of the conversation: the later calls go without any of the blobs so far (the
        ones the later calls make are its own)."""
        ex = self.ex
        self.items = for_items(self.items, ex.provider.name, everything=True)
        ex.request = for_provider(ex.request, ex.provider.name, everything=True)

    async def _feed(self, chunks: AsyncIterator[bytes]) -> bool | Failure:
        """The turn's upstream stream, its frames sent as they come: True at its end, False if it timed out, or
        (before the first content of a failover's turn) the failure another attempt may meet instead."""
        ex, translator = self.ex, self.translator
        feed = translator.feed
        try:
            async for chunk in chunks:
                ex.reads += 1
                failure = await self._pass_on(feed(chunk))
                if failure is not None:
                    return failure
                if translator.turn_result() is not None:  # the upstream said it is done: the rest is its body's end
                    await finish_body(chunks)
                    break
        except httpx.HTTPError as e:
            if self.failover is not None:  # (before the content: as the plain path's attempts, `Pump._attempt`)
                return Failure(upstream_error_from(ex.provider.name, e))
            if isinstance(e, httpx.TimeoutException):
                ex.timeout = "first_event" if translator.upstream_events == 0 else "idle"
                return False
            self.pump.metrics.upstream_error(ex.provider.name, "connection_lost")
        return True

    async def _pass_on(self, out: bytes) -> Failure | None:
        """A turn's frames to the client and its live calls started, unless (a failover's turn before its content)
        the turn failed without content: then the failure, nothing sent."""
        if self.failover is not None:
            failure = self._content_or_failure()
            if failure is not None:
                return failure
        await self._emit(out)
        self._take_live()
        return None

    def _answered(self, failover: Failover) -> None:
        """The turn's target answered: the failover is over, the target is healthy, its time to content known."""
        self.failover = None
        if failover.route is not None:
            failover.target.breaker.succeeded()
            failover.target.observe(time.monotonic() - self.ex.attempt_began)

    def _content_or_failure(self) -> Failure | None:
        """While a failover's turn has sent no content: its content has come (the target answered: the failover is
        over), or the turn failed without any (an in-band error first: the failure), or neither yet (None)."""
        translator, failover = self.translator, self.failover
        assert failover is not None
        if translator.output_items > self.before:
            self._answered(failover)
            return None
        return _turn_failed(translator)

    async def _emit(self, out: bytes) -> None:
        """Frames to the client (a stream), as the pump sends them. They join the outbox as they are made, and one
        sender at a time sends what it holds, so frames made by the turn and by the live calls' closer go out in the
        order they were made (their sequence). The send goes on if the caller is cancelled (a frame is never cut)."""
        if not self.ex.stream:
            return
        if out:
            self.outbox.append(out)
        if self.sender is None or self.sender.done():
            if not self.outbox:
                return
            self.sender = asyncio.ensure_future(self._send())
        await asyncio.shield(self.sender)

    async def _send(self) -> None:
        outbox = self.outbox
        while outbox:
            out = outbox[0] if len(outbox) == 1 else b"".join(outbox)
            outbox.clear()
            await self.pump._relay(self.ex, out)

    async def _end(self, out: bytes) -> None:
        ex = self.ex
        if ex.stream:
            await self._emit(b"")  # (what the outbox holds goes first)
            await ex.end(out)
        else:
            ex.result = whole_result(self.translator.response_json(), self.translator)  # (a failed one: a 502)

    # --- listing ------------------------------------------------------------------------------------------------

    async def _list_tools(self) -> None:
        """An `mcp_list_tools` item for each server whose tools the conversation does not hold yet (listed
        concurrently, written in order). A server that cannot be listed fails the response."""
        todo = [server for server in self.plan.servers if server.tools is None]
        if not todo:
            return
        pool = self.box.pool
        tasks = [
            asyncio.ensure_future(pool.list_tools(server.url, server.headers, guard=server.guard)) for server in todo
        ]
        names, translator = self.names, self.translator
        try:
            with self._tooling():
                for server, task in zip(todo, tasks, strict=True):
                    _, out = translator.open_item(
                        {"type": names.list_tools, "server_label": server.label, "tools": [], "status": "in_progress"},
                        prefix="mcpl",
                    )
                    await self._emit(out + translator.item_event(names.events + "mcp_list_tools.in_progress"))
                    try:
                        tools = await task
                    except Exception as e:
                        message = self._mask(str(e) or type(e).__name__)
                        out = translator.item_event(names.events + "mcp_list_tools.failed")
                        failed = {"type": names.list_tools, "server_label": server.label, "tools": [], "error": message}
                        out += translator.done_item({**failed, "status": "failed"})
                        await self._emit(out)
                        error = RouterError(
                            424,
                            f"the tools of the MCP server {server.label!r} could not be listed: {message}",
                            type="server_error",
                            code="mcp_list_tools_failed",
                        )
                        await self._fail(error)
                        raise _Ended from None
                    listed = [
                        McpListedTool(
                            name=t.name,
                            description=t.description,
                            input_schema=t.input_schema,
                            annotations=t.annotations,
                        )
                        for t in tools
                    ]
                    server.tools = listed
                    item = {
                        "type": names.list_tools,
                        "server_label": server.label,
                        "tools": [t.model_dump(mode="json", exclude_none=True) for t in listed],
                        "status": "completed",
                    }
                    out = translator.item_event(names.events + "mcp_list_tools.completed")
                    out += translator.done_item(item)
                    await self._emit(out)
                    self.items += to_models([item])
        finally:
            for task in tasks:
                task.cancel()
        self.plan.name_functions([tool.name for tool in self.ex.request.function_tools()])

    async def _fail(self, error: RouterError) -> None:
        ex = self.ex
        if ex.stream:
            await ex.fail(error)
        else:
            ex.error = error

    # --- calls --------------------------------------------------------------------------------------------------

    def _approved(self) -> list[_Call]:
        """Calls the client approved since the last response (`mcp_approval_response` with `approve`), to run
        before the model is sampled again; a 400 for an answer to no request of the conversation, or to a server
        this request does not name. (A refused one reaches the model as the call's result: `lower`.)"""
        requests = {item.id: item for item in self.items if isinstance(item, McpApprovalRequestItem) and item.id}
        ran = {item.approval_request_id for item in self.items if isinstance(item, McpCallItem)}
        calls = []
        for item in self.items:
            if not isinstance(item, McpApprovalResponseItem):
                continue
            request = requests.get(item.approval_request_id)
            if request is None:
                raise invalid_request(
                    f"mcp_approval_response answers {item.approval_request_id!r}, which is no mcp_approval_request "
                    "of this conversation",
                    "input",
                )
            if not item.approve or item.approval_request_id in ran:
                continue
            server = self.plan.by_label.get(request.server_label)
            if server is None:
                raise invalid_request(
                    f"the approved call {request.id!r} is to the MCP server {request.server_label!r}, which is not "
                    "among this request's tools (send its mcp tool again)",
                    "tools",
                )
            ran.add(item.approval_request_id)
            self.plan.calls += 1
            calls.append(
                _Call(server, request.name, request.arguments, approval_request_id=request.id, call_id=request.id)
            )
        return calls

    async def _run_calls(self, held: list[dict[str, Any]]) -> bool:
        """Run (or refuse, or hold for approval) the held calls of a turn that were not live; True if one waits for
        approval."""
        calls: list[_Call] = []
        approvals: list[_Call] = []
        for call in held:
            entry, approval = self._entry(call)
            (approvals if approval else calls).append(entry)
        await self._run(calls)
        for entry in approvals:
            assert entry.server is not None
            item = {
                "type": self.names.approval_request,
                "server_label": entry.server.label,
                "name": entry.tool,
                "arguments": entry.arguments,
            }
            _, out = self.translator.open_item({**item, "status": "in_progress"}, prefix="mcpr")
            await self._emit(out + self.translator.done_item({**item, "status": "completed"}))
        return bool(approvals)

    async def _run(self, calls: list[_Call]) -> None:
        """Each call as its item (`mcp_call`, `ferroute:agent_call`): started together (`parallel_tool_calls`),
        written in order (a sub-agent's progress, made while another call's item is open, is written once its own
        item opens)."""
        if not calls:
            return
        if self.plan.parallel:
            for call in calls:
                self._start(call)
        try:
            with self._tooling():
                for call in calls:
                    if call.task is None:
                        self._start(call)
                    if call.agent is not None:
                        await self._write_agent_call(call)
                    else:
                        await self._write_mcp_call(call)
        finally:
            for call in calls:
                if call.task is not None:
                    call.task.cancel()
                if call.span is not None:  # (cancelled before its item was written)
                    call.span.end(error="cancelled")

    def _entry(self, call: dict[str, Any]) -> tuple[_Call, bool]:
        """A held call the model made (as `turn_calls` has it), checked against the request's rules and counted
        against `max_tool_calls`: to run, refused (its item says why), or (True) waiting for approval."""
        plan = self.plan
        name = call["name"]
        agent = plan.agents.get(name)
        if agent is not None:
            entry = _Call(None, name, call["arguments"] or "{}", agent=agent, call_id=call["call_id"])
            if not plan.nests:
                entry.refuse(_NOT_ALLOWED, f"sub-agents nest at most {self.box.agents.max_depth} deep")
            elif plan.choice is not None and name not in plan.choice:
                entry.refuse(_NOT_ALLOWED, f"tool_choice does not allow the agent {name!r}")
            elif plan.calls >= plan.max_calls:
                entry.refuse(_LIMIT, f"max_tool_calls ({plan.max_calls}) reached: the agent was not run")
            else:
                plan.calls += 1
            return entry, False
        hosted: Hosted | None = plan.functions.get(name)
        assert hosted is not None  # (only hosted names are held)
        server, tool = hosted.server, hosted.tool.name
        entry = _Call(server, tool, call["arguments"] or "{}", call_id=call["call_id"])
        if call["id"] is not None:
            entry.streamed = call["arguments"]
        if not server.allows(tool):
            entry.refuse(_NOT_ALLOWED, f"the tool {tool!r} of {server.label!r} is not allowed in this request")
        elif plan.choice is not None and name not in plan.choice:
            entry.refuse(_NOT_ALLOWED, f"tool_choice does not allow the tool {tool!r} of {server.label!r}")
        elif plan.calls >= plan.max_calls:
            entry.refuse(_LIMIT, f"max_tool_calls ({plan.max_calls}) reached: the tool was not run")
        elif server.needs_approval(tool) and plan.depth > 0:
            # (Nobody could answer the request: a sub-agent's response is not the client's.)
            entry.refuse(
                _NOT_ALLOWED,
                f"the tool {tool!r} of {server.label!r} needs approval, which a sub-agent cannot ask for "
                "(give the sub-agent's mcp tool require_approval: never)",
            )
        elif server.needs_approval(tool):
            return entry, True
        else:
            plan.calls += 1
        return entry, False

    # --- live calls ---------------------------------------------------------------------------------------------

    def _take_live(self) -> None:
        """Start the live calls whose arguments have become complete (their items wait in the translator) and hand
        them to the turn's closer. Cheap when nothing changed: one count."""
        live = self.live
        complete = live.closed + self.translator.waiting_items()
        if complete <= len(live.calls):
            return
        made = [call for call in self.translator.turn_calls() if call["held"] and call["id"] is not None]
        for call in made[len(live.calls) : complete]:
            entry, _ = self._entry(call)  # (a live tool needs no approval)
            live.calls.append(entry)
            if self.plan.parallel:
                self._start(entry)
            live.queue.put_nowait(entry)
        if live.closer is None:
            live.closer = asyncio.ensure_future(self._close_live(live))

    async def _close_live(self, live: _Live) -> None:
        """Each live call's end, in the order the model made the calls (a call not started yet starts now)."""
        while (call := await live.queue.get()) is not None:
            if call.task is None:
                self._start(call)
            await self._write_mcp_call(call)

    async def _finish_live(self) -> None:
        """Wait for the turn's live calls to run and their items to close (the upstream's timeouts stop)."""
        live = self.live
        if live.closer is None:
            return
        live.queue.put_nowait(None)
        with self._tooling():
            await live.closer

    async def _stop_live(self) -> None:
        """Cancel the turn's live calls that have not ended (their items end `incomplete` with the response) and
        send what the outbox holds."""
        live = self.live
        if live.closer is not None:
            if not live.closer.done():
                live.closer.cancel()
            with contextlib.suppress(BaseException):  # (its failure, if any, went out with the turn's: retrieved)
                await live.closer
        for call in live.calls:
            if call.task is not None:
                call.task.cancel()
            if call.span is not None:
                call.span.end(error="cancelled")
        if self.sender is not None and not self.sender.done():
            with contextlib.suppress(Exception):
                await self.sender
        if self.outbox:
            with contextlib.suppress(Exception):
                await self._emit(b"")

    def _start(self, call: _Call) -> None:
        if call.refused is not None:
            return
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            call.refuse(_INVALID_PARAMS, "the arguments are not a JSON object")
            return
        if call.agent is not None:
            task = arguments.get("task")
            if not isinstance(task, str) or not task.strip():
                call.refuse(_INVALID_PARAMS, 'a sub-agent takes {"task": string}')
                return
            self._trace(call)
            call.task = asyncio.ensure_future(self._nested(call, call.agent, task))
            return
        server = call.server
        assert server is not None
        self._trace(call)
        call.task = asyncio.ensure_future(
            self.box.pool.call(server.url, server.headers, call.tool, arguments, guard=server.guard)
        )

    def _trace(self, call: _Call) -> None:
        """The call's span (`execute_tool`), when tracing is on."""
        trace = self.ex.trace
        if trace is not None:
            label = call.server.label if call.server is not None else None
            call.span = trace.tool(call.tool, call.call_id, label, call.arguments)

    async def _write_mcp_call(self, call: _Call) -> None:
        names, translator = self.names, self.translator
        events = names.events
        assert call.server is not None
        item: dict[str, Any] = {
            "type": names.call,
            "server_label": call.server.label,
            "name": call.tool,
            "arguments": "",
            "status": "in_progress",
        }
        arguments = call.arguments
        if call.streamed is not None:  # (its item is open, its arguments out: it waits for its end)
            arguments = call.streamed
        else:
            if call.approval_request_id is not None:
                item["approval_request_id"] = call.approval_request_id
            _, out = translator.open_item(item, prefix="mcp")
            out += translator.item_event(events + "mcp_call_arguments.delta", {"delta": arguments})
            out += translator.item_event(events + "mcp_call_arguments.done", {"arguments": arguments})
            out += translator.item_event(events + "mcp_call.in_progress")
            await self._emit(out)
        output: str | None = None
        error = call.refused
        if call.task is not None:
            result: CallResult = await call.task
            if result.error is None:
                output = self._mask(result.output or "")
            else:
                error = _error(result.kind, self._mask(result.error))
            if call.span is not None:
                call.span.end(result=output, error=None if result.error is None else result.kind, message=result.error)
        failed = error is not None
        done = {**item, "arguments": arguments, "output": output, "error": error}
        done["status"] = "failed" if failed else "completed"
        ending = events + ("mcp_call.failed" if failed else "mcp_call.completed")
        if call.streamed is not None:  # (the turn's items hold it, in its place)
            out = translator.close_live(ending, done)
            self.live.closed += 1
        else:
            out = translator.item_event(ending) + translator.done_item(done)
            self.items += to_models([done])
        await self._emit(out)

    async def _nested(self, call: _Call, agent: AgentTool, task: str) -> dict[str, Any]:
        """A sub-agent's nested response (stored like any other); its text deltas kept for its item's events."""
        data: dict[str, Any] = {"model": agent.model, "input": task, "stream": True, "store": True}
        if agent.instructions is not None:
            data["instructions"] = agent.instructions
        if agent.tools:
            data["tools"] = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in agent.tools]
        if agent.max_tool_calls is not None:
            data["max_tool_calls"] = agent.max_tool_calls
        request = ResponsesRequest.model_validate(data)

        def on_event(event: dict[str, Any]) -> None:
            kind = event["type"]
            if kind == "response.created":
                call.response_id = event["response"]["id"]
            elif kind == "response.output_text.delta":
                call.progress.append(event["delta"])
            else:
                return
            call.wake.set()

        assert self.box.run_agent is not None
        if call.span is not None:
            with call.span.current():  # (the nested response's span is the call's child)
                return await self.box.run_agent(request, self.ex.tenant, self.plan.depth + 1, on_event)
        return await self.box.run_agent(request, self.ex.tenant, self.plan.depth + 1, on_event)

    async def _write_agent_call(self, call: _Call) -> None:
        translator = self.translator
        item: dict[str, Any] = {
            "type": "ferroute:agent_call",
            "name": call.tool,
            "arguments": call.arguments,
            "response_id": None,
            "status": "in_progress",
        }
        _, out = translator.open_item(item, prefix="agent")
        await self._emit(out)
        task = call.task
        sent = 0
        announced = False
        while True:  # the nested response's id, then its text as it comes, until it ends
            if task is not None and not task.done():
                call.wake.clear()
                waiter = asyncio.ensure_future(call.wake.wait())
                try:
                    await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
            out = b""
            if not announced and (call.response_id is not None or task is None or task.done()):
                announced = True
                out += translator.item_event("ferroute:agent_call.in_progress", {"response_id": call.response_id})
            if announced:
                for delta in call.progress[sent:]:
                    out += translator.item_event("ferroute:agent_call.output_text.delta", {"delta": delta})
                sent = len(call.progress)
            await self._emit(out)
            if task is None or task.done():
                break
        output: str | None = None
        error: Any = call.refused
        if task is not None:
            try:
                response = task.result()
            except RouterError as e:
                error = {"type": "http_error", "code": e.status, "message": self._mask(e.message)}
                if call.span is not None:
                    call.span.end(error=e.code or str(e.status), message=e.message)
            else:
                usage = response.get("usage") or {}
                translator.add_usage(
                    input_tokens=usage.get("input_tokens", 0),
                    output_tokens=usage.get("output_tokens", 0),
                    cached_tokens=(usage.get("input_tokens_details") or {}).get("cached_tokens", 0),
                    reasoning_tokens=(usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0),
                )
                message = None
                if response["status"] == "failed":
                    message = (response.get("error") or {}).get("message") or "the sub-agent's response failed"
                    error = {"type": "http_error", "code": 502, "message": message}
                else:
                    output = "".join(
                        part.get("text", "")
                        for out_item in response["output"]
                        if out_item["type"] == "message"
                        for part in out_item["content"]
                    )
                if call.span is not None:
                    call.span.end(result=output, error=None if message is None else "failed", message=message)
        failed = error is not None
        done = {
            **item,
            "response_id": call.response_id,
            "output": output,
            "status": "failed" if failed else "completed",
        }
        if failed:
            done["error"] = error
        out = translator.item_event("ferroute:agent_call.failed" if failed else "ferroute:agent_call.completed")
        out += translator.done_item(done)
        await self._emit(out)
        self.items += to_models([done])

    @contextlib.contextmanager
    def _tooling(self) -> Any:
        """While tools run, the upstream's timeouts stop (the clock sees `tooling`)."""
        self.ex.tooling = True
        try:
            yield
        finally:
            self.ex.tooling = False

    def _mask(self, text: str) -> str:
        return self.secrets.mask(text) if self.secrets is not None else text


# JSON-RPC codes of the calls the router refuses to make (`mcp_protocol_error`).
_INVALID_PARAMS = -32602
_NOT_ALLOWED = -32601
_LIMIT = -32000


def _end_turn(translator: Translator) -> bytes:
    return translator.end_turn()


def _turn_failed(translator: Translator) -> Failure | None:
    """A turn that has sent no content: its failure when it ended failed (an in-band error first), else None."""
    result = translator.turn_result()
    if result is None or result["status"] != "failed":
        return None
    error = result["error"] or {}
    failed = upstream_failed(error.get("message"), error.get("code"))
    failed.retryable = True
    return Failure(failed)


def _error(kind: str, message: str) -> dict[str, Any]:
    """A failed call's `error`, as OpenAI's MCP tool gives it: the tool's own error, or an HTTP-ish one for a
    time-out (504) or a server that failed (502)."""
    if kind == "tool":
        return {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": message}]}
    return {"type": "http_error", "code": 504 if kind == "timeout" else 502, "message": message}


class _Call:
    """One hosted call of a turn: an MCP server's tool, or a sub-agent (`agent`)."""

    __slots__ = (
        "agent", "approval_request_id", "arguments", "call_id", "progress", "refused", "response_id", "server", "span",
        "streamed", "task", "tool", "wake",
    )  # fmt: skip

    def __init__(
        self,
        server: Server | None,
        tool: str,
        arguments: str,
        *,
        approval_request_id: str | None = None,
        agent: AgentTool | None = None,
        call_id: str | None = None,
    ) -> None:
        self.server = server
        self.call_id = call_id  # the model's call id (an approved call: its approval request's id)
        self.span: ToolSpan | None = None  # its `execute_tool` span, when tracing is on
        self.tool = tool
        self.arguments = arguments
        self.approval_request_id = approval_request_id
        self.agent = agent
        self.refused: dict[str, Any] | None = None
        self.task: asyncio.Future[Any] | None = None
        self.response_id: str | None = None  # a sub-agent's nested response, once created
        self.progress: list[str] = []  # a sub-agent's text deltas so far
        self.wake = asyncio.Event()
        self.streamed: str | None = None  # a live call's arguments as its item streamed them (see the module)

    def refuse(self, code: int, message: str) -> None:
        self.refused = {"type": "mcp_protocol_error", "code": code, "message": message}


class _Live:
    """A turn's live calls: in the order the model made them, started as their arguments completed; the closer
    task ends them in that order, taking them from `queue` (None: the turn has ended)."""

    __slots__ = ("calls", "closed", "closer", "queue")

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.closed = 0  # items closed (`close_live`) so far
        self.queue: asyncio.Queue[_Call | None] = asyncio.Queue()
        self.closer: asyncio.Future[None] | None = None


class _Ended(Exception):
    """The response ended (failed) before the loop's turns."""


def run_loop(pump: Pump, ex: Exchange) -> Awaitable[None]:
    assert ex.plan is not None
    return Loop(pump, ex, ex.plan).run()
