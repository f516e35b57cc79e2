"""The send-cost floor bench runs end to end (tiny sizes, nothing asserted about speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_granian_send_cost_small(tmp_path: Path) -> None:
    out = tmp_path / "send_cost.json"
    args = ["--sends", "20", "--concurrency", "2", "--duration", "0.5", "--rounds", "1", "--out", str(out)]
    process = subprocess.run(
        [sys.executable, "-m", "bench.granian_send_cost", *args], cwd=REPO, capture_output=True, text=True, timeout=100
    )
    assert process.returncode == 0, process.stdout + process.stderr
    results = json.loads(out.read_text())
    assert {run["interface"] for run in results["runs"]} == {"asgi", "rsgi"}
    for run in results["runs"]:
        assert run["errors"] == 0 and run["sends"] > 0 and run["sends"] % 20 == 0
        assert run["server_cpu_us_per_send"] >= 0  # (CPU time has 10 ms ticks: may read 0 in a tiny run)
    assert set(results["median"]) == {"asgi", "rsgi"}
