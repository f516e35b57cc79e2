"""For the benches' smoke tests: run a bench module end to end at a tiny size, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_bench(module: str, args: list[str], out: Path, *, timeout: float = 100) -> tuple[dict[str, Any], str]:
    """`python -m bench.<module> ARGS --out OUT`; fails the test on a non-zero exit. The JSON it wrote, its stdout."""
    process = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert process.returncode == 0, process.stdout + process.stderr
    results: dict[str, Any] = json.loads(out.read_text())
    return results, process.stdout
