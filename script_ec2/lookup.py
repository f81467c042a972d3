"""The packaged California zip → county lookup, read with the standard library only.

Kept apart from :mod:`script_ec2.db.reference` so that validating a county name (for example on
a cached ``fit``) needs neither SQLAlchemy nor the ORM models.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from typing import NamedTuple

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
