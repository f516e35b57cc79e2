"""Routes: a model name clients send that stands for several `<model>:<provider>` targets, and what keeps a request
alive while one of them fails.

`Router.pick(model)` gives the provider and upstream model of the first attempt and, where another attempt is
possible (a route, or `[routing] retries`), a `Failover`: the targets in the order the route's strategy chose,
and the rule for what comes after a failure (the same target again after a backoff, within its retry budget; or
the next target at once). The pump (`app.exchange`) moves a request on only until the upstream's first content
reaches the client.

A route target's circuit breaker and its requests in flight (`least_busy`) are the instance's under `ferroute
serve`: the circuits in one file every worker maps (`ferroute.routing.circuits`), each worker's counts in a file of
its own that the others read (`ferroute.routing.inflight`). Its moving average of time to first content (`latency`)
and its retry budget are this worker's. Targets are shared by name: a target in two routes is one target.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from ferroute.config import RouteConfig, RoutingConfig
from ferroute.errors import RouterError, no_healthy_target
from ferroute.providers import Provider
from ferroute.routing.circuits import Circuits, SharedBreaker, log_closed, log_opened
from ferroute.routing.inflight import InFlight

# The weight of the newest time to first content in a target's moving average (`latency` strategy).
LATENCY_WEIGHT = 0.3
# Plain `<model>:<provider>` targets kept for their retry budgets (`[routing] retries`): any model string a client
# sends names one, so their number is bounded (the oldest are forgotten first).
_MAX_PLAIN_TARGETS = 4096

Strategy = Literal["fallback", "weighted", "least_busy", "latency"]


class Breaker:
    """A target's circuit: `threshold` failures in a row open it for `cooldown` seconds; then one attempt (the
    probe) is let through: its success closes the circuit, its failure opens it again at once."""

    __slots__ = ("cooldown", "failures", "open_until", "probing", "target", "threshold")

    def __init__(self, target: str, threshold: int, cooldown: float) -> None:
        self.target = target
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0  # in a row
        self.open_until = 0.0  # 0: closed; else when the next probe may go (monotonic seconds)
        self.probing = False  # the probe is under way

    @property
    def is_open(self) -> bool:
        return self.open_until != 0.0

    def allows(self, now: float) -> bool:
        """Whether an attempt may go to the target now (closed; or open, cooled down, and no probe under way)."""
        return not self.open_until or (now >= self.open_until and not self.probing)

    def enter(self, now: float) -> bool:
        """An attempt that `allows` said may go begins; True when it is the probe of an open circuit."""
        if self.open_until and now >= self.open_until and not self.probing:
            self.probing = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        if self.open_until:
            self.open_until = 0.0
            self.probing = False
            log_closed(self.target)

    def failed(self, now: float, reason: str) -> None:
        self.failures += 1
        if self.probing or (not self.open_until and self.failures >= self.threshold):
            again = self.probing
            self.open_until = now + self.cooldown
            self.probing = False
            log_opened(self.target, again, self.failures, reason, self.cooldown)

    def abandon(self, probe: bool) -> None:
        """An attempt ended with no verdict (the client left first): a probe it was may be made again."""
        if probe and self.probing:
            self.probing = False


class RetryBudget:
    """A target's retries over a sliding window stay under `ratio` of its requests (first attempts), or under
    `floor`, whichever is more: light traffic can still retry, and an outage does not multiply the load."""

    __slots__ = ("floor", "past_requests", "past_retries", "ratio", "requests", "retries", "since", "window")

    def __init__(self, ratio: float, floor: int, window: float) -> None:
        self.ratio = ratio
        self.floor = floor
        self.window = window
        self.since = 0.0
        self.requests = self.retries = 0  # in the current window
        self.past_requests = self.past_retries = 0  # in the one before

    def _roll(self, now: float) -> None:
        if now - self.since >= self.window:
            recent = now - self.since < 2 * self.window
            self.past_requests = self.requests if recent else 0
            self.past_retries = self.retries if recent else 0
            self.requests = self.retries = 0
            self.since = now

    def request(self, now: float) -> None:
        self._roll(now)
        self.requests += 1

    def take(self, now: float) -> bool:
        """Spend a retry if the budget has one."""
        self._roll(now)
        allowed = max(float(self.floor), self.ratio * (self.requests + self.past_requests))
        if self.retries + self.past_retries < allowed:
            self.retries += 1
            return True
        return False


class Target:
    """`<model>:<provider>`: the provider, the model it is sent, and the target's health (its circuit and requests in
    flight: the instance's once `Router.share` ran; its latency average and retry budget: this worker's)."""

    __slots__ = ("breaker", "budget", "in_flight", "latency", "name", "provider", "shared", "slot", "upstream_model")

    def __init__(self, name: str, provider: Provider, upstream_model: str, settings: RoutingConfig) -> None:
        self.name = name
        self.provider = provider
        self.upstream_model = upstream_model
        self.breaker: Breaker | SharedBreaker = Breaker(name, settings.breaker_failures, settings.breaker_cooldown)
        self.budget = RetryBudget(settings.retry_budget, settings.retry_budget_min, settings.retry_budget_window)
        self.in_flight = 0  # this worker's requests at the target now
        self.shared: InFlight | None = None  # the instance's counts, for a target of a `least_busy` route
        self.slot = 0  # its place there
        self.latency: float | None = None  # moving average of seconds to first content; None until one is known

    def enter(self) -> None:
        """An attempt at the target begins."""
        self.in_flight += 1
        if self.shared is not None:
            self.shared.put(self.slot, self.in_flight)

    def leave(self) -> None:
        """An attempt at the target is over."""
        self.in_flight -= 1
        if self.shared is not None:
            self.shared.put(self.slot, self.in_flight)

    def busy(self) -> int:
        """Requests in flight at the target: the instance's where its workers share their counts."""
        if self.shared is None:
            return self.in_flight
        return self.in_flight + self.shared.others(self.slot)

    def observe(self, seconds: float) -> None:
        latency = self.latency
        self.latency = seconds if latency is None else latency + LATENCY_WEIGHT * (seconds - latency)


class Route:
    """`[[routes]]`: a name clients send, its targets (with their weights) and the strategy that orders them."""

    __slots__ = ("hedge_after", "name", "strategy", "targets", "weights")

    def __init__(
        self,
        name: str,
        strategy: Strategy,
        targets: list[Target],
        weights: list[float],
        hedge_after: float | None = None,
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.targets = targets
        self.weights = weights
        self.hedge_after = hedge_after  # seconds without content before a second target starts (None: never)

    def order(self, now: float) -> list[Target]:
        """The targets to try, in order, those whose circuit is open left out (a 503 if that leaves none)."""
        strategy = self.strategy
        targets = self.targets
        if strategy == "weighted":
            # Weighted sampling without replacement (Efraimidis-Spirakis): the first is picked with probability
            # weight / total, and each next one among those left the same way.
            keyed = [(random.random() ** (1.0 / w), i) for i, w in enumerate(self.weights)]
            keyed.sort(reverse=True)
            ordered = [targets[i] for _, i in keyed]
        elif strategy == "least_busy":  # (ties broken at random, so idle targets share the load)
            ordered = sorted(targets, key=lambda t: (t.busy(), random.random()))
        elif strategy == "latency":  # (a target never measured goes first: its time is learnt)
            ordered = sorted(targets, key=lambda t: -1.0 if t.latency is None else t.latency)
        else:
            ordered = targets
        ready = [t for t in ordered if t.breaker.allows(now)]
        if not ready:
            soonest = min(t.breaker.open_until for t in targets)
            raise no_healthy_target(self.name, soonest - now)
        return ready


class Failover:
    """One request's way through its targets: which one is being tried, and what comes after a failure."""

    __slots__ = ("index", "route", "settings", "targets", "tries")

    def __init__(self, targets: list[Target], settings: RoutingConfig, route: Route | None) -> None:
        self.targets = targets
        self.settings = settings
        self.route = route  # None: a plain `<model>:<provider>` with retries
        self.index = 0
        self.tries = 0  # retries of the current target so far

    @property
    def target(self) -> Target:
        return self.targets[self.index]

    def after(self, error: RouterError, now: float) -> tuple[Target, float] | None:
        """After the current target failed with `error` (before its first content): the target to try next and the
        seconds to wait first; None when there is none. A retry of the same target waits its backoff (a 429's
        `Retry-After` instead, both at most `max_backoff`); a 429 moves to the next target at once when there is
        one; a retry needs the target's budget and a closed circuit."""
        settings = self.settings
        target = self.targets[self.index]
        later = self._later(now)
        if (
            self.tries < settings.retries
            and not (error.status == 429 and later is not None)
            and not target.breaker.is_open
            and target.budget.take(now)
        ):
            self.tries += 1
            if error.retry_after is not None:
                wait = error.retry_after
            else:  # exponential, with jitter: half of it fixed, half random
                wait = settings.backoff * 2 ** (self.tries - 1)
                wait = wait / 2 + random.random() * wait / 2
            return target, min(wait, settings.max_backoff)
        if later is None:
            return None
        self.index = later
        self.tries = 0
        following = self.targets[later]
        following.budget.request(now)
        return following, 0.0

    def hedge(self, now: float) -> Target | None:
        """A second target to start beside the current one, which has sent no content for the route's `hedge_after`:
        the next whose circuit lets an attempt through. A hedge is an extra request caused by the current target's
        slowness, so it spends the current target's retry budget (hedges and retries together stay within it). The
        hedge becomes the current target: a failure of both goes on after it. None when there is none."""
        later = self._later(now)
        if later is None or not self.targets[self.index].budget.take(now):
            return None
        self.index = later
        self.tries = 0
        following = self.targets[later]
        following.budget.request(now)
        return following

    def _later(self, now: float) -> int | None:
        """The index of the next target whose circuit lets an attempt through."""
        for index in range(self.index + 1, len(self.targets)):
            if self.targets[index].breaker.allows(now):
                return index
        return None


class Router:
    """The model string a client sends → where it goes: a route's name, `<upstream model>:<provider>`, or (neither)
    the default provider with the model as given."""

    def __init__(
        self,
        providers: dict[str, Provider],
        default_provider: str | None,
        routes: list[RouteConfig] | None = None,
        settings: RoutingConfig | None = None,
    ) -> None:
        self.providers = providers
        if default_provider is None and len(providers) == 1:
            default_provider = next(iter(providers))
        self.default = default_provider
        self.settings = settings or RoutingConfig()
        self.targets: dict[str, Target] = {}  # the routes' targets, by name
        self.routes: dict[str, Route] = {}
        for config in routes or []:
            targets = [self._target(t.target) for t in config.targets]
            weights = [t.weight for t in config.targets]
            self.routes[config.name] = Route(config.name, config.strategy, targets, weights, config.hedge_after)
        self.plain: dict[str, Target] = {}  # plain targets with retries (`[routing] retries`), bounded
        self.in_flight: InFlight | None = None  # the instance's counts (`share`)
        self.shared_circuits: Circuits | None = None  # the instance's circuits (`share`)

    def share(self, directory: Path, worker: str) -> None:
        """Keep the routes' circuits, and count the `least_busy` routes' targets' requests in flight, across the
        instance's workers, in `directory` (the instance's, where `worker` names this one's files), one slot per
        target in the config's order."""
        if self.targets and self.shared_circuits is None:
            settings = self.settings
            circuits = self.shared_circuits = Circuits(directory, list(self.targets))
            for slot, target in enumerate(self.targets.values()):
                target.breaker = SharedBreaker(
                    target.name, settings.breaker_failures, settings.breaker_cooldown, circuits, slot
                )
        busy = [
            t
            for t in self.targets.values()
            if any(t in r.targets for r in self.routes.values() if r.strategy == "least_busy")
        ]
        if not busy or self.in_flight is not None:
            return
        self.in_flight = InFlight(directory, worker, [t.name for t in busy])
        for slot, target in enumerate(busy):
            target.shared, target.slot = self.in_flight, slot
            self.in_flight.put(slot, target.in_flight)

    def close(self) -> None:
        """At the worker's end: its counts leave the instance's, and its circuits are its own again (as they stand:
        a request still under way reads them)."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is not None:
            for target in self.targets.values():
                target.shared = None
            in_flight.close()
        circuits, self.shared_circuits = self.shared_circuits, None
        if circuits is not None:
            for target in self.targets.values():
                shared = target.breaker
                local = Breaker(target.name, shared.threshold, shared.cooldown)
                local.failures, local.open_until = shared.failures, shared.open_until
                target.breaker = local
            circuits.close()

    def _target(self, name: str) -> Target:
        target = self.targets.get(name)
        if target is None:
            upstream_model, _, provider = name.rpartition(":")
            target = Target(name, self.providers[provider], upstream_model, self.settings)
            self.targets[name] = target
        return target

    def resolve(self, model: str) -> tuple[Provider, str]:
        """`<upstream model>:<provider>` (or the default provider): the provider and the model it is sent."""
        upstream_model, sep, name = model.rpartition(":")
        if sep and upstream_model and name in self.providers:
            return self.providers[name], upstream_model
        if self.default is not None:
            return self.providers[self.default], model
        raise RouterError(
            404,
            f"the model {model!r} does not name a route or a provider this router knows; use a route "
            f"({sorted(self.routes)}) or '<model>:<provider>' with one of {sorted(self.providers)}",
            type="not_found",
            code="model_not_found",
            param="model",
        )

    def pick(self, model: str, now: float, prefer: str | None = None) -> tuple[Provider, str, Failover | None]:
        """Where a request for `model` goes first, and its `Failover` where another attempt is possible (None: the
        one attempt there is, as for a plain `<model>:<provider>` without retries). `prefer`: a route's target that
        goes first while its circuit is closed (the one that made the previous response of a conversation)."""
        route = self.routes.get(model) if self.routes else None
        if route is not None:
            targets = route.order(now)
            if prefer is not None and targets[0].name != prefer:
                for i, target in enumerate(targets):
                    if target.name == prefer and not target.breaker.is_open:
                        targets.insert(0, targets.pop(i))
                        break
            first = targets[0]
            first.budget.request(now)
            return first.provider, first.upstream_model, Failover(targets, self.settings, route)
        provider, upstream_model = self.resolve(model)
        if not self.settings.retries:
            return provider, upstream_model, None
        name = f"{upstream_model}:{provider.name}"
        plain = self.plain.get(name)
        if plain is None:
            if len(self.plain) >= _MAX_PLAIN_TARGETS:
                del self.plain[next(iter(self.plain))]
            plain = self.plain[name] = Target(name, provider, upstream_model, self.settings)
        plain.budget.request(now)
        return provider, upstream_model, Failover([plain], self.settings, None)

    def models(self) -> Iterator[str]:
        """The routes' names (for `GET /v1/models`)."""
        return iter(self.routes)

    def circuits(self) -> dict[tuple[str], float]:
        """Each route target's circuit: 1 open, 0 closed (`ferroute_upstream_circuit_open{target}`)."""
        return {(name,): float(target.breaker.is_open) for name, target in self.targets.items()}
