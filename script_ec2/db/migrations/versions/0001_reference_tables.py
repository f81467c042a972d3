"""Reference tables: counties and zip codes, loaded from the packaged zip/county lookup.

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from script_ec2.db.reference import load_lookup_csv

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    counties = op.create_table(
        "counties",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("lookup_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_counties")),
        sa.UniqueConstraint("name", name=op.f("uq_counties_name")),
        sa.UniqueConstraint("lookup_number", name=op.f("uq_counties_lookup_number")),
    )
    zip_codes = op.create_table(
        "zip_codes",
        sa.Column("code", sa.String(length=5), nullable=False),
        sa.Column("city", sa.Text(), nullable=False),
        sa.Column("county_id", sa.Integer(), nullable=False),
        sa.CheckConstraint("length(code) = 5", name=op.f("ck_zip_codes_code_length")),
        sa.ForeignKeyConstraint(
            ["county_id"], ["counties.id"], name=op.f("fk_zip_codes_county_id_counties")
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_zip_codes")),
    )
    op.create_index(op.f("ix_zip_codes_county_id"), "zip_codes", ["county_id"], unique=False)

    rows = load_lookup_csv()
    numbers = sorted({(row.number, row.county) for row in rows})
    op.bulk_insert(counties, [{"name": name, "lookup_number": number} for number, name in numbers])
    # Ids come from the database (SERIAL / rowid) so PostgreSQL's sequence stays in step;
    # read them back to point each zip at its county.
    result = op.get_bind().execute(sa.select(counties.c.name, counties.c.id))
    county_ids = {name: county_id for name, county_id in result}
    op.bulk_insert(
        zip_codes,
        [
            {"code": row.zip, "city": row.city, "county_id": county_ids[row.county]}
            for row in sorted(rows)
        ],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_zip_codes_county_id"), table_name="zip_codes")
    op.drop_table("zip_codes")
    op.drop_table("counties")
