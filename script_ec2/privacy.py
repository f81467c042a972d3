"""The privacy scanner that stands between the model registry and a public location.

SLAC's charging data stay private; only models are published. Before any upload, ``publish`` runs
:func:`scan_model` over a version's ``model.json`` (structurally), its model card ``README.md``
and its ``SHA256SUMS`` (line by line), and refuses the whole publish on any :class:`Finding`.

**Rules** (each finding names the file, the place and the rule, never the suspicious value, so
the refusal itself cannot leak what it found):

``identifier-name``
    A JSON key, or words in any text, naming a per-person or per-device identifier: session,
    station, port, driver, interval, user, EVSE, charger, connector, vehicle, customer, account,
    card, plug, outlet, transaction or device followed by ID / IDs / identifier / UID / UUID /
    number (``Session ID``, ``station_id``, ``driverId``), and driver-level columns (``Driver Zip``,
    ``Driver City`` …), ``VIN``, ``MAC address``, ``licence plate``, ``e-mail address``. Array names
    are keys of ``model.json``'s ``arrays``, so an array called ``station_ids`` is caught here.
``long-integer``
    A stand-alone integer of seven or more digits inside text (session IDs in the SLAC exports have
    eight digits, station IDs seven). Digits inside a hex hash, a decimal fraction or a word do not
    count, nor do exactly 64 digits (a sha256 without a letter). JSON numbers are not text: counts,
    metrics and seeds are the model's own aggregates. In the card, a number that is one of
    model.json's own numbers (as the card prints it) is allowed.
``mac-address``
    ``00:1A:2B:3C:4D:5E`` or the ChargePoint form ``0024:B100:0002:33D2``.
``data-row``
    A line (or a JSON list of scalars) shaped like a raw data row: six or more comma-, semicolon-
    or tab-separated fields of which at least two are numbers, with a date or time among them, or
    with free text next to an integer of six or more digits. Prose with commas, lists of county
    names and plain lists of numbers (a BIC curve, 96 prices) are not rows.
``data-header``
    A line naming three or more columns of the raw session or interval exports
    (:data:`script_ec2.synthetic.SESSION_COLUMNS`, :data:`~script_ec2.synthetic.INTERVAL_COLUMNS`).

What is not checked: JSON numbers under innocuous keys (an identifier stored as a bare number
under a harmless name cannot be told from a count) and the values inside ``arrays.npz`` (numeric
only, no pickles; their names are checked). The training-data fingerprint is a sha256 of object
keys and ETags, never data, and 64-hex strings never trip the rules above.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from script_ec2.errors import ScriptEc2Error

MODEL_FILE = "model.json"
CARD_FILE = "README.md"
CHECKSUM_FILE = "SHA256SUMS"

LONG_INTEGER_DIGITS = 7
ROW_MIN_FIELDS = 6
ROW_ID_DIGITS = 6
HEADER_MIN_COLUMNS = 3
SHA256_HEX_DIGITS = 64

_SUBJECTS = (
    "session|station|port|driver|interval|user|evse|charger|connector|vehicle|customer|account"
    "|card|plug|outlet|transaction|device"
)
_SUFFIXES = "ids?|identifiers?|uids?|uuids?|number"
_IDENTIFIER = re.compile(
    rf"(?<![a-z0-9])(?P<label>(?:{_SUBJECTS})s?[\s_\-.]*(?:{_SUFFIXES}))(?![a-z0-9])"
    r"|(?<![a-z0-9])(?P<personal>driver[\s_\-.]*(?:zip|postal|city|state|country|address|e-?mail"
    r"|name|phone)|vin|mac[\s_\-.]*address(?:es)?|licen[cs]e[\s_\-.]*plates?"
    r"|e-?mail[\s_\-.]*address(?:es)?)(?![a-z0-9])"
)
# Word boundaries for camelCase keys: "sessionId" -> "session Id".
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_LONG_INTEGER = re.compile(rf"(?<![\w.])\d{{{LONG_INTEGER_DIGITS},}}(?!\w|\.\d)")
_MAC = re.compile(
    r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f:])"
    r"|(?<![0-9A-Fa-f:])[0-9A-Fa-f]{4}(?::[0-9A-Fa-f]{4}){3}(?![0-9A-Fa-f:])"
)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_DATE_OR_TIME = re.compile(
    r"^(?:\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
    r"(?:\s*(?:Z|[+-]\d{2}:?\d{2}|[AP]M))?|\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s*[AP]M)?)$",
    re.IGNORECASE,
)
_FIELD_EDGES = " \t\"'`[](){}"
_DELIMITERS = (",", ";", "\t")


class PrivacyRefusal(ScriptEc2Error):
    """A publish refused because it would expose private data (exit code 1: a failed publish)."""


@dataclass(frozen=True)
class Finding:
    """One reason to refuse: where it is and which rule, never the suspicious value itself."""

    file: str
    where: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file} {self.where}: {self.detail} [{self.rule}]"

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "where": self.where, "rule": self.rule, "detail": self.detail}


@functools.cache
def _raw_columns() -> frozenset[str]:
    from script_ec2.synthetic import INTERVAL_COLUMNS, SESSION_COLUMNS

    return frozenset(c.casefold() for c in (*SESSION_COLUMNS, *INTERVAL_COLUMNS))


def identifier_label(text: str) -> str | None:
    """The identifier-like label ``text`` contains (``"station id"``), or None."""
    spaced = _CAMEL.sub(" ", text).casefold()
    match = _IDENTIFIER.search(spaced)
    if match is None:
        return None
    return " ".join(re.split(r"[\s_\-.]+", match.group(0)))


def scan_model(files: Mapping[str, bytes]) -> list[Finding]:
    """Every finding in a version's model.json, README.md and SHA256SUMS (those present)."""
    findings: list[Finding] = []
    known: frozenset[str] = frozenset()
    if MODEL_FILE in files:
        try:
            meta = json.loads(files[MODEL_FILE])
        except ValueError:
            return [Finding(MODEL_FILE, "(whole file)", "unreadable", "is not valid JSON")]
        findings += scan_json(meta, MODEL_FILE)
        known = known_numbers(meta)
    for filename in (CARD_FILE, CHECKSUM_FILE):
        if filename in files:
            text = files[filename].decode("utf-8", errors="replace")
            findings += scan_text(text, filename, known_numbers=known)
    return findings


def scan_json(value: Any, file: str = MODEL_FILE) -> list[Finding]:
    """Findings in a parsed JSON document: its keys, its strings and its lists of scalars."""
    findings: list[Finding] = []
    _walk(value, "$", file, findings)
    return _distinct(findings)


def scan_text(
    text: str, file: str = CARD_FILE, *, known_numbers: Iterable[str] = ()
) -> list[Finding]:
    """Findings in text, line by line; Markdown table rows are checked cell by cell.

    ``known_numbers`` are numbers as the card prints them from model.json (see
    :func:`known_numbers`); they are the model's own values and never count as identifiers.
    """
    known = frozenset(known_numbers)
    findings: list[Finding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"line {number}"
        stripped = line.strip()
        cells = stripped.strip("|").split("|") if stripped.startswith("|") else [line]
        for cell in cells:
            findings += _text_findings(cell, file, where, known)
    return _distinct(findings)


def known_numbers(meta: Any) -> frozenset[str]:
    """Every JSON number in ``meta`` as the model card may print it (plain, integral, 6 digits)."""
    shown: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            shown.add(str(value))
        elif isinstance(value, float):
            shown.update({repr(value), f"{value:.6g}"})
            if value.is_integer():
                shown.add(str(int(value)))
        elif isinstance(value, Mapping):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(meta)
    return frozenset(shown)


def _walk(value: Any, path: str, file: str, findings: list[Finding]) -> None:
    if isinstance(value, Mapping):
        for position, (key, item) in enumerate(value.items()):
            text = str(key)
            # A key may itself be private (a dict keyed by station IDs): such a key is checked
            # like text and never shown, its place given by position instead.
            as_text = [
                f
                for f in _text_findings(text, file, "", frozenset())
                if f.rule != "identifier-name"
            ]
            child = f"{path}[key #{position + 1}]" if as_text else _child_path(path, text)
            findings += [Finding(file, child, f.rule, f"a key that is {f.detail}") for f in as_text]
            label = identifier_label(text)
            if label is not None:
                findings.append(
                    Finding(
                        file,
                        child,
                        "identifier-name",
                        f"a key named like a private identifier ({label!r})",
                    )
                )
            _walk(item, child, file, findings)
    elif isinstance(value, list):
        if len(value) >= ROW_MIN_FIELDS and all(_is_scalar(v) for v in value):
            fields = ["" if v is None else str(v) for v in value]
            why = _row_reason(fields)
            if why:
                findings.append(
                    Finding(file, path, "data-row", f"a list shaped like a raw data row ({why})")
                )
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", file, findings)
    elif isinstance(value, str):
        for number, line in enumerate(value.splitlines() or [""], start=1):
            where = path if "\n" not in value else f"{path} line {number}"
            findings += _text_findings(line, file, where, frozenset())


def _text_findings(text: str, file: str, where: str, known: frozenset[str]) -> list[Finding]:
    """The findings in one line (or one table cell) of text."""
    found: list[Finding] = []
    label = identifier_label(text)
    if label is not None:
        found.append(
            Finding(file, where, "identifier-name", f"names a private identifier ({label!r})")
        )
    for match in _LONG_INTEGER.finditer(text):
        # 64 digits is a sha256 that happens to hold no letter, not an identifier.
        if match.group(0) not in known and len(match.group(0)) != SHA256_HEX_DIGITS:
            digits = len(match.group(0))
            found.append(
                Finding(
                    file,
                    where,
                    "long-integer",
                    f"a {digits}-digit integer in text, shaped like a session or station ID",
                )
            )
            break
    if _MAC.search(text):
        found.append(Finding(file, where, "mac-address", "a MAC address (a station identifier)"))
    fields = _split_fields(text)
    if len(fields) >= ROW_MIN_FIELDS:
        why = _row_reason(fields)
        if why:
            found.append(
                Finding(file, where, "data-row", f"a line shaped like a raw data row ({why})")
            )
    if len(fields) >= HEADER_MIN_COLUMNS:
        raw = _raw_columns()
        named = sorted({f for f in (_clean(x).casefold() for x in fields) if f in raw})
        if len(named) >= HEADER_MIN_COLUMNS:
            found.append(
                Finding(
                    file,
                    where,
                    "data-header",
                    f"names {len(named)} columns of the raw charging-data exports",
                )
            )
    return found


def _split_fields(text: str) -> list[str]:
    """The fields of ``text`` under the delimiter that splits it into the most fields."""
    best: list[str] = [text]
    for delimiter in _DELIMITERS:
        if delimiter not in text:
            continue
        try:
            fields = next(csv.reader([text], delimiter=delimiter, skipinitialspace=True))
        except csv.Error:
            fields = text.split(delimiter)
        if len(fields) > len(best):
            best = fields
    return best


def _clean(field: str) -> str:
    return field.strip(_FIELD_EDGES)


def _row_reason(raw_fields: list[str]) -> str | None:
    """Why these fields look like a raw data row, or None if they do not."""
    fields = [_clean(f) for f in raw_fields]
    numbers = [f for f in fields if _NUMBER.match(f)]
    dates = [f for f in fields if _DATE_OR_TIME.match(f)]
    texts = [f for f in fields if f and not _NUMBER.match(f) and not _DATE_OR_TIME.match(f)]
    long_ids = [f for f in numbers if _INTEGER.match(f) and len(f.lstrip("+-")) >= ROW_ID_DIGITS]
    if len(numbers) < 2:
        return None
    if dates:
        return f"{len(fields)} fields with numbers and dates or times"
    if texts and long_ids:
        return f"{len(fields)} fields mixing text with long integers"
    return None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if _PLAIN_KEY.match(key) else f"{path}[{json.dumps(key)}]"


def _distinct(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))
