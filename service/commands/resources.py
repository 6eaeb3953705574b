"""Client commands on what jobs are made from: models, datasets, schedules (API; LOWBIT_URL/KEY)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from service.client import LowbitClient
from service.commands.exit_codes import OK


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, int]]) -> None:
    """Print ``rows`` with (header, key, width) columns; the last column is not padded."""
    print("  ".join(f"{h:<{w}}" for h, _, w in columns).rstrip())
    for row in rows:
        cells = ["" if row.get(k) is None else str(row.get(k)) for _, k, _ in columns]
        print("  ".join(f"{c:<{w}}" for c, (_, _, w) in zip(cells, columns, strict=True)).rstrip())


def models(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        if args.id:
            versions = client.model_versions(args.id)
            if args.json:
                print(json.dumps(versions, indent=2))
                return OK
            cols = [("VERSION", "version", 7), ("FORMAT", "format", 6), ("STATUS", "status", 8),
                    ("SIZE", "size", 10), ("SHA256", "sha256", 64), ("CREATED", "created_at", 0)]  # fmt: skip
            _table(versions, cols)
            return OK
        rows = client.paged("/v1/models", args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return OK
    _table(
        rows,
        [
            ("ID", "id", 26),
            ("NAME", "name", 24),
            ("LATEST", "latest_version", 6),
            ("CREATED", "created_at", 0),
        ],
    )
    return OK


def datasets(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        rows = client.paged("/v1/datasets", args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return OK
    cols = [("ID", "id", 26), ("NAME", "name", 20), ("KIND", "kind", 11), ("FORMAT", "format", 11),
            ("STATUS", "status", 8), ("SHA256", "sha256", 64), ("CREATED", "created_at", 0)]  # fmt: skip
    _table(rows, cols)
    return OK


def schedules(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        if args.id:
            runs = client.paged(f"/v1/schedules/{args.id}/runs", args.limit)
            if args.json:
                print(json.dumps(runs, indent=2))
                return OK
            cols = [("FIRE TIME", "scheduled_for", 25), ("STATUS", "status", 10), ("JOB", "job_id", 26),
                    ("VERSION", "model_version", 7), ("REGRESSED", "regressed", 9), ("SHA256", "model_sha256", 0)]  # fmt: skip
            _table(runs, cols)
            return OK
        rows = client.paged("/v1/schedules", args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return OK
    cols = [("ID", "id", 26), ("NAME", "name", 20), ("MODEL", "model_name", 20), ("CRON", "cron", 14),
            ("TZ", "timezone", 14), ("ENABLED", "enabled", 7)]  # fmt: skip
    _table(rows, cols)
    return OK


def add_list_arguments(p: argparse.ArgumentParser, id_help: str) -> None:
    p.add_argument("id", nargs="?", help=id_help)
    p.add_argument("--limit", type=int, default=50, help="at most this many (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
