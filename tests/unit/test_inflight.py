"""Requests in flight counted across an instance's workers (`ferroute.routing.inflight`): each worker's counts in a
mapped file of its own, read by the others; a dead worker's no longer count. Two workers are two `InFlight` of one
process here, each with its metrics lock file (`ferroute.metrics`), as under `ferroute serve`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferroute.config import RoutingConfig, parse_settings
from ferroute.metrics import _Shared
from ferroute.providers import build_providers
from ferroute.routing import inflight
from ferroute.routing.inflight import InFlight
from ferroute.routing.routes import Router

TARGETS = ["a:p", "b:p", "c:p"]


def _worker(directory: Path) -> _Shared:
    shared = _Shared(directory)
    shared.open()  # (its lock file, held while it "lives")
    return shared


def test_a_worker_reads_the_others_counts_and_forgets_a_dead_one(tmp_path: Path) -> None:
    a, b, c = _worker(tmp_path), _worker(tmp_path), _worker(tmp_path)
    first, second, third = (InFlight(tmp_path, w.name, TARGETS) for w in (a, b, c))
    first.put(1, 4)
    second.put(1, 2)
    second.put(2, 7)
    third.put(1, 1)
    assert first.others(1) == 3 and first.others(2) == 7 and first.others(0) == 0
    assert second.others(1) == 5 and third.others(2) == 7

    # Counts change in place (no rescan needed); a dead worker is dropped at the next rescan, its file removed.
    second.put(1, 0)
    assert first.others(1) == 1
    assert b.handle is not None
    os.close(b.handle)  # (its flock goes: as when the process ends)
    first.rescan()
    assert first.others(2) == 0 and first.others(1) == 1
    assert not second.path.exists()

    # A worker started later is found at the next rescan (at most `RESCAN` seconds on).
    d = _worker(tmp_path)
    fourth = InFlight(tmp_path, d.name, TARGETS)
    fourth.put(0, 9)
    first.rescan()
    assert first.others(0) == 9
    fourth.close()
    assert not fourth.path.exists()
    first.rescan()
    assert first.others(0) == 0
    for table in (first, third):
        table.close()


def test_another_configs_counts_are_not_counted(tmp_path: Path) -> None:
    # (Workers of another config, as during a reload that changed the routes: other targets, or the same in
    # another order.)
    a, b, c = _worker(tmp_path), _worker(tmp_path), _worker(tmp_path)
    mine = InFlight(tmp_path, a.name, ["x:p", "y:p"])
    fewer = InFlight(tmp_path, b.name, ["x:p"])
    reordered = InFlight(tmp_path, c.name, ["y:p", "x:p"])
    fewer.put(0, 5)
    reordered.put(0, 7)
    assert mine.others(0) == 0 and mine.others(1) == 0
    for table in (mine, fewer, reordered):
        table.close()


def test_the_router_shares_only_least_busy_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inflight, "RESCAN", 0.0)  # (every read looks again: no waiting in the test)
    settings = parse_settings(
        '[[providers]]\nname = "p"\nkind = "mock"\n[[providers]]\nname = "q"\nkind = "mock"\n'
        '[[routes]]\nname = "lb"\nstrategy = "least_busy"\ntargets = ["a:p", "b:q"]\n'
        '[[routes]]\nname = "fb"\ntargets = ["c:p", "a:p"]\n'
    )

    def router() -> Router:
        return Router(build_providers(settings), None, settings.routes, RoutingConfig())

    here, there = router(), router()
    here.share(tmp_path, _worker(tmp_path).name)
    there.share(tmp_path, _worker(tmp_path).name)
    assert here.targets["c:p"].shared is None  # (in no least_busy route: its count stays in the worker)
    assert here.targets["a:p"].shared is not None and here.targets["b:q"].shared is not None

    # Three requests at a:p in the other worker (through the fallback route, which shares the target).
    for _ in range(3):
        there.targets["a:p"].enter()
    there.targets["b:q"].enter()
    assert here.targets["a:p"].busy() == 3 and here.targets["b:q"].busy() == 1
    for _ in range(5):
        assert [t.name for t in here.routes["lb"].order(0.0)] == ["b:q", "a:p"]
    for _ in range(3):
        there.targets["a:p"].leave()
    assert here.targets["a:p"].busy() == 0
    here.close()
    there.close()
    assert here.targets["a:p"].shared is None
    assert not list(tmp_path.glob("*.inflight"))
