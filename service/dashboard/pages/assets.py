"""The dashboard's one stylesheet and one script (served by the API; no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from service.dashboard.router import DashboardRoute
from service.errors import NotFoundError

STATIC = Path(__file__).resolve().parent.parent / "static"
_TYPES = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}

router = APIRouter(route_class=DashboardRoute)


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """One of the fixed asset files; anything else is a 404 (no path is built from the name)."""
    if name not in _TYPES:
        raise NotFoundError(f"no dashboard asset {name!r}")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=_TYPES[name],
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
