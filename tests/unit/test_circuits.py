"""`ferroute.routing.circuits`: one target's circuit seen by two workers (two mappings of the instance's file, as two
processes have), with `Breaker`'s rules: failures in a row counted for the instance, one probe for the instance."""

from __future__ import annotations

import logging
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from ferroute.config import parse_settings
from ferroute.providers import build_providers
from ferroute.routing.circuits import PROBE_LEASE_MIN, Circuits, SharedBreaker
from ferroute.routing.routes import Breaker, Router

TARGETS = ["m:a", "m:b"]


def _workers(directory: Path, threshold: int = 2, cooldown: float = 10.0) -> tuple[SharedBreaker, SharedBreaker]:
    one, two = Circuits(directory, TARGETS), Circuits(directory, TARGETS)
    return SharedBreaker("m:b", threshold, cooldown, one, 1), SharedBreaker("m:b", threshold, cooldown, two, 1)


def test_failures_in_a_row_are_counted_for_the_instance(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _workers(tmp_path)
    now = time.monotonic()
    a.failed(now, "upstream_error")
    assert not a.is_open and not b.is_open
    b.failed(now, "upstream_error")  # (the second in a row, in the other worker: the instance's threshold)
    assert a.is_open and b.is_open
    assert not a.allows(now + 1) and not b.allows(now + 1)
    assert a.open_until == b.open_until == pytest.approx(now + 10.0)
    assert "opened after 2 failures" in caplog.text


def test_a_success_in_any_worker_ends_the_run_of_failures(tmp_path: Path) -> None:
    a, b = _workers(tmp_path)
    now = time.monotonic()
    a.failed(now, "x")
    b.succeeded()
    a.failed(now, "x")  # (the first in a row again)
    assert not a.is_open and a.failures == b.failures == 1


def test_one_probe_for_the_instance(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    a, b = _workers(tmp_path, threshold=1, cooldown=1.0)
    now = time.monotonic()
    a.failed(now, "x")
    later = now + 1.5  # (cooled down)
    assert a.allows(later) and b.allows(later)
    assert a.enter(later) is True  # the probe: the instance's
    assert not b.allows(later) and b.enter(later) is False
    # Its failure opens the circuit again at once, for both.
    a.failed(later, "still down")
    assert not b.allows(later + 0.5) and "open again: the probe failed" in caplog.text
    # The next probe goes from the other worker and closes it, for both.
    again = later + 1.5
    assert b.enter(again) is True and not a.allows(again)
    b.succeeded()
    assert not a.is_open and a.allows(again) and a.failures == 0
    assert "closed: the probe succeeded" in caplog.text


def test_an_abandoned_probe_lets_another_go_and_a_lost_one_ends_with_its_lease(tmp_path: Path) -> None:
    a, b = _workers(tmp_path, threshold=1, cooldown=1.0)
    now = time.monotonic()
    a.failed(now, "x")
    probe_at = now + 1.5
    assert a.enter(probe_at)
    a.abandon(True)  # (its client left before a verdict)
    assert b.allows(probe_at) and b.enter(probe_at)
    # `b` dies with its probe under way: after the lease, a probe may go again.
    assert not a.allows(probe_at + PROBE_LEASE_MIN - 0.1)
    assert a.allows(probe_at + PROBE_LEASE_MIN + 0.1) and a.enter(probe_at + PROBE_LEASE_MIN + 0.1)


def test_a_reading_from_another_boot_is_dropped(tmp_path: Path) -> None:
    a, _ = _workers(tmp_path, threshold=1, cooldown=1.0)
    a.circuits.times[4 + 1] = time.monotonic() + 10_000.0  # (open "until" a time no circuit sets)
    assert a.is_open
    fresh = SharedBreaker("m:b", 1, 1.0, Circuits(tmp_path, TARGETS), 1)
    assert not fresh.is_open and not a.is_open


def test_other_targets_and_other_configs_are_apart(tmp_path: Path) -> None:
    a, _ = _workers(tmp_path, threshold=1)
    other_slot = SharedBreaker("m:a", 1, 10.0, Circuits(tmp_path, TARGETS), 0)
    other_config = SharedBreaker("m:b", 1, 10.0, Circuits(tmp_path, ["m:b"]), 0)  # (a reload's targets: a file apart)
    a.failed(time.monotonic(), "x")
    assert a.is_open and not other_slot.is_open and not other_config.is_open


def _fail_in_process(directory: str, times: int, start: Any) -> None:
    breaker = SharedBreaker("m:b", 10**9, 10.0, Circuits(Path(directory), TARGETS), 1)
    start.wait(30)
    for _ in range(times):
        breaker.failed(time.monotonic(), "x")


def test_changes_from_processes_at_once_are_all_counted(tmp_path: Path) -> None:
    # Four processes counting failures at the same time: the lock makes each increment whole (without it, some of
    # these 40,000 are lost).
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [context.Process(target=_fail_in_process, args=(str(tmp_path), 10_000, start)) for _ in range(4)]
    for process in processes:
        process.start()
    time.sleep(1.0)  # (all four mapped and waiting)
    start.set()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    breaker = SharedBreaker("m:b", 10**9, 10.0, Circuits(tmp_path, TARGETS), 1)
    assert breaker.failures == 40_000


def test_a_worker_that_stops_sharing_keeps_the_circuit_as_it_stood(tmp_path: Path) -> None:
    settings = parse_settings(
        '[routing]\nbreaker_failures = 1\n[[providers]]\nname = "a"\nkind = "mock"\n'
        '[[routes]]\nname = "r"\ntargets = ["m:a", "n:a"]\n'
    )
    router = Router(build_providers(settings), None, settings.routes, settings.routing)
    router.share(tmp_path, "w1")
    target = router.targets["m:a"]
    assert isinstance(target.breaker, SharedBreaker)
    target.breaker.failed(time.monotonic(), "x")
    router.close()
    assert isinstance(target.breaker, Breaker) and target.breaker.is_open
