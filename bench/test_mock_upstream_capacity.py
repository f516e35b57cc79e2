"""The mock upstream capacity bench runs end to end (a few streams, nothing asserted about speed)."""

from __future__ import annotations

from pathlib import Path

from bench.smoke import run_bench


def test_mock_upstream_capacity_small(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    args = ["--concurrency", "2,8", "--duration", "0.6", "--warmup", "0.2", "--tokens", "20", "--gap-ms", "2"]
    results, stdout = run_bench("mock_upstream_capacity", args, out)
    runs = results["medians"]
    assert [(run["build"], run["concurrency"]) for run in runs] == [("current", 2), ("current", 8)]
    for run in runs:
        assert run["errors"] == 0, run["errors_by_kind"]
        assert run["events_per_s"] > 0 and run["client_events_per_s"] > 0
        # Paced: ~23 events per answer, one every 2 ms after the first two (~550 events/s per stream),
        # whatever the machine; an unpaced mock would send 100 times more.
        assert run["events_per_s"] < run["concurrency"] * 1000
        assert 1.0 < run["gap_ms_p50"] < 4.0
    assert "mock µs/event" in stdout
