"""Jobs record when their message reached the broker, and what a finished job reported.

A job is inserted as ``queued`` and then handed to the broker. A submitting process that dies in
between leaves a queued job no message will ever start; ``enqueued_at`` lets the next identical
request (or ``jobs wait``) recognise it and fail it instead of joining it for ever. Jobs that
exist before this revision count as handed over. ``summary`` is a JSON object a runner may leave
(a sync job: the pass's summary, as ``sync --format json`` prints it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("summary", sa.Text(), nullable=True))
    op.execute(sa.text("UPDATE jobs SET enqueued_at = created_at"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("summary")
        batch.drop_column("enqueued_at")
