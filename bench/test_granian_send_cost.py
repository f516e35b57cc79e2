"""The send-cost floor bench runs end to end (tiny sizes, nothing asserted about speed)."""

from __future__ import annotations

from pathlib import Path

from bench.smoke import run_bench


def test_granian_send_cost_small(tmp_path: Path) -> None:
    out = tmp_path / "send_cost.json"
    args = ["--sends", "20", "--concurrency", "2", "--duration", "0.5", "--rounds", "1"]
    results, _ = run_bench("granian_send_cost", args, out)
    assert {run["interface"] for run in results["runs"]} == {"asgi", "rsgi"}
    for run in results["runs"]:
        assert run["errors"] == 0 and run["sends"] > 0 and run["sends"] % 20 == 0
        assert run["server_cpu_us_per_send"] >= 0  # (CPU time has 10 ms ticks: may read 0 in a tiny run)
    assert set(results["median"]) == {"asgi", "rsgi"}
