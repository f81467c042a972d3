"""Reference data: the packaged zip → county lookup and small read helpers over its tables.

The lookup ships as ``script_ec2/data/zip_county_lookup.csv`` (header ``Zip Code,City,County,County
Number``, zips written as floats such as ``90001.0``). Migration 0001 loads it through
:func:`load_lookup_csv`; later code reads the loaded tables through :func:`zip_to_county` and
:func:`county_names`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from script_ec2.db.models import County, ZipCode
from script_ec2.lookup import LOOKUP_COLUMNS, LOOKUP_FILE, LookupRow, load_lookup_csv

__all__ = [
    "LOOKUP_COLUMNS",
    "LOOKUP_FILE",
    "LookupRow",
    "county_names",
    "load_lookup_csv",
    "zip_to_county",
]


def zip_to_county(conn: Connection | Session) -> dict[str, str]:
    """Map every known 5-digit zip code to its county's bare name."""
    query = select(ZipCode.code, County.name).join(County, ZipCode.county_id == County.id)
    return {code: county for code, county in conn.execute(query)}


def county_names(conn: Connection | Session) -> list[str]:
    """Every county name, alphabetically."""
    return list(conn.execute(select(County.name).order_by(County.name)).scalars())
