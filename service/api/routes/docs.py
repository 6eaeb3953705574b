"""/docs: Swagger UI served from the swagger-ui-bundle package, so the docs work without internet
(FastAPI's default page loads its script and stylesheet from a CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from service.errors import NotFoundError

router = APIRouter(include_in_schema=False)

ASSETS = "/docs/assets"
_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def _assets_dir() -> Path:
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="lowbit API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    )


@router.get(ASSETS + "/{name}")
def swagger_asset(name: str) -> Response:
    """One of the fixed Swagger UI files; anything else is a 404 (no path is built from the name)."""
    if name not in _TYPES:
        raise NotFoundError(f"no docs asset {name!r}")
    return Response(
        (_assets_dir() / name).read_bytes(),
        media_type=_TYPES[name],
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
