"""Schema-driven fuzzing of the OpenAPI spec (schemathesis) with every check it has (the CLI's
``--checks all``), on both modes: no input produces a 5xx, every answer is documented, requests the schema
allows are accepted and requests it forbids are refused."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from tests.service.conftest import Api

# Requests per operation and generation mode. PostgreSQL + S3 answers each request ~2x slower than SQLite;
# the schema-level input handling is the same code in both, so the slow mode runs a bounded prefix that
# still reaches every operation, every method and the DB's own errors. Negative cases (schema-invalid
# requests) are refused before any work, so fewer of them suffice. The counts keep the test's time at what
# 40 / 15 positive requests with six checks took (19.3 s against 25.1 s for both modes, side by side).
EXAMPLES = {
    "sqlite": {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 8},
    "postgresql": {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 6},
}
# Values the schema cannot describe, so a schema-valid request may still be refused: a cursor is only one
# a previous page returned, a cron must fire within a year, a time zone must exist, a webhook target must
# resolve to a public address. Positive cases carry valid ones (every other field stays generated).
VALID_BEYOND_SCHEMA = {
    "cron": "0 2 * * *",
    "timezone": "Europe/Paris",
    "webhook_url": "https://93.184.216.34/hook",
}


# A schema-violating request is refused with any 4xx the API documents, 413 included: a declared upload
# size over the limit (the schema's maximum) is refused as too large.
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": [
        "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]}}}
)  # fmt: skip


def _all_checks() -> list[Any]:
    load_all_checks()
    return list(CHECKS.get_all())


def _free_string(schema: dict[str, Any]) -> bool:
    kinds = schema.get("anyOf", [schema])
    return all(set(k) <= {"type", "title"} and k.get("type") in ("string", "null") for k in kinds)


def _negatable(definition: dict[str, Any]) -> bool:
    """Whether some request to the operation breaks its schema: not when it takes only free-form strings
    (path ids, headers) and raw bytes (hypothesis would search hundreds of cases to find none)."""
    content = definition.get("requestBody", {}).get("content", {})
    params = definition.get("parameters", [])
    return "application/json" in content or not all(_free_string(p.get("schema", {})) for p in params)


def _with_valid_beyond_schema(case: Any) -> None:
    if case.query and "cursor" in case.query:
        del case.query["cursor"]
    if isinstance(case.body, dict):
        for name, value in VALID_BEYOND_SCHEMA.items():
            if case.body.get(name) is not None:
                case.body[name] = value


def _fuzz(api: Api, operation: Any, mode: GenerationMode, count: int, checks: list[Any]) -> None:
    """``count`` requests of ``mode`` to ``operation``, each answer held to ``checks``."""
    auth = {"Authorization": f"Bearer {api.key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=count,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case) -> None:  # type: ignore[no-untyped-def]
        if mode is GenerationMode.POSITIVE:
            _with_valid_beyond_schema(case)
        response = case.call_and_validate(
            base_url=api.url, headers={**(case.headers or {}), **auth}, timeout=30, checks=checks
        )
        where = (case.method, case.formatted_path, response.status_code, response.text[:300])
        assert response.status_code < 500, where
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, where

    check()


def test_all_checks_hold(api: Api) -> None:
    """Given any request the schema allows, it is accepted (2xx, or 401/403/404/409/429 for state the
    request cannot know); given one it forbids, it is refused; never a 5xx; status codes, headers, content
    types and bodies are the documented ones (405 with a correct Allow header), and every 4xx carries the
    error body."""
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    checks = _all_checks()
    assert {c.__name__ for c in checks} >= {"positive_data_acceptance", "negative_data_rejection",
                                            "response_schema_conformance", "ignored_auth"}  # fmt: skip
    examples = EXAMPLES[api.settings.database_url.split(":")[0].split("+")[0]]
    for operation in operations:
        for mode, count in examples.items():
            if mode is GenerationMode.POSITIVE or _negatable(operation.definition.raw):
                _fuzz(api, operation, mode, count, checks)
