"""The memory bench runs end to end (a few streams, nothing asserted about memory)."""

from __future__ import annotations

from pathlib import Path

from bench.smoke import run_bench


def test_memory_small(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    args = ["--streams", "6", "--steps", "2", "--waves", "2", "--events", "30", "--gap", "0.1", "--settle", "0.3"]
    args += ["--slow-events", "2000", "--stall", "0.3"]
    results, stdout = run_bench("memory", args, out)
    waves = results["open_streams"]
    assert set(waves) == {"idle", "events_per_stream", "gap_s", "wave_1", "wave_2"}
    for wave in ("wave_1", "wave_2"):
        assert waves[wave]["streams"] == 6
        assert waves[wave]["failed"] == 0
        assert [level["open_streams"] for level in waves[wave]["levels"]] == [3, 6]
        assert waves[wave]["levels"][0]["worker"] > 0
    assert set(results["slow_reader"]) == {"asgi (default)", "rsgi"}
    assert all(slow["complete"] for slow in results["slow_reader"].values())
    assert "slow reader" in stdout
