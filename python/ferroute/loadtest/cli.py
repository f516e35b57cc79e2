"""The load-testing subcommands: `ferroute mock-upstream`, `ferroute bench load`, `ferroute bench sweep`.

`ferroute.cli` adds them with `add_subcommands(commands)`; each parser's `run` default is the
function that runs it (returning the exit status).
"""

from __future__ import annotations

import argparse
from typing import Any

from ferroute.loadtest import load, mock_upstream


def add_subcommands(subparsers: Any) -> None:
    """Adds `mock-upstream` and `bench {load,sweep}` to an argparse subparsers object."""
    mock = subparsers.add_parser(
        "mock-upstream", help="a fast mock LLM upstream (Chat Completions, Anthropic Messages, OpenAI Responses)"
    )
    mock_upstream.add_arguments(mock)
    mock.set_defaults(run=mock_upstream.run)
    bench = subparsers.add_parser("bench", help="load-test an Open Responses endpoint")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True)
    one = bench_commands.add_parser(
        "load", help="one load run: requests/s, errors, time to first event, event gaps; every stream checked"
    )
    load.add_load_arguments(one)
    one.set_defaults(run=load.run_load_command, command_name="load")
    sweep = bench_commands.add_parser("sweep", help="load runs over several concurrencies or rates, with plots")
    load.add_sweep_arguments(sweep)
    sweep.set_defaults(run=load.run_sweep_command, command_name="sweep")


def main(argv: list[str] | None = None) -> int:
    """The subcommands on their own (`python -m ferroute.loadtest.cli …`), until `ferroute.cli` wires them."""
    parser = argparse.ArgumentParser(prog="ferroute")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
