"""``lowbit serve``: the whole service on one machine with no configuration (embedded mode).

    lowbit serve [--host 127.0.0.1] [--port 8000] [--data-dir .lowbit]

Migrates the SQLite database, makes sure a bootstrap API key exists, starts the API, a worker, the
outbox relay and beat under a supervisor, prints the URLs and the key, and runs until Ctrl-C or
SIGTERM, which stop every child.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time

import httpx

from worker.embedded.bootstrap import bootstrap
from worker.embedded.children import child_specs, gpu_count
from worker.embedded.datadir import DataDir, settings_environ
from worker.embedded.supervisor import ChildCrashLoopError, Supervisor, tail

OK = 0
FAILURE = 1
USAGE = 2
READY_TIMEOUT_S = 120.0


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _public_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"http://{shown}:{port}"


def _wait_ready(sup: Supervisor, url: str, stop: threading.Event) -> bool:
    """Poll /readyz (restarting children that die meanwhile) until it answers 200, or give up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        sup.poll()
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.3)
    return False


def cmd_serve(args: argparse.Namespace) -> int:
    """Run embedded mode until interrupted; exit code 0 on a requested stop, 1 on a crash loop."""
    logging.basicConfig(level=logging.INFO, format="lowbit serve: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe is noise
    if not 0 < args.port < 65536:
        print(f"lowbit: error: --port must be 1..65535, got {args.port}", file=sys.stderr)
        return USAGE
    if not _port_free(args.host, args.port):
        print(f"lowbit: error: {args.host}:{args.port} is in use; choose another --port", file=sys.stderr)
        return USAGE
    data = DataDir.at(args.data_dir)
    url = _public_url(args.host, args.port)
    settings = data.settings(url)
    key = bootstrap(data, settings)
    env = {**os.environ, **settings_environ(settings)}
    specs = child_specs(data, env, args.host, args.port, url, gpu_count(), args.concurrency, args.loglevel)
    sup = Supervisor(specs, stop_timeout_s=args.stop_timeout)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sup.start()
    try:
        if not _wait_ready(sup, url, stop):
            if stop.is_set():
                return OK
            print(f"lowbit: error: the API did not become ready; {data.logs / 'api.log'}:", file=sys.stderr)
            print(tail(data.logs / "api.log"), file=sys.stderr)
            return FAILURE
        data.url_file.write_text(url + "\n")
        print(f"lowbit serving at   {url}", flush=True)
        print(f"  API               {url}/v1   (OpenAPI docs: {url}/docs)")
        print(f"  dashboard         {url}/dashboard")
        print(f"  API key           {key}   (stored in {data.api_key_file}, mode 0600)")
        print(f"  data and logs     {data.root}")
        print(f"  processes         {', '.join(f'{n}={p}' for n, p in sup.pids().items())}")
        print("Press Ctrl-C to stop.", flush=True)
        sup.run(stop)
        return OK
    except ChildCrashLoopError as exc:
        print(f"lowbit: error: {exc}", file=sys.stderr)
        return FAILURE
    finally:
        print("lowbit serve: stopping", file=sys.stderr, flush=True)
        sup.stop()
        data.url_file.unlink(missing_ok=True)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``lowbit serve``."""
    p = subparsers.add_parser("serve", help="run API, worker, relay and scheduler on this machine (embedded)")
    p.add_argument("--host", default="127.0.0.1", help="address the API binds (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="API port (default: %(default)s)")
    p.add_argument(
        "--data-dir", default=".lowbit", help="database, objects, logs, key (default: %(default)s)"
    )
    p.add_argument("--concurrency", type=int, default=1, help="jobs run at once by the CPU worker")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="seconds children get to stop")
    p.add_argument("--loglevel", default="info", help="log level of the children (logs in DATA_DIR/logs)")
    p.set_defaults(func=cmd_serve)
