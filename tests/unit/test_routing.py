"""The routing rules in isolation: breaker states, the retry budget's window, what comes after a failure, strategies."""

from __future__ import annotations

import random

import pytest

from ferroute.config import RouteConfig, RoutingConfig, parse_settings
from ferroute.errors import RouterError, upstream_status
from ferroute.providers import build_providers
from ferroute.routing.routes import Breaker, Failover, RetryBudget, Router

SETTINGS = parse_settings(
    """
[[providers]]
name = "a"
kind = "mock"

[[providers]]
name = "b"
kind = "mock"
"""
)


def _router(
    strategy: str = "fallback", routing: RoutingConfig | None = None, weights: tuple[int, int] = (1, 1)
) -> Router:
    route = RouteConfig.model_validate(
        {
            "name": "r",
            "strategy": strategy,
            "targets": [{"target": "m:a", "weight": weights[0]}, {"target": "m:b", "weight": weights[1]}],
        }
    )
    return Router(build_providers(SETTINGS), None, [route], routing or RoutingConfig())


def test_breaker_opens_after_failures_in_a_row_and_lets_one_probe_through() -> None:
    breaker = Breaker("t", threshold=3, cooldown=10)
    breaker.failed(0, "x")
    breaker.failed(0, "x")
    breaker.succeeded()  # (not in a row)
    breaker.failed(1, "x")
    breaker.failed(1, "x")
    assert breaker.allows(1) and not breaker.is_open
    breaker.failed(1, "x")
    assert breaker.is_open and not breaker.allows(5)
    assert breaker.allows(11) and breaker.enter(11)  # the probe
    assert not breaker.allows(11)  # one at a time
    breaker.failed(12, "x")  # a failed probe: open again at once
    assert breaker.is_open and not breaker.allows(21) and breaker.allows(22)
    assert breaker.enter(22)
    breaker.abandon(True)  # (the client left: no verdict, another probe may go)
    assert breaker.enter(22)
    breaker.succeeded()
    assert not breaker.is_open and breaker.failures == 0


def test_retry_budget_is_a_share_of_requests_with_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, floor=2, window=10)
    assert budget.take(0) and budget.take(0) and not budget.take(0)  # the floor
    for _ in range(20):
        budget.request(1)
    assert budget.take(1) and budget.take(1) and not budget.take(1)  # 20% of 20 = 4
    # The next window still sees the last one's counts; two windows later everything is forgotten.
    assert not budget.take(11)
    assert budget.take(31) and budget.take(31) and not budget.take(31)


def test_after_a_failure_retry_then_next_target() -> None:
    router = _router(routing=RoutingConfig(retries=1, backoff=1, max_backoff=1.5))
    _, _, failover = router.pick("r", 0)
    assert failover is not None and failover.target.name == "m:a"
    error = upstream_status("a", 503, None)
    following = failover.after(error, 0)
    assert following is not None and following[0].name == "m:a" and 0.5 <= following[1] <= 1.0
    following = failover.after(error, 0)
    assert following is not None and following[0].name == "m:b" and following[1] == 0
    following = failover.after(error, 0)
    assert following is not None and following[0].name == "m:b"  # (its own retry)
    assert failover.after(error, 0) is None


def test_a_429_moves_on_at_once_unless_it_is_the_last_target() -> None:
    router = _router(routing=RoutingConfig(retries=1, max_backoff=5))
    _, _, failover = router.pick("r", 0)
    assert failover is not None
    limited = upstream_status("a", 429, "30")
    assert limited.retry_after == 30
    assert failover.after(limited, 0) == (router.targets["m:b"], 0.0)
    following = failover.after(limited, 0)
    assert following is not None and following == (router.targets["m:b"], 5)  # Retry-After, at most max_backoff


def test_non_retryable_errors_are_not_retryable() -> None:
    assert not upstream_status("a", 400, None).retryable
    assert not upstream_status("a", 401, None).retryable
    assert upstream_status("a", 500, None).retryable
    assert RouterError(400, "x").retryable is False


def test_open_circuits_are_skipped_and_all_open_is_a_503() -> None:
    router = _router(routing=RoutingConfig(breaker_failures=1, breaker_cooldown=30))
    router.targets["m:a"].breaker.failed(0, "x")
    _, _, failover = router.pick("r", 1)
    assert failover is not None and [t.name for t in failover.targets] == ["m:b"]
    router.targets["m:b"].breaker.failed(0, "x")
    with pytest.raises(RouterError) as raised:
        router.pick("r", 1)
    assert raised.value.status == 503 and raised.value.headers == [(b"retry-after", b"29")]


def test_weighted_order_follows_the_weights() -> None:
    random.seed(7)
    router = _router("weighted", weights=(3, 1))
    firsts = [router.routes["r"].order(0)[0].name for _ in range(4000)]
    assert 2800 <= firsts.count("m:a") <= 3200


def test_least_busy_and_latency() -> None:
    router = _router("least_busy")
    router.targets["m:a"].in_flight = 2
    assert [t.name for t in router.routes["r"].order(0)] == ["m:b", "m:a"]
    router = _router("latency")
    a, b = router.targets["m:a"], router.targets["m:b"]
    assert [t.name for t in router.routes["r"].order(0)] == ["m:a", "m:b"]  # (neither measured: config order)
    a.observe(0.5)
    assert [t.name for t in router.routes["r"].order(0)] == ["m:b", "m:a"]  # (b never measured: first)
    b.observe(0.2)
    a.observe(0.1)
    a.observe(0.1)
    assert [t.name for t in router.routes["r"].order(0)] == ["m:b", "m:a"]  # a's average is still above b's
    for _ in range(10):
        a.observe(0.1)
    assert [t.name for t in router.routes["r"].order(0)] == ["m:a", "m:b"]


def test_plain_targets_get_a_failover_only_with_retries() -> None:
    assert Router(build_providers(SETTINGS), None).pick("x:a", 0)[2] is None
    provider, model, failover = Router(build_providers(SETTINGS), None, None, RoutingConfig(retries=2)).pick("x:a", 0)
    assert provider.name == "a" and model == "x"
    assert isinstance(failover, Failover) and failover.route is None and failover.target.name == "x:a"


def test_config_checks_routes() -> None:
    from ferroute.config import ConfigError

    with pytest.raises(ConfigError, match="names no provider 'nope'"):
        parse_settings('[[providers]]\nname = "a"\nkind = "mock"\n[[routes]]\nname = "r"\ntargets = ["m:nope"]\n')
    with pytest.raises(ConfigError, match="two routes"):
        parse_settings(
            '[[providers]]\nname = "a"\nkind = "mock"\n'
            '[[routes]]\nname = "r"\ntargets = ["m:a"]\n[[routes]]\nname = "r"\ntargets = ["m:a"]\n'
        )
    with pytest.raises(ConfigError, match="hedge_after needs a second target"):
        parse_settings(
            '[[providers]]\nname = "a"\nkind = "mock"\n[[routes]]\nname = "r"\nhedge_after = 0.5\ntargets = ["m:a"]\n'
        )


def test_a_hedge_is_the_next_healthy_target_within_the_budget() -> None:
    router = _router(routing=RoutingConfig(retries=1, retry_budget=0.0, retry_budget_min=1))
    _, _, failover = router.pick("r", 0)
    assert failover is not None
    assert failover.hedge(0) is router.targets["m:b"]
    assert failover.target.name == "m:b" and failover.hedge(0) is None  # (no third target)
    # The first target's budget (one retry or hedge per window here) is spent: the next request gets no hedge.
    _, _, failover = router.pick("r", 0)
    assert failover is not None and failover.hedge(0) is None
    # An open circuit is not hedged to.
    router = _router()
    for _ in range(5):
        router.targets["m:b"].breaker.failed(0, "x")
    _, _, failover = router.pick("r", 0)
    assert failover is not None and failover.hedge(0) is None
