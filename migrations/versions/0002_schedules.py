"""schedules and schedule runs

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("project_id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("template", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("webhook_secret", sa.String(length=200), nullable=True),
        sa.Column("regression_threshold", sa.Float(), nullable=False),
        sa.Column("last_scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name=op.f("fk_schedules_project_id_projects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.create_index("ix_schedules_project_id_id", ["project_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_schedules_enabled"), ["enabled"], unique=False)
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("schedule_id", sa.String(length=26), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=26), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("regressed", sa.Boolean(), nullable=True),
        sa.Column("metric", sa.Float(), nullable=True),
        sa.Column("baseline_metric", sa.Float(), nullable=True),
        sa.Column("baseline_job_id", sa.String(length=26), nullable=True),
        sa.Column("webhook_status", sa.String(length=16), nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_runs_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_schedule_runs_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint(
            "schedule_id", "scheduled_for", name=op.f("uq_schedule_runs_schedule_id_scheduled_for")
        ),
    )
    with op.batch_alter_table("schedule_runs") as batch_op:
        batch_op.create_index("ix_schedule_runs_schedule_id_id", ["schedule_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_schedule_runs_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
