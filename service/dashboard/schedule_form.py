"""The dashboard's schedule form: what its fields hold, how they become the body of POST / PATCH
/v1/schedules, and which field an error belongs to.

The form splits a schedule's template into dataset pickers and a JSON "spec" box (technique, params,
bitwidths, ...); the body it builds is validated by the API's own schemas and applied by
service/schedule_changes.py, so the browser gets exactly the API's checks and the API's messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Form
from pydantic import ValidationError

from service.api.errors import describe_errors
from service.db.schedule_tables import Schedule
from service.errors import InvalidInputError, NotFoundError, ServiceError
from service.schemas.schedules import ScheduleCreate, ScheduleUpdate
from service.webhook_target import WebhookTargetError

DATASET_FIELDS = ("calib_dataset_id", "eval_dataset_id")
NEW_SPEC = '{\n  "technique": "ptq",\n  "param_bw": 8,\n  "output_bw": 8\n}'
# Body field -> the form control that shows its error (the template's JSON is the "spec" box).
_CONTROL_OF = {"template": "spec", "name": "name", "model_name": "model_name", "cron": "cron",
               "timezone": "timezone", "webhook_url": "webhook_url", "webhook_secret": "webhook_secret",
               "regression_threshold": "regression_threshold"}  # fmt: skip


@dataclass(frozen=True)
class ScheduleFields:
    """The form's values as typed (strings), so a rejected form comes back as the user left it."""

    name: str = ""
    model_name: str = ""
    calib_dataset_id: str = ""
    eval_dataset_id: str = ""
    spec: str = NEW_SPEC
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    webhook_url: str = ""
    webhook_secret: str = ""  # never shown back: an edit leaves it empty to keep the stored one
    regression_threshold: str = "0.01"

    def without_secret(self) -> ScheduleFields:
        return replace(self, webhook_secret="")


def posted_fields(
    name: str = Form(""),
    model_name: str = Form(""),
    calib_dataset_id: str = Form(""),
    eval_dataset_id: str = Form(""),
    spec: str = Form(""),
    cron: str = Form(""),
    timezone: str = Form(""),
    webhook_url: str = Form(""),
    webhook_secret: str = Form(""),
    regression_threshold: str = Form(""),
) -> ScheduleFields:
    """The submitted form (a FastAPI dependency)."""
    return ScheduleFields(**{k: v.strip() if k != "spec" else v for k, v in locals().items()})


def fields_of(schedule: Schedule) -> ScheduleFields:
    """An existing schedule as the edit form shows it."""
    template = dict(schedule.template)
    datasets = {f: str(template.pop(f, None) or "") for f in DATASET_FIELDS}
    return ScheduleFields(
        name=schedule.name,
        model_name=schedule.model_name,
        spec=json.dumps(template, indent=2),
        cron=schedule.cron,
        timezone=schedule.timezone,
        webhook_url=schedule.webhook_url or "",
        regression_threshold=f"{schedule.regression_threshold:g}",
        **datasets,
    )


@dataclass(frozen=True)
class FormError:
    """What the API would have answered: its HTTP status and message, and the control it is about."""

    status: int
    message: str
    control: str | None


def _body(fields: ScheduleFields, editing: bool) -> dict[str, Any]:
    """The JSON body the form stands for; InvalidInputError (control ``spec``) for a spec that is not a
    JSON object."""
    try:
        spec = json.loads(fields.spec or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"spec is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(spec, dict):
        raise InvalidInputError('spec must be a JSON object such as {"technique": "ptq"}')
    # The pickers win over ids typed into the spec: the form shows the datasets there.
    template = {**spec, **{f: getattr(fields, f) or None for f in DATASET_FIELDS}}
    body: dict[str, Any] = {
        "name": fields.name,
        "model_name": fields.model_name,
        "template": {k: v for k, v in template.items() if v is not None},
        "cron": fields.cron,
        "timezone": fields.timezone or "UTC",
        "webhook_url": fields.webhook_url or None,
        "regression_threshold": fields.regression_threshold or "0.01",
    }
    if fields.webhook_secret:
        body["webhook_secret"] = fields.webhook_secret
    elif editing and not fields.webhook_url:
        body["webhook_secret"] = None  # no webhook left: its secret goes too
    return body


class FormRejected(Exception):
    """The form cannot be applied; ``error`` says why and where."""

    def __init__(self, error: FormError) -> None:
        super().__init__(error.message)
        self.error = error


def checked_body(fields: ScheduleFields, editing: bool) -> ScheduleCreate | ScheduleUpdate:
    """The form as the API's validated request body; FormRejected with the API's 422 message otherwise."""
    try:
        body = _body(fields, editing)
    except InvalidInputError as exc:
        raise FormRejected(FormError(422, exc.message, "spec")) from None
    try:
        return (ScheduleUpdate if editing else ScheduleCreate).model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        loc = errors[0].get("loc", ()) if errors else ()
        control = _CONTROL_OF.get(str(loc[0])) if loc else None
        raise FormRejected(FormError(422, describe_errors(errors), control)) from None


def error_of(exc: ServiceError, status: int) -> FormError:
    """A check that needed the database or the network failed (unknown model or dataset, webhook host)."""
    if isinstance(exc, WebhookTargetError):
        return FormError(status, exc.message, "webhook_url")
    if isinstance(exc, NotFoundError):
        control = "model_name" if exc.message.startswith("model") else None
        return FormError(status, exc.message, control)
    return FormError(status, exc.message, None)
