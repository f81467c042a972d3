"""Sync ledger, statistics-dirty marks and the statistics tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("etag", sa.String(length=256), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("counties", sa.Text(), nullable=False),
        sa.Column("cache_stem", sa.String(length=64), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
        sa.UniqueConstraint("source", "key", name="uq_ledger_source_key"),
    )
    op.create_table(
        "stats_county",
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("county", sa.Text(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("energy_kwh", sa.Float(), nullable=False),
        sa.Column("first_date", sa.Date(), nullable=True),
        sa.Column("last_date", sa.Date(), nullable=True),
        sa.Column("zips", sa.Integer(), nullable=False),
        sa.Column("stations", sa.Integer(), nullable=False),
        sa.Column("peak_power_kw", sa.Float(), nullable=False),
        sa.Column("peak_daily_energy_kwh", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "county", name=op.f("pk_stats_county")),
    )
    op.create_table(
        "stats_county_month",
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("county", sa.Text(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("energy_kwh", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "source", "county", "year", "month", name=op.f("pk_stats_county_month")
        ),
    )
    op.create_table(
        "stats_county_segment",
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("county", sa.Text(), nullable=False),
        sa.Column("segment", sa.String(length=32), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("energy_kwh", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "source", "county", "segment", name=op.f("pk_stats_county_segment")
        ),
    )
    op.create_table(
        "stats_dirty",
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("county", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("source", "county", name=op.f("pk_stats_dirty")),
    )
    op.create_table(
        "stats_zip",
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("zip", sa.String(length=5), nullable=False),
        sa.Column("county", sa.Text(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("energy_kwh", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "zip", name=op.f("pk_stats_zip")),
    )
    op.create_index(op.f("ix_stats_zip_county"), "stats_zip", ["county"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_stats_zip_county"), table_name="stats_zip")
    op.drop_table("stats_zip")
    op.drop_table("stats_dirty")
    op.drop_table("stats_county_segment")
    op.drop_table("stats_county_month")
    op.drop_table("stats_county")
    op.drop_table("ledger")
