"""Schema-driven fuzzing of the OpenAPI spec (schemathesis): no input produces a 5xx, on both modes."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.service.conftest import Api

EXAMPLES_PER_OPERATION = 40
# schemathesis' response checks that hold for this API: no 5xx, every status code and header documented,
# declared content types, and 405 with a correct Allow header for methods a path does not serve.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          unsupported_method, allow_header_conformance]  # fmt: skip


def test_no_server_errors(api: Api) -> None:
    """Given any request the schema allows (and many it does not), the answer is never a 5xx, its status
    code, headers and content type are the documented ones, and every 4xx carries the error body."""
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    auth = {"Authorization": f"Bearer {api.key}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call_and_validate(
                base_url=api.url, headers={**(case.headers or {}), **auth}, timeout=30, checks=CHECKS
            )
            where = (case.method, case.formatted_path, response.status_code, response.text[:300])
            assert response.status_code < 500, where
            if response.status_code >= 400:
                body = response.json()
                assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, where

        check()
