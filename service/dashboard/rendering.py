"""The dashboard's Jinja2 environment: templates, filters, and the one function that renders a page.

Autoescaping is on for every template, so values from the database (names, log lines, error messages)
can never inject markup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).with_name("templates")
STATUS_LABELS = {
    "queued": "Queued",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelling": "Cancelling",
    "cancelled": "Cancelled",
}


def human_bytes(size: int | None) -> str:
    """``1536`` -> ``'1.5 KiB'``; None (not uploaded yet) -> an em dash."""
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def when(value: datetime | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC``; None -> an em dash."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(fraction: float | None) -> str:
    """``0.425`` -> ``'42.5%'`` (progress and fractions)."""
    return "—" if fraction is None else f"{100 * max(0.0, min(1.0, fraction)):.0f}%"


def number(value: Any) -> str:
    """Metric values: floats with 4 significant digits, everything else as text."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(bytes=human_bytes, when=when, percent=percent, number=number)
    env.globals["status_labels"] = STATUS_LABELS
    return env


class Renderer:
    """Renders dashboard templates into HTML responses with the common context (user, CSRF token)."""

    def __init__(self) -> None:
        self.env = make_environment()

    def page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """``template`` rendered with ``context`` plus ``request``, ``viewer`` and ``csrf``."""
        viewer = getattr(request.state, "dashboard_viewer", None)
        context.setdefault("nav", "")
        html = self.env.get_template(template).render(
            request=request,
            viewer=viewer,
            csrf=viewer.csrf if viewer else "",
            **context,
        )
        headers = {
            "Cache-Control": "no-store",
            # Pages load only their own stylesheet and script; presigned plot images may be on the store.
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data: http: https:; frame-ancestors 'none'; "
                "base-uri 'none'; form-action 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        }
        return HTMLResponse(html, status_code=status_code, headers=headers)
