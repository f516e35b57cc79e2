"""The key table and the limiter without a server: window arithmetic, the shared file between two "workers", and
the Redis scripts against a real redis-server (with a fixed clock, checked against the Python arithmetic)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ferroute.config import ConfigError, KeyConfig, parse_settings
from ferroute.errors import RouterError
from ferroute.routing.keys import (
    LEASE_SECONDS,
    Key,
    KeyTable,
    LocalLimits,
    RedisLimits,
    duration,
    gcra,
    make_file,
    settled,
)
from ferroute.store import tenant_of
from tests.support.servers import Server, redis_server


def table(**limits: int) -> KeyTable:
    return KeyTable([], [KeyConfig(name="k", key="sk-k", **limits)])  # type: ignore[arg-type]


def test_gcra_spends_a_minute_at_once_then_earns_it_back_evenly() -> None:
    tat, now = 0.0, 1000.0
    for remaining in range(59, -1, -1):
        ok, tat, _, left, reset = gcra(tat, now, 60, 1)
        assert ok and left == remaining
    assert reset == pytest.approx(60)
    ok, _, wait, left, _ = gcra(tat, now, 60, 1)
    assert not ok and left == 0 and wait == pytest.approx(1)
    ok, tat, _, left, _ = gcra(tat, now + 1, 60, 1)  # one a second comes back
    assert ok and left == 0
    # A cost above the whole budget goes when the window is whole, and is owed.
    ok, tat, _, left, reset = gcra(0.0, now, 100, 250)
    assert ok and left == 0 and reset == pytest.approx(150)
    ok, _, wait, _, _ = gcra(tat, now, 100, 10)
    assert not ok and wait == pytest.approx(150 + 6 - 60)


def test_settling_moves_the_window_by_the_difference() -> None:
    now = 100.0
    assert settled(now + 10, now, 60, 5) == pytest.approx(now + 15)
    assert settled(now + 10, now, 60, -4) == pytest.approx(now + 6)
    assert settled(now + 10, now, 60, -40) == now  # (a refund never goes below empty)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.02, "20ms"), (0.9994, "1s"), (1, "1s"), (1.5, "1.5s"), (59.9, "59.9s"), (360, "6m0s"),
     (90.5, "1m30.5s"), (3600, "1h0m0s"), (3725.25, "1h2m5.25s")],
)  # fmt: skip
def test_reset_durations_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_the_table_finds_keys_by_digest_with_the_plain_keys_tenant() -> None:
    hashed = KeyConfig(name="h", key_sha256=hashlib.sha256(b"sk-hashed").hexdigest(), models=["a*", "*:b"])
    keys = KeyTable(["sk-plain"], [hashed, KeyConfig(name="p", key="sk-p", max_concurrent=2)])
    found = keys.find(b"sk-hashed")
    assert found is not None and found.name == "h" and found.limits is None
    assert found.tenant == tenant_of(b"sk-hashed")
    assert found.allows("abc") and found.allows("x:b") and not found.allows("x:c") and not found.allows("Abc")
    default = keys.find(b"sk-plain")
    assert default is not None and default.name == "default" and default.tenant == tenant_of(b"sk-plain")
    assert keys.find(b"sk-plai") is None and keys.find(b"") is None
    assert [key.name for key in keys.limited] == ["p"]
    with pytest.raises(ValueError, match="same key"):
        KeyTable(["sk-p"], [KeyConfig(name="p", key="sk-p"), KeyConfig(name="q", key="sk-p")])


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ('name = "a"\nkey = "x"\nkey_env = "HOME"', "exactly one of key, key_env, key_sha256"),
        ('name = "a"', "exactly one"),
        ('name = "a"\nkey_sha256 = "abc"', "64 hex"),
        ('name = "a"\nkey_env = "FERROUTE_TEST_NOT_SET"', "FERROUTE_TEST_NOT_SET"),
        ('name = "a"\nkey = "x"\n[[keys]]\nname = "a"\nkey = "y"', "two keys are named 'a'"),
        ('name = "a"\nkey = "x"\nrequests_per_minute = 0', "greater than or equal to 1"),
    ],
)
def test_config_errors(keys: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_settings(f"[[keys]]\n{keys}\n")


def test_two_workers_share_one_file(tmp_path: object) -> None:
    keys = table(requests_per_minute=3, tokens_per_minute=100, max_concurrent=2)
    key = keys.limited[0]
    path = make_file(keys.limited, str(tmp_path))
    one, two = LocalLimits(keys.limited, path), LocalLimits(keys.limited, path)
    now = 1000.0
    a = one.admit_now(key, 10, now)
    b = two.admit_now(key, 10, now)
    with pytest.raises(RouterError) as refused:  # two in flight
        one.admit_now(key, 10, now)
    assert refused.value.status == 429 and "concurrent requests" in refused.value.message
    two.end_now(a, 70, now)  # (ended by another worker than admitted it: the slot is the file's)
    c = one.admit_now(key, 10, now)
    assert dict(c.headers)[b"x-ratelimit-remaining-requests"] == b"0"
    assert dict(c.headers)[b"x-ratelimit-remaining-tokens"] == b"10"  # 100 - (70 + 10 + 10)
    for grant in (b, c):
        one.end_now(grant, None, now)
    with pytest.raises(RouterError) as refused:
        two.admit_now(key, 10, now)
    assert "requests per minute" in refused.value.message
    assert "tokens per minute" not in refused.value.message
    assert dict(refused.value.headers)[b"retry-after"] == b"20"


def test_a_dead_workers_slots_are_taken_back(tmp_path: object) -> None:
    keys = table(max_concurrent=1)
    key = keys.limited[0]
    path = make_file(keys.limited, str(tmp_path))
    child = subprocess.run(
        [sys.executable, "-c", f"""
from ferroute.config import KeyConfig
from ferroute.routing.keys import KeyTable, LocalLimits
keys = KeyTable([], [KeyConfig(name="k", key="sk-k", max_concurrent=1)])
LocalLimits(keys.limited, {path!r}).admit_now(keys.limited[0], 1, 0.0)  # and exits holding it
"""],
        check=True,
    )  # fmt: skip
    assert child.returncode == 0
    here = LocalLimits(keys.limited, path)
    grant = here.admit_now(key, 1, 0.0)  # (the dead process's slot)
    with pytest.raises(RouterError):  # (a live one's is not)
        here.admit_now(key, 1, 0.0)
    here.end_now(grant, None, 0.0)
    here.admit_now(key, 1, 0.0)


@pytest.fixture(scope="module")
def redis() -> Iterator[Server]:
    with redis_server() as server:
        yield server


def test_the_redis_script_counts_as_the_python_arithmetic(redis: Server) -> None:
    async def run() -> None:
        limits = RedisLimits(redis.url, "test-arith:")
        key = table(requests_per_minute=4, tokens_per_minute=1000).limited[0]
        tat_r = tat_t = 0.0
        try:
            for step, (at, cost) in enumerate([(0, 100), (1, 300), (2, 900), (3, 50), (30, 50), (40, 2000)]):
                now = 1_000_000.0 + at
                limits.now = str(int(now * 1000))
                ok_r, new_r, wait_r, left_r, _ = gcra(tat_r, now, 4, 1)
                ok_t, new_t, wait_t, left_t, _ = gcra(tat_t, now, 1000, cost)
                try:
                    grant = await limits.admit(key, cost)
                except RouterError as e:
                    refused = dict(e.headers)
                else:
                    refused = None
                if refused is not None:
                    assert not (ok_r and ok_t), step
                    assert int(refused[b"retry-after"]) == max(1, math.ceil(max(wait_r, wait_t))), step
                    assert refused[b"x-ratelimit-remaining-tokens"] == b"%d" % left_t
                    continue
                assert ok_r and ok_t, step
                tat_r, tat_t = new_r, new_t
                headers = dict(grant.headers)
                assert headers[b"x-ratelimit-remaining-requests"] == b"%d" % left_r, step
                assert headers[b"x-ratelimit-remaining-tokens"] == b"%d" % left_t, step
                await limits.end(grant, cost // 2)  # (used half the estimate: a refund)
                tat_t = settled(tat_t, now, 1000, cost // 2 - cost)
        finally:
            await limits.aclose()

    asyncio.run(run())


def test_redis_leases_are_freed_at_the_end_or_when_they_expire(redis: Server) -> None:
    async def run() -> None:
        one, two = RedisLimits(redis.url, "test-lease:"), RedisLimits(redis.url, "test-lease:")
        key: Key = table(max_concurrent=2).limited[0]
        try:
            for limits in (one, two):
                limits.now = "5000000"
            a = await one.admit(key, 1)
            await two.admit(key, 1)
            with pytest.raises(RouterError, match="concurrent requests"):
                await two.admit(key, 1)
            await one.end(a, None)
            await two.admit(key, 1)
            # Nobody renews them (a dead host): past the lease they are free.
            two.now = str(5_000_000 + int(LEASE_SECONDS * 1000) + 1)
            await two.admit(key, 1)
            await two.admit(key, 1)
        finally:
            for limits in (one, two):
                if limits.held.task is not None:
                    limits.held.task.cancel()
                await limits.aclose()

    asyncio.run(run())
