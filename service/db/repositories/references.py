"""The ids a request or a stored template names, resolved within the caller's project.

Every path that stores an id for later use (job create, reruns, schedule templates, the beat tick
that turns a template into a job) checks it here, so another project's id is a 404 wherever it is
named: knowing an id must never grant the data behind it.

>>> REFERENCE_FIELDS["calib_dataset_id"].__name__
'Dataset'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Dataset, Job, Model, ModelVersion, Upload
from service.db.schedule_tables import Schedule
from service.errors import NotFoundError

# Field name (in request bodies, query strings, job specs and schedule templates) -> owning table.
REFERENCE_FIELDS: dict[str, Any] = {
    "model_id": Model,
    "model_version_id": ModelVersion,
    "dataset_id": Dataset,
    "calib_dataset_id": Dataset,
    "eval_dataset_id": Dataset,
    "train_dataset_id": Dataset,
    "job_id": Job,
    "rerun_of": Job,
    "baseline_job_id": Job,
    "schedule_id": Schedule,
    "upload_id": Upload,
}
_NOUNS = {Model: "model", ModelVersion: "model version", Dataset: "dataset", Job: "job",
          Schedule: "schedule", Upload: "upload"}  # fmt: skip


def check_references(session: Session, project_id: str, values: Mapping[str, Any]) -> None:
    """Raise NotFoundError naming the first id in ``values`` (keys of :data:`REFERENCE_FIELDS`; other
    keys and None values are ignored) that does not belong to ``project_id``; one query per table."""
    wanted: dict[Any, list[str]] = {}
    for field, value in values.items():
        table = REFERENCE_FIELDS.get(field)
        if table is not None and value is not None:
            wanted.setdefault(table, []).append(str(value))
    for table, ids in wanted.items():
        found = set(
            session.scalars(select(table.id).where(table.id.in_(ids), table.project_id == project_id))
        )
        for value in ids:
            if value not in found:
                raise NotFoundError(f"{_NOUNS[table]} {value} not found")
