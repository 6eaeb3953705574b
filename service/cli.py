"""`lowbit` sub-commands of the service (registered through the ``lowbit.commands`` entry point).

submit, jobs, job, cancel, rerun, logs, download, models, datasets, schedules — API clients (see
service/client_config.py for where the URL and key come from); db upgrade, admin
create-project/create-key — operate on the database of LOWBIT_DATABASE_URL; serve-api — run the API.

Each command is added by a literal ``subparsers.add_parser(name, help=...)`` here: core/cli.py reads
those from this file to list and dispatch commands without importing anything (core/command_catalog.py).
The commands themselves live in service/commands/; every one runs under ``guard`` (exit codes, no
traceback).
"""

from __future__ import annotations

import argparse
import sys

# httpx imports its own command line (click and rich, about a third of a second) whenever those are
# installed; lowbit never runs it, so a client command skips it (httpx falls back to a stub `main`).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from service.commands import admin, jobs, resources  # noqa: E402
from service.commands.exit_codes import (  # noqa: E402  re-exported: scripts and tests read the codes here
    ACCURACY_TARGET_MISSED,
    BAD_INPUT,
    CANCELLED,
    FAILURE,
    OK,
    SERVICE_ERROR,
    USAGE,
    guard,
)

__all__ = ["ACCURACY_TARGET_MISSED", "BAD_INPUT", "CANCELLED", "FAILURE", "OK", "SERVICE_ERROR", "USAGE"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the service commands to the ``lowbit`` parser."""
    p = subparsers.add_parser(
        "submit",
        help="upload a model and data (identical files are reused), create a job (API)",
        description="Check the spec on the server, upload the files (content already stored is reused), "
        "create the job and print its id and dashboard URL. Exit codes: 0 ok, 1 job failed, 2 usage, "
        "3 bad input, 4 accuracy target missed, 5 cancelled, 6 service error.",
    )
    jobs.add_submit_arguments(p)
    p.set_defaults(func=guard(jobs.submit))

    p = subparsers.add_parser("jobs", help="list jobs, newest first (API)")
    jobs.add_list_arguments(p)
    p.set_defaults(func=guard(jobs.list_jobs))

    p = subparsers.add_parser("job", help="show one job; --wait follows it and prints its results (API)")
    p.add_argument("id")
    p.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=guard(jobs.show_job))

    p = subparsers.add_parser("cancel", help="cancel a job (API)")
    p.add_argument("id")
    p.set_defaults(func=guard(jobs.cancel))

    p = subparsers.add_parser("rerun", help="run a job again with the same inputs and spec (API)")
    p.add_argument("id")
    p.add_argument("--wait", action="store_true", help="follow the new job until it finishes")
    p.set_defaults(func=guard(jobs.rerun))

    p = subparsers.add_parser("logs", help="print a job's log lines (API)")
    p.add_argument("id")
    p.set_defaults(func=guard(jobs.logs))

    p = subparsers.add_parser("download", help="download a finished job's artifacts (API)")
    p.add_argument("id")
    p.add_argument("dir")
    p.add_argument("--wait", action="store_true", help="wait for the job to finish first")
    p.set_defaults(func=guard(jobs.download))

    p = subparsers.add_parser("models", help="list models, or a model's versions with their sha256 (API)")
    resources.add_list_arguments(p, "a model id: list its versions")
    p.set_defaults(func=guard(resources.models))

    p = subparsers.add_parser("datasets", help="list datasets with their sha256 (API)")
    resources.add_list_arguments(p, argparse.SUPPRESS)
    p.set_defaults(func=guard(resources.datasets))

    p = subparsers.add_parser("schedules", help="list schedules, or a schedule's runs (API)")
    resources.add_list_arguments(p, "a schedule id: list its runs")
    p.set_defaults(func=guard(resources.schedules))

    p = subparsers.add_parser("db", help="database migrations")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations (LOWBIT_DATABASE_URL)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=guard(admin.db_upgrade))
    wait = db_sub.add_parser("wait", help="wait until migrations are applied (init containers)")
    wait.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    wait.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    wait.set_defaults(func=guard(admin.db_wait))

    p = subparsers.add_parser("admin", help="projects and API keys")
    admin_sub = p.add_subparsers(dest="admin_command", required=True)
    cp = admin_sub.add_parser("create-project")
    cp.add_argument("name")
    cp.set_defaults(func=guard(admin.admin))
    ck = admin_sub.add_parser("create-key", help="print a new API key for PROJECT (shown once)")
    ck.add_argument("project")
    ck.add_argument("--name", default="")
    ck.set_defaults(func=guard(admin.admin))

    p = subparsers.add_parser("serve-api", help="run the HTTP API only (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--public-url", help="base URL clients use (for the local store's signed URLs)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=guard(admin.serve_api))


def main(argv: list[str] | None = None) -> int:
    """``python -m service.cli``: the service commands alone, for the API image (no torch, fast start)."""
    parser = argparse.ArgumentParser(prog="lowbit", description="lowbit service commands")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
