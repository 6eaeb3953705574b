"""Shards of sharded training datasets, scoped to a project."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Dataset, DatasetShard
from service.errors import ConflictError, InvalidInputError, NotFoundError


def sharded_dataset(session: Session, project_id: str, dataset_id: str) -> Dataset:
    """The project's dataset, which must be sharded (NotFoundError / InvalidInputError otherwise)."""
    dataset = session.scalar(
        select(Dataset).where(Dataset.id == dataset_id, Dataset.project_id == project_id)
    )
    if dataset is None:
        raise NotFoundError(f"dataset {dataset_id} not found")
    if dataset.format != "sharded":
        raise InvalidInputError(
            f"dataset {dataset_id} has format {dataset.format!r}; shards belong to datasets created with "
            "format 'sharded'",
            code="not_sharded",
        )
    return dataset


def create_shard(session: Session, dataset: Dataset, index: int, fmt: str) -> DatasetShard:
    """Declare shard ``index``; ConflictError when it exists, InvalidInputError once the dataset is sealed."""
    if dataset.status != "pending":
        raise InvalidInputError(
            f"dataset {dataset.id} is {dataset.status}; it takes no more shards", code="dataset_sealed"
        )
    if session.scalar(
        select(DatasetShard.id).where(DatasetShard.dataset_id == dataset.id, DatasetShard.index == index)
    ):
        raise ConflictError(f"shard {index} of dataset {dataset.id} already exists", code="shard_exists")
    shard = DatasetShard(dataset_id=dataset.id, project_id=dataset.project_id, index=index, format=fmt)
    session.add(shard)
    session.flush()
    return shard


def get_shard(session: Session, dataset: Dataset, index: int) -> DatasetShard:
    shard = session.scalar(
        select(DatasetShard).where(DatasetShard.dataset_id == dataset.id, DatasetShard.index == index)
    )
    if shard is None:
        raise NotFoundError(f"shard {index} of dataset {dataset.id} not found")
    return shard


def list_shards(session: Session, dataset_id: str) -> Sequence[DatasetShard]:
    return session.scalars(
        select(DatasetShard).where(DatasetShard.dataset_id == dataset_id).order_by(DatasetShard.index)
    ).all()


def seal(session: Session, dataset: Dataset) -> Sequence[DatasetShard]:
    """Mark the dataset ready once shards 0…n-1 are all uploaded and checked; InvalidInputError says
    which shard is missing or not ready."""
    shards = list_shards(session, dataset.id)
    if not shards:
        raise InvalidInputError(
            f"dataset {dataset.id} has no shards; declare and upload them first", code="no_shards"
        )
    for expected, shard in enumerate(shards):
        if shard.index != expected:
            raise InvalidInputError(
                f"shard {expected} of dataset {dataset.id} is missing (shards must be 0…n-1)",
                code="shard_missing",
            )
        if shard.status != "ready":
            raise InvalidInputError(
                f"shard {expected} of dataset {dataset.id} is {shard.status}", code="shard_not_ready"
            )
    dataset.status = "ready"
    dataset.size = sum(s.size or 0 for s in shards)
    return shards
