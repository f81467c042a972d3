"""The newest migration revision, read from the migration files with the standard library only.

Alembic's own answer (:func:`script_ec2.db.migrate.head_revision`) needs alembic and SQLAlchemy,
~0.2 s of imports; the schema check on every command start and the direct cache-hit lookup
(:func:`script_ec2.results.lookup_direct`) need only this. A test holds the two equal.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

MIGRATIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION_RE = re.compile(r'^(down_revision|revision)\b[^=]*=\s*"?([0-9A-Za-z_]+|None)"?', re.M)


@cache
def script_head() -> str | None:
    """The head revision of the migration files, or None when the history is not a simple
    chain (then alembic decides)."""
    revisions: dict[str, str | None] = {}
    for path in MIGRATIONS.glob("*.py"):
        found: dict[str, str] = {m[1]: m[2] for m in _REVISION_RE.finditer(path.read_text())}
        if "revision" not in found:
            return None
        down = found.get("down_revision")
        revisions[found["revision"]] = None if down in (None, "None") else down
    heads = set(revisions) - {d for d in revisions.values() if d}
    return heads.pop() if len(heads) == 1 else None
