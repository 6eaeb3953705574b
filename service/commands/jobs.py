"""Client commands on jobs: submit, jobs, job, cancel, rerun, logs, download (API; LOWBIT_URL/KEY)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.client import DATASET_SUFFIXES, MODEL_SUFFIXES, TERMINAL, LowbitClient
from service.commands.exit_codes import BAD_INPUT, CANCELLED, FAILURE, OK, BadInputError
from service.commands.results import dashboard_url, print_finished, progress_printer, reconnect_notice

TECHNIQUES = ("quantsim", "ptq", "autoquant", "qat", "analyze")


def json_object(text: str) -> dict[str, Any]:
    """argparse type of --params: a JSON object (bad JSON is a usage error, exit 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({exc.msg} at character {exc.pos}): {text!r}"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object such as \'{{"steps": ["cle"]}}\', got {text!r}'
        )
    return value


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _local_file(path: str, suffixes: dict[str, str], what: str) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise BadInputError(f"{path}: {what} files must end in {', '.join(suffixes)}")
    if not p.is_file():
        raise BadInputError(f"{path}: no such file")
    return p


def _quantsim_config(path: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{path}: a quantsim config is a JSON object")
    return value


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The job spec of `lowbit submit` without the uploaded inputs' ids."""
    spec: dict[str, Any] = {
        "technique": args.technique,
        "param_bw": args.param_bw,
        "output_bw": args.output_bw,
        "scheme": args.scheme,
        "encodings_format": args.encodings_format,
        "compute": args.compute,
        "priority": args.priority,
        "params": args.params or {},
    }
    optional = {"allowed_accuracy_drop": args.allowed_drop, "preset": args.preset, "name": args.name}
    spec.update({k: v for k, v in optional.items() if v is not None})
    if args.label:
        spec["labels"] = dict(args.label)
    if args.config:
        spec["quantsim_config"] = _quantsim_config(args.config)
    return spec


def submit(args: argparse.Namespace) -> int:
    """Check the files and the spec, upload (identical content is reused), create the job."""
    model = _local_file(args.model, MODEL_SUFFIXES, "model")
    calib = _local_file(args.calib, DATASET_SUFFIXES, "data")
    evald = _local_file(args.eval, DATASET_SUFFIXES, "data") if args.eval else None
    spec = build_spec(args)
    with LowbitClient() as client:
        client.validate_job(spec)  # the whole spec, server-side, before any upload
        version = client.upload_model(model, name=args.model_name)
        spec["model_id"], spec["model_version"] = version["model_id"], version["version"]
        spec["calib_dataset_id"] = client.upload_dataset(calib, kind="calibration")["id"]
        if evald is not None:
            spec["eval_dataset_id"] = client.upload_dataset(evald, kind="evaluation")["id"]
        job = client.submit(spec)
        print(f"dashboard: {dashboard_url(client.url, job['id'])}", file=sys.stderr)
        if not (args.wait or args.download):
            print(json.dumps(job, indent=2) if args.json else job["id"])
            return OK
        if not args.json:
            print(job["id"])
        return _follow(client, job["id"], args.json, args.download)


def _follow(client: LowbitClient, job_id: str, as_json: bool, download: str | None) -> int:
    # Progress and reconnect notices go to stderr, so stdout stays the table (or JSON) alone.
    job = client.wait(job_id, on_update=progress_printer(), on_reconnect=reconnect_notice())
    code = print_finished(job, client.url, as_json)
    if download and job["status"] == "succeeded":
        for path in client.download(job_id, download):
            print(path, file=sys.stderr if as_json else sys.stdout)
    return code


def list_jobs(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        rows = client.jobs(limit=args.limit, status=args.status, technique=args.technique)
    if args.json:
        print(json.dumps(rows, indent=2))
        return OK
    print(f"{'ID':<26}  {'STATUS':<10}  {'TECHNIQUE':<9}  {'PROGRESS':>8}  {'CREATED':<25}  NAME")
    for job in rows:
        name = (job.get("spec") or {}).get("name") or ""
        print(
            f"{job['id']:<26}  {job['status']:<10}  {job['technique']:<9}  {100 * job['progress']:7.1f}%  "
            f"{job['created_at']:<25}  {name}"
        )
    return OK


def show_job(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        if args.wait:
            return _follow(client, args.id, args.json, None)
        job = client.job(args.id)
    if args.json or job["status"] not in TERMINAL:
        print(json.dumps(job, indent=2))
        return OK
    return print_finished(job, client.url, as_json=False)


def cancel(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        print(client.cancel(args.id)["status"])
    return OK


def rerun(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        job = client.rerun(args.id)
        print(f"dashboard: {dashboard_url(client.url, job['id'])}", file=sys.stderr)
        print(job["id"])
        return _follow(client, job["id"], False, None) if args.wait else OK


def logs(args: argparse.Namespace) -> int:
    with LowbitClient() as client:
        for line in client.logs(args.id):
            print(f"{line['created_at']}  {line['level']:<7} {line['message']}")
    return OK


def download(args: argparse.Namespace) -> int:
    """Download a finished job's artifacts; a failed, cancelled or unfinished job is an error."""
    with LowbitClient() as client:
        if args.wait:
            job = client.wait(args.id, on_update=progress_printer(), on_reconnect=reconnect_notice())
        else:
            job = client.job(args.id)
        if job["status"] != "succeeded":
            reason = (job.get("error") or {}).get("message") or job.get("stage") or ""
            print(f"lowbit: error: job {args.id} is {job['status']}: nothing to download. {reason}".rstrip(),
                  file=sys.stderr)  # fmt: skip
            codes = {"failed": FAILURE, "cancelled": CANCELLED}
            return codes.get(job["status"], BAD_INPUT)
        for path in client.download(args.id, args.dir):
            print(path)
    return OK


def add_submit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (.onnx or .pt2)")
    p.add_argument("--calib", required=True, help="calibration data (.npz or .safetensors)")
    p.add_argument(
        "--eval", help="evaluation data (.npz or .safetensors; a 'labels' array makes it accuracy)"
    )
    p.add_argument(
        "--technique", default="ptq", choices=TECHNIQUES, help="what to run (default: %(default)s)"
    )
    p.add_argument(
        "--model-name",
        help="model name; versions of one model keep one format (default: the file name, e.g. net.onnx)",
    )
    p.add_argument("--name", help="a name for this job (shown in lists and the dashboard)")
    p.add_argument(
        "--label", action="append", type=label, metavar="KEY=VALUE", help="a job label (repeatable)"
    )
    p.add_argument("--param-bw", type=int, default=8, help="weight bitwidth, 2-16 (default: %(default)s)")
    p.add_argument(
        "--output-bw", type=int, default=8, help="activation bitwidth, 4-32 (default: %(default)s)"
    )
    p.add_argument(
        "--scheme",
        default="min_max",
        choices=["min_max", "sqnr", "mse", "percentile"],
        help="range setting (default: %(default)s)",
    )
    p.add_argument(
        "--encodings-format",
        default="1.0.0",
        choices=["0.6.1", "1.0.0", "2.0.0"],
        help="AIMET encodings format (default: %(default)s)",
    )
    p.add_argument(
        "--allowed-drop", type=float, help="allowed accuracy drop, needed by autoquant (e.g. 0.01)"
    )
    p.add_argument("--compute", default="cpu", choices=["cpu", "gpu"], help="queue (default: %(default)s)")
    p.add_argument("--priority", type=int, default=5, help="0 (low) to 9 (high) (default: %(default)s)")
    p.add_argument(
        "--params",
        type=json_object,
        help='technique parameters as a JSON object, e.g. \'{"steps": ["cle"]}\'',
    )
    p.add_argument("--preset", help="quantsim config preset name (e.g. htp_v73)")
    p.add_argument("--config", help="quantsim config JSON file (AIMET format)")
    p.add_argument("--wait", action="store_true", help="follow the job, then print its results table")
    p.add_argument("--download", metavar="DIR", help="wait, then download the artifacts into DIR")
    p.add_argument("--json", action="store_true", help="print the job as JSON instead of a table")


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]
    )
    p.add_argument("--technique", choices=TECHNIQUES)
    p.add_argument(
        "--limit", type=int, default=20, help="at most this many, newest first (default: %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
