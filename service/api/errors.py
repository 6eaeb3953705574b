"""Exception handlers: every error leaves the API as ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from service.errors import ServiceError, http_status_for
from service.schemas.common import ErrorBody

log = logging.getLogger("lowbit.api")

_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def describe_errors(errors: Sequence[Any]) -> str:
    """pydantic's errors as the API's 422 message: ``field.path: what is wrong``, the first five joined
    (the dashboard's forms show the same text)."""
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _leaf_routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's wrapper of an included router
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path (Starlette's 405 names only the first
    matching route's, and FastAPI has one route per method)."""
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        match, _ = route.matches({**request.scope, "method": "\0"})  # never a full match: path only
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


# Error responses every API route may answer, documented once for all (service/api/app.py).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "missing, unknown or revoked API key"),
        (404, "no such resource in the caller's project"),
        (409, "conflicts with the resource's state"),
        (413, "body over the size limit"),
        (422, "invalid request; the message names the field and what is accepted"),
        (429, "rate limited; retry after Retry-After seconds"),
    )
}


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(http_status_for(exc), exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", describe_errors(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            return error_response(
                405, code, f"method {request.method} is not allowed here; allowed: {', '.join(allowed)}",
                {"Allow": ", ".join(allowed)},
            )  # fmt: skip
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode (bytes that are not UTF-8): an invalid
            # request like any other, with the status every route documents.
            return error_response(422, "invalid_request", "body: not JSON text; send UTF-8 encoded JSON")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _db(_: Request, exc: DBAPIError) -> JSONResponse:
        # Values that pass validation but that the database refuses (NUL characters in text for
        # PostgreSQL, out-of-range numbers) are the caller's input; anything else is ours.
        if isinstance(exc, DataError):
            return error_response(
                422, "invalid_input", "a value is out of range or holds characters that cannot be stored"
            )
        log.exception("database error")
        return error_response(503, "database_unavailable", "the database failed; retry later")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; it was logged")
