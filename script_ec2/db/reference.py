"""Reference data: the packaged zip → county lookup and small read helpers over its tables.

The lookup ships as ``script_ec2/data/zip_county_lookup.csv`` (header ``Zip Code,City,County,County
Number``, zips written as floats such as ``90001.0``). Migration 0001 loads it through
:func:`load_lookup_csv`; later code reads the loaded tables through :func:`zip_to_county` and
:func:`county_names`.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from script_ec2.db.models import County, ZipCode
from script_ec2.errors import DataError

LOOKUP_FILE = "zip_county_lookup.csv"
LOOKUP_COLUMNS = ("Zip Code", "City", "County", "County Number")


class LookupRow(NamedTuple):
    zip: str
    city: str
    county: str
    number: int


def load_lookup_csv() -> list[LookupRow]:
    """Every row of the packaged lookup, zips as 5-digit text with leading zeros kept."""
    text = resources.files("script_ec2").joinpath("data", LOOKUP_FILE).read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != LOOKUP_COLUMNS:
        raise DataError(
            f"packaged {LOOKUP_FILE}: header is {reader.fieldnames}, "
            f"expected {list(LOOKUP_COLUMNS)}"
        )
    rows = []
    for line, record in enumerate(reader, start=2):
        try:
            # The file stores zips as floats ("90001.0"); int(float()) also accepts plain "90001".
            code = f"{int(float(record['Zip Code'])):05d}"
            number = int(record["County Number"])
        except (TypeError, ValueError):
            raise DataError(
                f"packaged {LOOKUP_FILE} line {line}: bad zip or county number"
            ) from None
        if len(code) != 5 or not record["County"]:
            raise DataError(
                f"packaged {LOOKUP_FILE} line {line}: zip {code!r} or county is invalid"
            )
        rows.append(LookupRow(code, record["City"], record["County"], number))
    return rows


def zip_to_county(conn: Connection | Session) -> dict[str, str]:
    """Map every known 5-digit zip code to its county's bare name."""
    query = select(ZipCode.code, County.name).join(County, ZipCode.county_id == County.id)
    return {code: county for code, county in conn.execute(query)}


def county_names(conn: Connection | Session) -> list[str]:
    """Every county name, alphabetically."""
    return list(conn.execute(select(County.name).order_by(County.name)).scalars())
