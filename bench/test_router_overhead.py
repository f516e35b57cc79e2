"""The router overhead bench runs end to end (tiny numbers, nothing timed or asserted about speed)."""

from __future__ import annotations

from pathlib import Path

from bench.smoke import run_bench


def test_router_overhead_quick(tmp_path: Path) -> None:
    out = tmp_path / "router_overhead.json"
    args = ["--quick", "--requests", "5", "--warmup", "1", "--events-c1", "20", "--concurrency", "4"]
    args += ["--duration", "0.5", "--load-warmup", "0.3", "--events", "30", "--paced-events", "5", "--gap", "0.01"]
    results, stdout = run_bench("router_overhead", args, out)
    assert {"machine", "native", "concurrency_1", "load", "targets", "failures_total"} <= set(results)
    assert {"nproc", "cpu_model", "granian"} <= set(results["machine"])
    c1 = results["concurrency_1"]
    assert c1["direct"]["ok"] == c1["router"]["ok"] == 5
    assert {"added_ttfe_p50_ms", "added_ttfe_p99_ms", "router_cpu_us_per_request"} <= set(c1)
    assert set(results["load"]) == {"burst", "paced"}
    for phase in results["load"].values():
        for target in ("direct", "router"):
            assert {"events_per_s", "cpu", "cpu_us_per_event", "failures"} <= set(phase[target])
            assert phase[target]["failures"]["count"] == 0
            assert phase[target]["events"] > 0
    assert results["failures_total"] == 0
    assert "Concurrency 1" in stdout
