"""The recorded provider streams (`tests/fixtures/<dialect>/*.sse`, sources in SOURCES.md there)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_files(dialect: str) -> list[Path]:
    """The recorded upstream streams of one dialect (`chat_completions`, `anthropic`, `responses`)."""
    return sorted((FIXTURES / dialect).glob("*.sse"))
