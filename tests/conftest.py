from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_files(dialect: str) -> list[Path]:
    """The recorded upstream streams of one dialect (`chat_completions`, `anthropic`, `responses`)."""
    return sorted((FIXTURES / dialect).glob("*.sse"))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
