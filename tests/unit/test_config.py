"""The TOML config: what it accepts, and how a bad file fails (naming the key and the line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ferroute.config import ConfigError, default_settings, load_settings, parse_settings

GOOD = """
[server]
api_keys = ["sk-a", "sk-b"]
port = 9000
default_provider = "vllm"

[timeouts]
connect = 3
first_event = 30.5
idle = 20

[limits]
max_body_bytes = 1048576
max_json_depth = 32

[store]
backend = "sqlite"
path = "ferroute.sqlite3"

[[providers]]
name = "vllm"
kind = "chat_completions"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "VLLM_API_KEY"
models = ["Qwen/Qwen3-8B"]

[[providers]]
name = "mock"
kind = "mock"
"""


def test_a_full_config_parses() -> None:
    settings = parse_settings(GOOD)
    assert settings.server.api_keys == ["sk-a", "sk-b"]
    assert settings.server.port == 9000
    assert settings.timeouts.first_event == 30.5
    assert settings.limits.max_json_depth == 32
    assert settings.store is not None and settings.store.backend == "sqlite"
    assert [p.name for p in settings.providers] == ["vllm", "mock"]
    assert settings.providers[0].api_key_env == "VLLM_API_KEY"


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = parse_settings(GOOD).providers[0]
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert provider.api_key() is None
    monkeypatch.setenv("VLLM_API_KEY", "sk-upstream")
    assert provider.api_key() == "sk-upstream"


def test_no_config_gives_the_mock_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    settings = load_settings(None)
    assert [(p.name, p.kind) for p in settings.providers] == [("mock", "mock")]
    assert settings.server.default_provider == "mock"
    assert settings.store is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert [p.name for p in default_settings().providers] == ["mock", "openai"]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    providers = default_settings().providers
    assert [(p.name, p.kind, p.base_url) for p in providers[1:]] == [
        ("openai", "chat_completions", "https://api.openai.com/v1"),
        ("anthropic", "anthropic", "https://api.anthropic.com/v1"),
    ]


def test_a_config_without_providers_gets_the_mock() -> None:
    settings = parse_settings('[server]\napi_keys = ["k"]\n')
    assert [(p.name, p.kind) for p in settings.providers] == [("mock", "mock")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # syntax errors: tomllib's own line and column
        ("[server]\nport = = 1\n", "line 2"),
        # an unknown key, on line 3
        ("[server]\nport = 1\nbogus = true\n", ":3: server.bogus: unknown key"),
        # a wrong type
        ('[server]\n\nport = "80"\n', ":3: server.port: Input should be a valid integer"),
        # a value out of range
        ("[timeouts]\nidle = -1\n", ":2: timeouts.idle: Input should be greater than 0"),
        # the second provider's key
        (
            '[[providers]]\nname = "a"\nkind = "mock"\n\n[[providers]]\nname = "b"\nkind = "nope"\n',
            ":7: providers[1].kind: Input should be",
        ),
        # a required key missing: the provider's table line
        (
            '[[providers]]\nname = "a"\nkind = "mock"\n\n[[providers]]\nkind = "mock"\n',
            ":5: providers[1].name: required",
        ),
        # an HTTP kind without base_url
        ('[[providers]]\nname = "a"\nkind = "chat_completions"\n', "a chat_completions provider needs base_url"),
        ('[[providers]]\nname = "a"\nkind = "anthropic"\n', "an anthropic provider needs base_url"),
        ('[[providers]]\nname = "a"\nkind = "responses"\n', "a responses provider needs base_url"),
        (
            '[[providers]]\nname = "a"\nkind = "anthropic"\nbase_url = "x"\ndefault_max_tokens = 0\n',
            "default_max_tokens",
        ),
        ('[server]\ndefault_provider = "x"\n', "server.default_provider 'x' is not a provider name"),
        ('[[providers]]\nname = "a"\nkind = "mock"\n[[providers]]\nname = "a"\nkind = "mock"\n', "two providers"),
        ('[store]\nbackend = "mongo"\n', ":2: store.backend:"),
    ],
)
def test_bad_configs_name_the_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "cfg.toml")
    assert str(info.value).startswith("cfg.toml")
    assert expected in str(info.value)


def test_serve_refuses_a_bad_config_at_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\napi_keys = ["k"]\nworkerz = 2\n')
    result = subprocess.run(
        [sys.executable, "-m", "ferroute", "serve", "--config", str(config), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{config}:3: server.workerz: unknown key" in result.stderr


def test_serve_refuses_a_missing_config_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferroute", "serve", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "cannot read the config file" in result.stderr
