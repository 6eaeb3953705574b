"""What the client commands print: live progress, the results table, a finished job's summary."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from service.commands.exit_codes import ACCURACY_TARGET_MISSED, CANCELLED, FAILURE, OK


def progress_printer() -> Callable[[dict[str, Any]], None]:
    """An ``on_update`` for LowbitClient.wait: one line per change on stderr (rewritten on a tty)."""
    tty = sys.stderr.isatty()
    last: list[Any] = [None]

    def show(event: dict[str, Any]) -> None:
        pct = 100 * float(event.get("progress") or 0)
        line = f"{event.get('status', ''):<10} {event.get('stage') or '-':<14} {pct:5.1f}%"
        if event.get("eta_s"):
            line += f"  eta {float(event['eta_s']):.0f}s"
        if line != last[0]:
            last[0] = line
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return show


def reconnect_notice() -> Callable[[str, float], None]:
    """An ``on_reconnect`` for LowbitClient.wait: says on stderr that the API is being waited for."""

    def show(reason: str, delay_s: float) -> None:
        print(
            f"lowbit: API not answering ({reason}); reconnecting in {delay_s:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    return show


def results_table(metrics: dict[str, Any]) -> str:
    """The FP32 / simulated / ONNX Runtime table of a finished job's metrics ("" without an evaluation)."""
    ev = metrics.get("evaluation")
    if not ev:
        return ""
    rows = [("FP32 (PyTorch)", ev.get("fp32")), ("simulated (QuantSim)", ev.get("sim"))]
    if ev.get("onnxruntime") is not None:
        rows.append(("ONNX Runtime (model_qdq.onnx)", ev["onnxruntime"]))
    width = max(len(name) for name, _ in rows)
    metric = str(ev.get("metric", "score"))
    lines = [f"  {'model':<{width}}  {metric:>9}", f"  {'-' * width}  {'-' * 9}"]
    lines += [f"  {name:<{width}}  {_num(value):>9}" for name, value in rows]
    agreement = ev.get("sim_vs_onnxruntime")
    if isinstance(agreement, dict):
        top1, sqnr = agreement.get("top1_agreement"), agreement.get("sqnr_db")
        lines.append(f"  ONNX Runtime vs simulated: top-1 agreement {_num(top1)}, SQNR {_db(sqnr)}")
    if ev.get("warning"):
        lines.append(f"  WARNING: {ev['warning']}")
    return "\n".join(lines)


def _db(value: Any) -> str:
    return f"{value:.1f} dB" if isinstance(value, int | float) else "—"


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def outcome_code(job: dict[str, Any]) -> int:
    """The exit code a finished job stands for (README's table)."""
    if job["status"] == "cancelled":
        return CANCELLED
    if job["status"] != "succeeded":
        return FAILURE
    autoquant = (job.get("metrics") or {}).get("autoquant") or {}
    if autoquant.get("target_met") is False:
        return ACCURACY_TARGET_MISSED
    return OK


def dashboard_url(base_url: str, job_id: str) -> str:
    return f"{base_url}/dashboard/jobs/{job_id}"


def print_finished(job: dict[str, Any], base_url: str, as_json: bool) -> int:
    """Print a finished job (results table, or the job as JSON) and return its exit code."""
    if sys.stderr.isatty():
        print(file=sys.stderr)
    code = outcome_code(job)
    if as_json:
        print(json.dumps(job, indent=2))
        return code
    print(f"job {job['id']} {job['status']}")
    if job.get("model_version") is not None:
        print(f"model version {job['model_version']} sha256 {job.get('model_sha256') or '-'}")
    metrics = job.get("metrics") or {}
    autoquant = metrics.get("autoquant") or {}
    if autoquant.get("message"):
        print(f"AutoQuant: {autoquant['message']}")
    table = results_table(metrics)
    if table:
        print(table)
    error = job.get("error") or {}
    if error:
        print(f"error: {error.get('type', 'error')}: {error.get('message', '')}", file=sys.stderr)
        if error.get("report"):
            print("per-node report: `lowbit job ID --json` or the dashboard", file=sys.stderr)
    if code == ACCURACY_TARGET_MISSED:
        print("accuracy target missed (exit 4)", file=sys.stderr)
    print(f"dashboard: {dashboard_url(base_url, job['id'])}")
    return code
