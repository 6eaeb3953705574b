"""The ``/dashboard`` router: page modules joined under one prefix, with HTML error handling.

Dashboard routes answer in HTML, not the API's JSON errors: a missing session redirects GETs to the
sign-in form, a resource outside the viewer's project is a 404 page, a bad form is a 4xx page.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from service.dashboard.auth import CsrfError, SignInRequired
from service.dashboard.rendering import Renderer
from service.errors import ServiceError, http_status_for

PREFIX = "/dashboard"


@lru_cache(maxsize=1)
def renderer() -> Renderer:
    """The dashboard's template renderer (built on first use, not at import)."""
    return Renderer()


class DashboardRoute(APIRoute):
    """An APIRoute whose failures render as dashboard pages instead of JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                if request.method != "GET":
                    return _error_page(request, 403, "Your session has ended. Sign in again.")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)
            except CsrfError as exc:
                return _error_page(request, 403, exc.message)
            except ServiceError as exc:
                return _error_page(request, http_status_for(exc), exc.message)
            except RequestValidationError as exc:
                fields = ", ".join(str(e.get("loc", ["?"])[-1]) for e in exc.errors()[:5])
                return _error_page(request, 422, f"Invalid value for: {fields}.")

        return run


def _error_page(request: Request, status: int, message: str) -> Response:
    return renderer().page(request, "error.html", status_code=status, status=status, message=message)


def make_router() -> APIRouter:
    """The dashboard router; the app factory includes it (``app.include_router(make_router())``)."""
    from service.dashboard.pages import archive, assets, jobs, resources, schedules, signin

    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    for module in (assets, signin, jobs, archive, resources, schedules):
        router.include_router(module.router)
    return router
