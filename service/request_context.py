"""The id of the request being served (or of the request that created the job being run).

Set by the API's request-id middleware and by the worker around a job; read by the log formatter and
by job creation, which stores it in the job's outbox message so the worker's log lines for that job carry
the id the client saw in the ``X-Request-ID`` response header.
"""

from __future__ import annotations

import re
from contextvars import ContextVar

REQUEST_ID_HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

request_id: ContextVar[str | None] = ContextVar("lowbit_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("lowbit_job_id", default=None)


def valid_request_id(value: str | None) -> str | None:
    """``value`` if a client may choose it as request id (short, no spaces or markup), else None."""
    return value if value and _VALID.match(value) else None
