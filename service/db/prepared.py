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


@dataclass(frozen=True)
class Prepared:
    """SQL text with named placeholders, its parameters' bind processors and its columns' result processors."""

    sql: str
    _params: Callable[[Mapping[str, Any]], dict[str, Any]]
    _binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    columns: tuple[str, ...]
    _results: tuple[_Processor, ...]

    @classmethod
    def compile(cls, stmt: ClauseElement, dialect: Dialect) -> Prepared:
        """Compile ``stmt`` for ``dialect`` (whose paramstyle must name parameters: named or pyformat)."""
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
        binds = []
        for bind, name in compiled.bind_names.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((name, process))
        selected: Sequence[Any] = getattr(stmt, "selected_columns", None) or ()
        columns = tuple(c.name for c in selected)
        results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in selected)

        def construct(values: Mapping[str, Any]) -> dict[str, Any]:
            # Fills in the statement's own literal parameters (e.g. ``status = 'ready'``) too.
            return dict(compiled.construct_params(values) or {})

        return cls(str(compiled), construct, tuple(binds), columns, results)

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The driver parameters for ``values`` (keyed by the statement's bind names)."""
        params = self._params(values)
        for name, process in self._binds:
            params[name] = process(params[name])
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
