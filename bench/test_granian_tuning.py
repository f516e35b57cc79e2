"""The Granian tuning bench runs end to end (two variants, tiny sizes, nothing asserted about speed)."""

from __future__ import annotations

from pathlib import Path

from bench.smoke import run_bench


def test_granian_tuning_small(tmp_path: Path) -> None:
    out = tmp_path / "tuning.json"
    tiny = "--quick --requests 5 --warmup 1 --events-c1 20 --concurrency 4 --duration 0.5 --load-warmup 0.3"
    tiny += " --events 30 --paced-events 5 --gap 0.01"
    args = ["--rounds", "1", "--variants", ",--loop asyncio", "--bench-args", tiny]
    results, stdout = run_bench("granian_tuning", args, out, timeout=200)
    assert list(results["variants"]) == ["", "--loop asyncio"]
    for variant in results["variants"].values():
        assert variant["failures"] == 0
        assert variant["burst_events_per_s"] > 0
        assert variant["added_ttfe_p99_ms"] is not None
    assert "(defaults)" in stdout and "--loop asyncio" in stdout
