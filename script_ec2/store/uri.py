"""Parsing of store locations (``s3://bucket/prefix``, ``file://`` URIs, plain folders) and of keys.

Both store implementations share these rules so that a key accepted by one is accepted by the
other, and so that a malformed location fails before any client is built, with a message that
names the location and the forms that are accepted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit

from script_ec2.errors import UsageError
from script_ec2.settings import mask_url

EXPECTED_FORMS = "expected s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or a local folder path"

# A scheme followed by ":/" marks a URI; a single letter is left alone so that a Windows-style
# drive ("C:/data") stays a path.
_URI_LIKE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]+):/")
_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
# Prefixes and suffixes S3 reserves for its own bucket kinds (general purpose bucket naming rules).
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--table-s3")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"


@dataclass(frozen=True)
class LocalLocation:
    root: Path  # absolute


def parse_uri(uri: str) -> S3Location | LocalLocation:
    """Classify a store location, or raise :class:`UsageError` naming it and the accepted forms."""
    text = uri.strip()
    if not text:
        raise UsageError(f"empty store location ({EXPECTED_FORMS})")
    lowered = text.lower()
    if lowered.startswith("s3:"):
        return _parse_s3(uri, text)
    if lowered.startswith("file:"):
        return _parse_file(uri, text)
    match = _URI_LIKE.match(text)
    if match:
        _fail(uri, f"unsupported scheme {match['scheme']!r}")
    return LocalLocation(Path(text).expanduser().absolute())


def bucket_name_problem(bucket: str) -> str | None:
    """Why ``bucket`` breaks the S3 general-purpose bucket naming rules, or None if it is valid."""
    if not 3 <= len(bucket) <= 63:
        return f"bucket name {bucket!r} must be 3 to 63 characters long"
    if not _BUCKET_CHARS.match(bucket):
        return (
            f"bucket name {bucket!r} may hold only lowercase letters, digits, '.' and '-', "
            "and must start and end with a letter or digit"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return f"bucket name {bucket!r} must not have '..', '.-' or '-.'"
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        pass
    else:
        return f"bucket name {bucket!r} must not be an IP address"
    if bucket.startswith(_RESERVED_BUCKET_PREFIXES) or bucket.endswith(_RESERVED_BUCKET_SUFFIXES):
        return f"bucket name {bucket!r} uses a prefix or suffix that S3 reserves"
    return None


def clean_key(key: str) -> str:
    """Check an object key relative to a store root; return it unchanged if it is acceptable.

    Keys are ``/``-separated, relative, with no empty, ``.`` or ``..`` segments, so that a key can
    never escape a local root and means the same thing on S3 and on a local folder.
    """
    problem = _path_problem(key, allow_trailing_slash=False)
    if problem:
        raise UsageError(f"invalid object key {key!r}: {problem}")
    return key


def clean_prefix(prefix: str) -> str:
    """Check a listing prefix: like a key, but it may be empty or end with ``/``."""
    if prefix == "":
        return prefix
    problem = _path_problem(prefix, allow_trailing_slash=True)
    if problem:
        raise UsageError(f"invalid listing prefix {prefix!r}: {problem}")
    return prefix


def is_temp_name(name: str) -> bool:
    """True for the temp files this project writes beside a destination (``.NAME.XXXX.part``)."""
    return name.startswith(".") and name.endswith(".part")


def _path_problem(path: str, *, allow_trailing_slash: bool) -> str | None:
    if path == "":
        return "it is empty"
    if path.startswith("/"):
        return "it must be relative to the store root (no leading '/')"
    if "\\" in path or "\x00" in path:
        return "it must not contain backslashes or NUL characters"
    segments = path.split("/")
    if allow_trailing_slash and segments[-1] == "":
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            return "it must not have empty, '.' or '..' segments"
        if is_temp_name(segment):
            return "names of the form '.*.part' are reserved for temp files"
    return None


def _parse_s3(uri: str, text: str) -> S3Location:
    if not text.lower().startswith("s3://"):
        _fail(uri, "an S3 location starts with 's3://'")
    rest = text[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        _fail(uri, "no bucket name")
    if "@" in bucket:
        # Never echo what may be a password back to the terminal.
        _fail(uri, "an s3:// location holds no user or password (the AWS credential chain does)")
    problem = bucket_name_problem(bucket)
    if problem:
        _fail(uri, problem)
    prefix = prefix.strip("/")
    if prefix:
        path_problem = _path_problem(prefix, allow_trailing_slash=False)
        if path_problem:
            _fail(uri, f"prefix {prefix!r}: {path_problem}")
        prefix += "/"
    return S3Location(bucket=bucket, prefix=prefix)


def _parse_file(uri: str, text: str) -> LocalLocation:
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        _fail(uri, "a file: URI takes no '?query' or '#fragment'")
    if parts.netloc not in ("", "localhost"):
        _fail(uri, f"a file: URI names no host (got {parts.netloc!r}); use file:///ABSOLUTE/PATH")
    path = unquote(parts.path)
    if not path.startswith("/"):
        _fail(uri, "a file: URI needs an absolute path")
    return LocalLocation(Path(path))


def _fail(uri: str, why: str) -> NoReturn:
    # repr() keeps the message on one line whatever the location holds.
    raise UsageError(f"malformed store location {mask_url(uri)!r}: {why} ({EXPECTED_FORMS})")
