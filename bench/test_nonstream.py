"""The non-streaming bench runs end to end (tiny rates, nothing asserted about speed)."""

from __future__ import annotations

from pathlib import Path

from bench.smoke import run_bench


def test_nonstream_small(tmp_path: Path) -> None:
    out = tmp_path / "nonstream.json"
    args = ["--rates", "20,40", "--duration", "0.5", "--warmup", "0.2", "--latency-ms", "5", "--store", "memory"]
    results, stdout = run_bench("nonstream", args, out)
    assert [level["rate"] for level in results["levels"]] == [20, 40]
    for level in results["levels"]:
        assert level["router"]["errors"] == level["direct"]["errors"] == level["floor"]["errors"] == 0
        assert level["floor"]["ok"] > 0  # Granian's floor app answered too
        assert level["router"]["ok"] > 0 and level["direct"]["ok"] > 0
        assert level["router"]["cpu_us_per_request"] >= 0  # (10 ms CPU ticks: may read 0 in a tiny run)
        assert level["added_p99_ms"] is not None
    assert set(results["target"]) == {"best_rate_within_bound", "requests_per_s_per_core", "met"}
    assert "req/s/core" in stdout and "floor ms" in stdout
