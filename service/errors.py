"""Service exceptions and the one table that maps them to HTTP status codes and error codes.

Every error body the API returns is ``{"error": {"code": "...", "message": "..."}}``; the message says
what was wrong and what is accepted. Workers raise the same classes (they import no HTTP code).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of service errors; ``code`` is machine-readable, the message is for humans."""

    code = "service_error"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.headers = headers or {}


class NotFoundError(ServiceError):
    """The resource does not exist in the caller's project (other projects' resources look the same)."""

    code = "not_found"


class AuthError(ServiceError):
    """Missing, malformed, unknown or revoked API key."""

    code = "unauthorized"


class InvalidInputError(ServiceError):
    """A request value is invalid; the message names the field and the accepted values."""

    code = "invalid_input"


class ConflictError(ServiceError):
    """The request conflicts with the resource's current state (e.g. cancelling a finished job)."""

    code = "conflict"


class IdempotencyKeyReusedError(ServiceError):
    """The Idempotency-Key was already used with a different request body."""

    code = "idempotency_key_reused"


class IdempotencyInFlightError(ServiceError):
    """A request with the same Idempotency-Key is still being processed."""

    code = "idempotency_key_in_flight"


class PayloadTooLargeError(ServiceError):
    """An upload or spec exceeds the configured limit."""

    code = "payload_too_large"


class UploadRejectedError(ServiceError):
    """An uploaded file failed the structural checks (wrong format, pickles, bad header, hash mismatch)."""

    code = "upload_rejected"


class RateLimitedError(ServiceError):
    """Too many requests for this API key; retry after ``Retry-After`` seconds."""

    code = "rate_limited"


class InvalidTransitionError(ConflictError):
    """A job status change that the state machine does not allow."""

    code = "invalid_transition"


class StaleJobError(ConflictError):
    """The job's status changed under us (another process moved it first)."""

    code = "stale_job"


class StorageError(ServiceError):
    """The object store failed or is unreachable."""

    code = "storage_unavailable"


class DatabaseUnavailableError(ServiceError):
    """The database failed or is unreachable (raised where SQLAlchemy's DBAPIError handler does not apply)."""

    code = "database_unavailable"


# The one mapping from exception class to HTTP status. Subclasses are looked up through the MRO,
# so InvalidTransitionError answers 409 via ConflictError unless listed itself.
HTTP_STATUS: dict[type[ServiceError], int] = {
    NotFoundError: 404,
    AuthError: 401,
    InvalidInputError: 422,
    ConflictError: 409,
    IdempotencyKeyReusedError: 422,
    IdempotencyInFlightError: 409,
    PayloadTooLargeError: 413,
    UploadRejectedError: 422,
    RateLimitedError: 429,
    StorageError: 503,
    DatabaseUnavailableError: 503,
    ServiceError: 500,
}


def http_status_for(exc: ServiceError) -> int:
    """The HTTP status for ``exc``: the entry of its nearest class in :data:`HTTP_STATUS`."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]  # type: ignore[index]
    return 500
