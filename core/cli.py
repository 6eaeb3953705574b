"""The `lowbit` command line.

Engine commands (quantize, validate, export, analyze, ...) live in core/commands/;
commands of other packages (service: serve, submit, jobs, db ...) register through the
``lowbit.commands`` entry-point group, so this module never imports service or worker.

Contract for a command module: ``register(subparsers: argparse._SubParsersAction) -> None``
adds one or more sub-parsers and sets ``func=<callable(args) -> int>`` on each. The exit code
is the callable's return value. Exit codes scripts can rely on are in core/commands/exit_codes.py.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

from core.errors import LowbitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description="Quantize models for fixed-point targets.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Engine commands: every module in core/commands with a register() function.
    import core.commands as commands_pkg

    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"core.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    # Commands of other installed packages.
    for ep in entry_points(group="lowbit.commands"):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
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
