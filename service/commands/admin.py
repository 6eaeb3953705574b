"""Operator commands: db upgrade, admin create-project/create-key (LOWBIT_DATABASE_URL), serve-api."""

from __future__ import annotations

import argparse
import sys

from service.commands.exit_codes import FAILURE, OK, USAGE


def db_upgrade(args: argparse.Namespace) -> int:
    from service.db.migrate import upgrade
    from service.settings import get_settings

    upgrade(get_settings(), args.revision)
    print(f"database at {args.revision}")
    return OK


def db_wait(args: argparse.Namespace) -> int:
    """Wait until the database is at the newest migration (Kubernetes init containers: pods start only
    after the migration Job); exit 1 after ``--timeout`` seconds."""
    import time

    from service.db.migrate import at_head
    from service.settings import get_settings

    settings = get_settings()
    deadline = time.monotonic() + args.timeout
    while not at_head(settings):
        if time.monotonic() > deadline:
            print(
                f"lowbit: error: database not at the newest migration after {args.timeout} s", file=sys.stderr
            )
            return FAILURE
        time.sleep(args.interval)
    print("database at head")
    return OK


def admin(args: argparse.Namespace) -> int:
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


def serve_api(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.log_format import configure_logging
    from service.settings import get_settings

    settings = get_settings()
    if args.public_url:
        settings = settings.model_copy(update={"public_url": args.public_url})
    configure_logging(settings.log_format, args.log_level)
    # uvicorn's own loggers go through the root handler (one format); its access log is replaced by
    # lowbit.access (service/api/request_id.py), which carries the request id.
    uvicorn.run(
        create_app(settings), host=args.host, port=args.port, log_level=args.log_level, log_config=None,
        access_log=False,
    )  # fmt: skip
    return OK
