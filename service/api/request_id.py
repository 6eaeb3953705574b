"""Request ids and the access log (pure ASGI middleware, so bodies keep streaming).

Each request gets the client's ``X-Request-ID`` when it is a short plain token, else a new one; the
response echoes it, every log line written while serving carries it, and a job created by the request
keeps it (its outbox message), so the worker's log lines for that job carry it too. One access-log line
per request (logger ``lowbit.access``): method, path, status, duration, request id.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.request_context import REQUEST_ID_HEADER, request_id, valid_request_id

access_log = logging.getLogger("lowbit.access")
_HEADER = REQUEST_ID_HEADER.lower().encode()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == _HEADER), None)
        rid = valid_request_id(given) or uuid.uuid4().hex
        token = request_id.set(rid)
        started, status = time.perf_counter(), [0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (_HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "%s %s %s",
                scope.get("method", ""),
                scope.get("path", ""),
                status[0],
                extra={
                    "method": scope.get("method", ""),
                    "path": scope.get("path", ""),
                    "status": status[0],
                    "duration_ms": round(1000 * (time.perf_counter() - started), 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            request_id.reset(token)
