"""Creating and changing schedules: the checks and writes that POST/PATCH /v1/schedules and the
dashboard's schedule form share, so a schedule made in the browser passes exactly what the API checks.

Bodies arrive validated (ScheduleCreate / ScheduleUpdate); what needs the database or the network is
checked here: the model name and the template's dataset ids belong to the project (404 otherwise), the
webhook host resolves to an allowed address. The webhook secret is sealed before it is stored.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.db.repositories import references, resources
from service.db.repositories import schedules as repo
from service.db.schedule_tables import Schedule
from service.schemas.schedules import ScheduleCreate, ScheduleUpdate
from service.sealed_secrets import seal
from service.settings import Settings
from service.webhook_target import allowed_networks, check_webhook_target


def _sealed(values: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``values`` with the webhook secret encrypted at rest (service/sealed_secrets.py)."""
    if values.get("webhook_secret"):
        values = {**values, "webhook_secret": seal(values["webhook_secret"], settings.secret_key)}
    return values


def create(session: Session, project_id: str, body: ScheduleCreate, settings: Settings) -> Schedule:
    """Insert a schedule after checking its references and webhook target (caller commits)."""
    resources.get_model_by_name(session, project_id, body.model_name)
    references.check_references(session, project_id, body.template)
    if body.webhook_url is not None:
        check_webhook_target(body.webhook_url, allowed_networks(settings.webhook_allowed_networks))
    return repo.create_schedule(session, project_id, _sealed(body.model_dump(), settings))


def update(
    session: Session, project_id: str, schedule: Schedule, body: ScheduleUpdate, settings: Settings
) -> Schedule:
    """Change the fields ``body`` sets (omitted ones stay), checked like ``create`` (caller commits)."""
    values = body.model_dump(exclude_unset=True)
    if values.get("model_name"):
        resources.get_model_by_name(session, project_id, values["model_name"])
    if values.get("template") is not None:
        references.check_references(session, project_id, values["template"])
    if values.get("webhook_url") is not None:
        check_webhook_target(values["webhook_url"], allowed_networks(settings.webhook_allowed_networks))
    return repo.update_schedule(session, schedule, _sealed(values, settings))
