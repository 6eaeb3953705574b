"""`lowbit` sub-commands of the service (registered through the ``lowbit.commands`` entry point).

submit, jobs, job, cancel, download — API clients (LOWBIT_URL, LOWBIT_API_KEY);
db upgrade, admin create-project/create-key — operate on the database of LOWBIT_DATABASE_URL;
serve-api — run the API with uvicorn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.client import ClientError, LowbitClient

# The CLI's exit codes (same values as core/commands/exit_codes.py; service may not import core).
OK = 0
FAILURE = 1
USAGE = 2
ACCURACY_TARGET_MISSED = 4
CANCELLED = 5
SERVICE_ERROR = 6


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except ClientError as exc:
            print(f"lowbit: service error: {exc}", file=sys.stderr)
            return SERVICE_ERROR

    return run


def _progress_printer() -> Any:
    tty = sys.stderr.isatty()
    last: list[Any] = [None]

    def show(event: dict[str, Any]) -> None:
        line = f"{event['status']:<10} {event.get('stage') or '-':<14} {100 * (event.get('progress') or 0):5.1f}%"
        if event.get("eta_s"):
            line += f"  eta {event['eta_s']:.0f}s"
        if line != last[0]:
            last[0] = line
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return show


def _reconnect_notice() -> Any:
    def show(reason: str, delay_s: float) -> None:
        print(
            f"lowbit: API not answering ({reason}); reconnecting in {delay_s:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    return show


def _finish(job: dict[str, Any]) -> int:
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(json.dumps({k: job[k] for k in ("id", "status", "metrics", "error")}, indent=2))
    return {"succeeded": OK, "cancelled": CANCELLED}.get(job["status"], FAILURE)


def cmd_submit(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        version = client.upload_model(args.model, name=args.model_name)
        calib = client.upload_dataset(args.calib, kind="calibration")
        evald = client.upload_dataset(args.eval, kind="evaluation") if args.eval else None
        spec: dict[str, Any] = {
            "model_id": version["model_id"],
            "model_version": version["version"],
            "calib_dataset_id": calib["id"],
            "technique": args.technique,
            "param_bw": args.param_bw,
            "output_bw": args.output_bw,
            "scheme": args.scheme,
            "encodings_format": args.encodings_format,
            "compute": args.compute,
            "priority": args.priority,
            "params": json.loads(args.params) if args.params else {},
        }
        if evald:
            spec["eval_dataset_id"] = evald["id"]
        if args.allowed_drop is not None:
            spec["allowed_accuracy_drop"] = args.allowed_drop
        if args.preset:
            spec["preset"] = args.preset
        if args.config:
            spec["quantsim_config"] = json.loads(Path(args.config).read_text())
        job = client.submit(spec)
        print(job["id"])
        if not (args.wait or args.download):
            return OK
        job = client.wait(job["id"], on_update=_progress_printer(), on_reconnect=_reconnect_notice())
        code = _finish(job)
        if args.download and job["status"] == "succeeded":
            for path in client.download(job["id"], args.download):
                print(path)
        return code


def cmd_jobs(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        rows = client.jobs(limit=args.limit, status=args.status, technique=args.technique)
    print(f"{'ID':<26}  {'STATUS':<10}  {'TECHNIQUE':<9}  {'PROGRESS':>8}  CREATED")
    for job in rows:
        print(
            f"{job['id']:<26}  {job['status']:<10}  {job['technique']:<9}  {100 * job['progress']:7.1f}%  {job['created_at']}"
        )
    return OK


def cmd_job(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        if args.wait:
            return _finish(
                client.wait(args.id, on_update=_progress_printer(), on_reconnect=_reconnect_notice())
            )
        print(json.dumps(client.job(args.id), indent=2))
    return OK


def cmd_cancel(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        print(client.cancel(args.id)["status"])
    return OK


def cmd_download(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        for path in client.download(args.id, args.dir):
            print(path)
    return OK


def cmd_db(args: argparse.Namespace) -> int:
    from service.db.migrate import upgrade
    from service.settings import get_settings

    upgrade(get_settings(), args.revision)
    print(f"database at {args.revision}")
    return OK


def cmd_admin(args: argparse.Namespace) -> int:
    from service.db.repositories import projects
    from service.db.session import make_engine, make_sessionmaker, session_scope
    from service.errors import ServiceError
    from service.settings import get_settings

    engine = make_engine(get_settings())
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            if args.admin_command == "create-project":
                project = projects.create_project(session, args.name)
                print(project.id)
            else:
                project = projects.get_project_by_name(session, args.project)
                _, plaintext = projects.create_api_key(session, project, args.name)
                print(plaintext)  # shown once; only its hash is stored
    except ServiceError as exc:
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return USAGE
    finally:
        engine.dispose()
    return OK


def cmd_serve_api(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.settings import get_settings

    settings = get_settings()
    if args.public_url:
        settings = settings.model_copy(update={"public_url": args.public_url})
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return OK


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the service commands to the ``lowbit`` parser."""
    p = subparsers.add_parser("submit", help="upload a model and data, create a job (API)")
    p.add_argument("model", help="model file (.onnx or .pt2)")
    p.add_argument("--calib", required=True, help="calibration data (.npz or .safetensors)")
    p.add_argument("--eval", help="evaluation data (.npz or .safetensors, may hold 'labels')")
    p.add_argument("--technique", default="ptq", choices=["quantsim", "ptq", "autoquant", "qat", "analyze"])
    p.add_argument("--model-name", help="model name (default: the file name without suffix)")
    p.add_argument("--param-bw", type=int, default=8)
    p.add_argument("--output-bw", type=int, default=8)
    p.add_argument("--scheme", default="min_max", choices=["min_max", "sqnr", "mse", "percentile"])
    p.add_argument("--encodings-format", default="1.0.0", choices=["0.6.1", "1.0.0", "2.0.0"])
    p.add_argument("--allowed-drop", type=float, help="allowed accuracy drop (autoquant), e.g. 0.01")
    p.add_argument("--compute", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--priority", type=int, default=5)
    p.add_argument("--params", help="technique parameters as JSON")
    p.add_argument("--preset", help="quantsim config preset name")
    p.add_argument("--config", help="quantsim config JSON file")
    p.add_argument("--wait", action="store_true", help="follow the job with live progress")
    p.add_argument("--download", metavar="DIR", help="wait, then download the artifacts into DIR")
    p.set_defaults(func=_guard(cmd_submit))

    p = subparsers.add_parser("jobs", help="list jobs (API)")
    p.add_argument("--status")
    p.add_argument("--technique")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_guard(cmd_jobs))

    p = subparsers.add_parser("job", help="show one job (API)")
    p.add_argument("id")
    p.add_argument("--wait", action="store_true")
    p.set_defaults(func=_guard(cmd_job))

    p = subparsers.add_parser("cancel", help="cancel a job (API)")
    p.add_argument("id")
    p.set_defaults(func=_guard(cmd_cancel))

    p = subparsers.add_parser("download", help="download a job's artifacts (API)")
    p.add_argument("id")
    p.add_argument("dir")
    p.set_defaults(func=_guard(cmd_download))

    p = subparsers.add_parser("db", help="database migrations")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations (LOWBIT_DATABASE_URL)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db)

    p = subparsers.add_parser("admin", help="projects and API keys")
    admin_sub = p.add_subparsers(dest="admin_command", required=True)
    cp = admin_sub.add_parser("create-project")
    cp.add_argument("name")
    cp.set_defaults(func=cmd_admin)
    ck = admin_sub.add_parser("create-key", help="print a new API key for PROJECT (shown once)")
    ck.add_argument("project")
    ck.add_argument("--name", default="")
    ck.set_defaults(func=cmd_admin)

    p = subparsers.add_parser("serve-api", help="run the HTTP API only (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--public-url", help="base URL clients use (for the local store's signed URLs)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve_api)


def main(argv: list[str] | None = None) -> int:
    """``python -m service.cli``: the service commands alone, for the API image (no torch, fast start)."""
    parser = argparse.ArgumentParser(prog="lowbit", description="lowbit service commands")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
