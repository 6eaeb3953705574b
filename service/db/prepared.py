"""Core statements compiled once for a DBAPI connection used directly, without SQLAlchemy's execution.

Why it exists: the API's hottest statements (the job-status read, the job create) run on the event loop
on a driver connection (asyncio psycopg for PostgreSQL, sqlite3 for SQLite). SQLAlchemy's per-execute
work (cache-key lookup, result metadata, row objects) cost more than a local SQLite query itself, but
the statements and their column types stay defined once in Core: ``Prepared`` keeps the compiled SQL
and the types' own bind and result processors (JSON encoding, UTC datetimes, booleans), so values
are stored and read exactly as through SQLAlchemy.

>>> from sqlalchemy import column, select, table
>>> from sqlalchemy.dialects import sqlite
>>> q = Prepared.compile(select(column("x")).select_from(table("t")), sqlite_named())
>>> q.sql
'SELECT x \\nFROM t'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

_Processor = Callable[[Any], Any] | None


_MISSING = object()


@dataclass(frozen=True)
class Prepared:
    """SQL text with named placeholders, its parameters' bind processors and its columns' result processors."""

    sql: str
    # (placeholder name, key in the caller's values, the statement's own value, bind processor)
    _binds: tuple[tuple[str, str, Any, _Processor], ...]
    columns: tuple[str, ...]
    _results: tuple[_Processor, ...]

    @classmethod
    def compile(cls, stmt: ClauseElement, dialect: Dialect) -> Prepared:
        """Compile ``stmt`` for ``dialect`` (whose paramstyle must name parameters: named or pyformat)."""
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
        binds = []
        for bind, name in compiled.bind_names.items():
            if bind.callable is not None or bind.expanding:
                raise ValueError(
                    f"parameter {bind.key!r}: callable and expanding parameters are not supported"
                )
            own = _MISSING if bind.required else bind.value  # literals such as ``status = 'ready'``
            binds.append((name, bind.key, own, bind.type.dialect_impl(dialect).bind_processor(dialect)))
        selected: Sequence[Any] = getattr(stmt, "selected_columns", None) or ()
        columns = tuple(c.name for c in selected)
        results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in selected)
        return cls(str(compiled), tuple(binds), columns, results)

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The driver parameters for ``values`` (keyed by the statement's bind parameter keys); a
        parameter without a value of its own and missing from ``values`` is a KeyError."""
        params = {}
        for name, key, own, process in self._binds:
            value = values.get(key, own)
            if value is _MISSING:
                raise KeyError(f"a value is required for parameter {key!r}")
            params[name] = value if process is None else process(value)
        return params

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        """A driver row (in the statement's column order) as Python values keyed by column name."""
        return {
            name: value if process is None else process(value)
            for name, process, value in zip(self.columns, self._results, raw, strict=True)
        }


def sqlite_named() -> Dialect:
    """The SQLite dialect with ``:name`` placeholders (what sqlite3 accepts with a dict of parameters)."""
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect(paramstyle="named")  # type: ignore[no-any-return]
