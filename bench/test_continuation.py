"""Smoke run of bench/continuation.py: the report's structure only (timings are not asserted here)."""

from __future__ import annotations

from bench.continuation import run, table


def test_quick_run_reports_every_backend_and_kind() -> None:
    report = run(quick=True, requests=2)
    assert [result["backend"] for result in report["results"]] == ["sqlite", "redis"]
    for result in report["results"]:
        assert set(result["depths"]) == {"0", "2"}
        assert set(result["depths"]["0"]) == {"fresh", "inline"}
        deep = result["depths"]["2"]
        assert {"fresh", "inline", "continue", "added_vs_fresh_ms", "added_vs_inline_ms"} <= set(deep)
        for kind in ("fresh", "inline", "continue"):
            assert deep[kind]["p50_ms"] > 0
    assert [result["backend"] for result in report["store_reads"]] == ["sqlite", "redis"]
    for result in report["store_reads"]:
        assert set(result["depths"]["2"]) == {"two_round_trips", "one_per_turn"}
    assert table(report).count("| 2 |") == 4  # one row per backend in each table
