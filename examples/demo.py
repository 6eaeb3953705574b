"""The README's first command (`make demo`): the whole service on this machine, driven through its API.

1. builds the bundled example (the digits CNN, trained in seconds on scikit-learn's digits data; cached),
2. starts ``lowbit serve`` in the background (embedded mode: SQLite, local object store, filesystem
   broker) on a free port with a temporary data directory,
3. uploads the model, calibration and evaluation data and creates an ``autoquant`` job (W8A8, at most
   one point of accuracy lost) through the REST API,
4. follows the job with live progress (stage and percent), downloads its artifacts (model.onnx,
   model.encodings, model_qdq.onnx, metrics.json, reports) and prints the results table
   (FP32 vs simulated vs ONNX Runtime) and the dashboard URL,
5. stops the server it started (``--keep-serving`` leaves it running to browse the dashboard).

    python -m examples.demo [--keep-serving] [--data-dir DIR] [--port N] [--out out/demo]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from examples.demo_server import BackgroundServer, free_port, start_server
from examples.digits import build
from service.client import ClientError, LowbitClient
from service.commands.results import results_table  # the table `lowbit submit --wait` prints

# The onnxruntime_cpu preset simulates ONNX Runtime's CPU arithmetic (7-bit weights where its u8 x s8
# kernels would saturate, int32 bias), so the simulated score is the one model_qdq.onnx gets.
JOB = {
    "technique": "autoquant",
    "param_bw": 8,
    "output_bw": 8,
    "allowed_accuracy_drop": 0.01,
    "preset": "onnxruntime_cpu",
}


def _progress() -> Any:
    tty = sys.stdout.isatty()
    last: list[str] = [""]

    def show(event: dict[str, Any]) -> None:
        pct = 100 * float(event.get("progress") or 0)
        bar = "#" * int(pct / 5)
        line = f"  {event.get('status', ''):<9} {event.get('stage') or '-':<10} [{bar:<20}] {pct:5.1f}%"
        if event.get("eta_s"):
            line += f"  eta {float(event['eta_s']):.0f}s"
        if line != last[0]:
            last[0] = line
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)

    return show


def run_demo(server: BackgroundServer, out: Path, keep_serving: bool = False) -> int:
    """Submit the example through the API of ``server``, follow it, download and report; exit code."""
    paths = build()
    print(f"example model: digits CNN, FP32 accuracy {paths.fp32_accuracy:.4f} on {paths.eval_data.name}")
    with LowbitClient(server.url, server.api_key) as client:
        version = client.upload_model(paths.model_pt2, name="digits")
        calib = client.upload_dataset(paths.calib_data, name="digits-calib", kind="calibration")
        evald = client.upload_dataset(paths.eval_data, name="digits-eval", kind="evaluation")
        print(
            f"uploaded model {version['model_id']} v{version['version']}, datasets {calib['id']}, {evald['id']}"
        )
        spec = {
            "model_id": version["model_id"],
            "model_version": version["version"],
            "calib_dataset_id": calib["id"],
            "eval_dataset_id": evald["id"],
            **JOB,
        }
        job = client.submit(spec)
        print(f"job {job['id']}: {JOB['technique']} W{JOB['param_bw']}A{JOB['output_bw']}", flush=True)
        job = client.wait(job["id"], on_update=_progress(), timeout_s=1800)
        if sys.stdout.isatty():
            print()
        dashboard = f"{server.url}/dashboard/jobs/{job['id']}"
        if job["status"] != "succeeded":
            print(f"job {job['status']}: {json.dumps(job.get('error'))}", file=sys.stderr)
            print(f"dashboard: {dashboard}")
            return 1
        files = client.download(job["id"], out)
    print(f"artifacts in {out}/: {', '.join(sorted(p.name for p in files))}")
    metrics = job["metrics"]
    aq = metrics.get("autoquant") or {}
    if aq:
        print(f"AutoQuant: {aq.get('message', '')}")
    print("\nresults on the held-out digits (accuracy):")
    print(results_table(metrics))
    print(f"\ndashboard: {dashboard}")
    if keep_serving:
        print(f"  sign in with the API key in {server.data_dir / 'api_key'}")
    else:
        print("  (served while lowbit serve runs: `make demo ARGS=--keep-serving` keeps it up to browse)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--keep-serving", action="store_true", help="leave `lowbit serve` running afterwards")
    parser.add_argument("--data-dir", help="data directory of the server (default: a new temporary one)")
    parser.add_argument("--port", type=int, help="API port (default: a free one)")
    parser.add_argument(
        "--out", default="out/demo", help="where artifacts are downloaded (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="lowbit-demo-"))
    print("building the example model (cached after the first run) ...", flush=True)
    build()
    print(f"starting lowbit serve (data directory {data_dir}) ...", flush=True)
    try:
        server = start_server(data_dir.resolve(), args.port or free_port())
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    print(f"lowbit serve is up at {server.url} (pid {server.proc.pid}, logs in {data_dir}/logs)", flush=True)
    code = 1
    try:
        code = run_demo(server, Path(args.out), args.keep_serving)
    except ClientError as exc:
        print(f"demo: service error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    finally:
        if args.keep_serving and code == 0:
            print(f"lowbit serve keeps running at {server.url}; stop it with: kill {server.proc.pid}")
        else:
            print("stopping lowbit serve ...", flush=True)
            server.stop()
            if not args.data_dir:
                shutil.rmtree(data_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
