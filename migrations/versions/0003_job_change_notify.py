"""notify listeners when a job row changes (PostgreSQL only)

The API caches job-status responses and drops an entry when this trigger says the row changed (see
service/db/status_cache.py). SQLite has no LISTEN/NOTIFY; the embedded mode does not cache.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The channel is service.db.status_cache.CHANNEL; migrations stay frozen, so it is spelled out here.
_FUNCTION = """
CREATE FUNCTION lowbit_notify_job_change() RETURNS trigger AS $$
BEGIN
    -- Delivered at commit only, and once per job id per transaction (PostgreSQL folds duplicates).
    PERFORM pg_notify('lowbit_jobs', OLD.id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""
_TRIGGER = """
CREATE TRIGGER jobs_notify_change AFTER UPDATE OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION lowbit_notify_job_change()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_change ON jobs")
    op.execute("DROP FUNCTION IF EXISTS lowbit_notify_job_change()")
