"""Which module provides which `lowbit` command, learned from source text without importing it.

Importing every command module to build the parser costs seconds (the engine commands pull in torch),
so `lowbit --help` and `lowbit jobs` would pay for commands they never run. A command module's
``register(subparsers)`` names its commands in literal ``subparsers.add_parser("name", help="...")``
calls; reading those from the module's syntax tree costs milliseconds. A module whose register
function builds its parsers any other way is marked unknown and imported when the parser is built.
The catalog is kept between runs (core/command_cache.py) until a file or install it depends on changes.

>>> [c.name for s in discover() for c in s.commands]        # doctest: +SKIP
['analyze', 'autoquant', 'export', 'quantize', 'validate', 'cancel', 'submit', ...]
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from core import command_cache

ENTRY_POINT_GROUP = "lowbit.commands"
Register = Callable[[argparse._SubParsersAction], None]  # type: ignore[type-arg]


@dataclass(frozen=True)
class Command:
    name: str
    help: str


@dataclass(frozen=True)
class CommandSource:
    """A ``module:attr`` register function and the commands its source declares.

    ``commands`` is None when they could not be read from source (the module must be imported).
    """

    module: str
    attr: str
    commands: tuple[Command, ...] | None

    def load(self) -> Register:
        register: Register = getattr(importlib.import_module(self.module), self.attr)
        return register


def declared_commands(module: str, attr: str = "register") -> tuple[Command, ...] | None:
    """The commands that ``module.attr(subparsers)`` adds, read from its source; None if not readable.

    Only calls on the function's first parameter count, so nested sub-parsers (``db upgrade``) are not
    mistaken for top-level commands.
    """
    import ast

    origin = _origin(module)
    if origin is None or not origin.endswith(".py"):
        return None
    try:
        with open(origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=origin)
    except (OSError, SyntaxError, ValueError):
        return None
    func = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == attr),
        None,
    )
    if func is None or not func.args.args:
        return None
    param = func.args.args[0].arg
    found: list[Command] = []
    for node in ast.walk(func):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_parser"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == param
        ):
            continue
        if (
            not node.args
            or not isinstance(node.args[0], ast.Constant)
            or not isinstance(node.args[0].value, str)
        ):
            return None  # a computed name: only importing the module tells
        help_kw = next((k.value for k in node.keywords if k.arg == "help"), None)
        help_text = (
            help_kw.value if isinstance(help_kw, ast.Constant) and isinstance(help_kw.value, str) else ""
        )
        found.append(Command(node.args[0].value, help_text))
    return tuple(found) or None


def _origin(module: str) -> str | None:
    """The file ``module`` would be imported from (its parent packages are imported to find it)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.origin else None


def _engine_sources(files: list[str]) -> list[CommandSource]:
    import pkgutil

    import core.commands as commands_pkg

    files.extend(commands_pkg.__path__)  # a module added or removed changes the directory
    sources = []
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = f"core.commands.{info.name}"
        origin = _origin(module)
        if origin is None:
            continue
        files.append(origin)
        with open(origin, encoding="utf-8") as fh:
            if "def register(" not in fh.read():
                continue  # shared helpers (options, exit_codes), not commands
        sources.append(CommandSource(module, "register", declared_commands(module)))
    return sources


def _discover_fresh(files: list[str]) -> list[CommandSource]:
    from importlib.metadata import entry_points

    sources = _engine_sources(files)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module, _, attr = ep.value.partition(":")
        module, attr = module.strip(), attr.strip() or "register"
        if (origin := _origin(module)) is not None:
            files.append(origin)
        sources.append(CommandSource(module, attr, declared_commands(module, attr)))
    return sources


def discover() -> list[CommandSource]:
    """Engine commands (modules in core/commands with a ``register``), then the ``lowbit.commands``
    entry points of installed packages (service, worker, ...); from core/command_cache.py while
    nothing they depend on changed."""
    rows = command_cache.load()
    if rows is not None:
        try:
            return [
                CommandSource(m, a, None if cmds is None else tuple(Command(n, h) for n, h in cmds))
                for m, a, cmds in rows
            ]
        except (TypeError, ValueError):
            pass  # a malformed cache: discover again
    files: list[str] = []
    sources = _discover_fresh(files)
    rows = [
        [s.module, s.attr, None if s.commands is None else [[c.name, c.help] for c in s.commands]]
        for s in sources
    ]
    command_cache.store(rows, files)
    return sources
