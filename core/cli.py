"""The `lowbit` command line.

Engine commands (quantize, validate, export, analyze, ...) live in core/commands/;
commands of other packages (service: serve, submit, jobs, db ...) register through the
``lowbit.commands`` entry-point group, so this module never imports service or worker.

Contract for a command module: ``register(subparsers: argparse._SubParsersAction) -> None``
adds one or more sub-parsers and sets ``func=<callable(args) -> int>`` on each. The exit code
is the callable's return value. Exit codes scripts can rely on are in core/commands/exit_codes.py.

Dispatch is lazy: only the module that provides the command being run is imported (the others are
known from their source, see core/command_catalog.py), so a client command such as `lowbit jobs`
never pays for torch, and `lowbit --help` imports no command module at all.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from core.command_catalog import CommandSource, discover
from core.commands.exit_codes import USAGE
from core.errors import LowbitError


def _version() -> str:
    # importlib.metadata costs more to import than the rest of `lowbit --help`: only --version pays.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lowbit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``: like argparse's "version" action, with the version looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(f"lowbit {_version()}")  # on stdout, as argparse's own version action prints it
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `lowbit` parser; with ``command`` only the module providing it is imported, without it
    every command is listed from its declared name and help (and the undeclared ones imported)."""
    parser = argparse.ArgumentParser(prog="lowbit", description="Quantize models for fixed-point targets.")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sources = discover()
    provider = _provider_of(command, sources) if command else None
    if provider is not None:
        provider.load()(sub)
        return parser
    for source in sources:
        if source.commands is None:
            source.load()(sub)
        else:
            for cmd in source.commands:
                sub.add_parser(cmd.name, help=cmd.help, add_help=False)
    return parser


def _provider_of(command: str, sources: list[CommandSource]) -> CommandSource | None:
    for source in sources:
        if source.commands is not None and any(c.name == command for c in source.commands):
            return source
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return USAGE
    try:
        return int(func(args) or 0)
    except LowbitError as exc:
        # One clear line for the user; the exit code tells scripts which class of failure it was.
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lowbit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
