"""Diff one LIST of the data prefix against the ledger: what is new, changed, deleted, unchanged.

"Changed" means the ETag or the size differs (multipart ETags are opaque), so a same-size rewrite is
caught. Objects modified within the settle window are left for a later pass: a new one is not
processed yet, a changed one keeps its previous version until it settles. An object whose cached
rows are gone from this host's cache (the cache was emptied, or another host sharing the database
ingested it) counts as changed, so it is fetched again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from script_ec2.store.interface import ObjectInfo

MASS_DELETE_SHARE = 0.5
"""Without --allow-mass-delete, a pass refuses to delete more than this share of tracked objects."""


@dataclass(frozen=True)
class Tracked:
    """What the ledger knows about one object."""

    key: str
    etag: str
    size: int
    status: str
    cache_stem: str | None = None


@dataclass
class Plan:
    new: list[ObjectInfo] = field(default_factory=list)
    changed: list[ObjectInfo] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[ObjectInfo] = field(default_factory=list)
    settling: list[ObjectInfo] = field(default_factory=list)
    ignored: list[ObjectInfo] = field(default_factory=list)

    @property
    def to_fetch(self) -> list[ObjectInfo]:
        return self.new + self.changed

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "new": [o.key for o in self.new],
            "changed": [o.key for o in self.changed],
            "deleted": list(self.deleted),
            "unchanged": [o.key for o in self.unchanged],
            "settling": [o.key for o in self.settling],
            "ignored": [o.key for o in self.ignored],
        }


def make_plan(
    listing: Iterable[ObjectInfo],
    ledger: Mapping[str, Tracked],
    *,
    now: datetime,
    settle: timedelta,
    wanted: Callable[[str], bool],
    cached: Callable[[Tracked], bool] = lambda tracked: True,
) -> Plan:
    """Classify every listed object and every ledger entry that is no longer listed.

    ``cached(tracked)`` tells whether the rows the ledger points at are in the local cache.
    """
    plan = Plan()
    seen: set[str] = set()
    cutoff = now - settle
    for obj in listing:
        if not wanted(obj.key):
            plan.ignored.append(obj)
            continue
        seen.add(obj.key)
        known = ledger.get(obj.key)
        if (
            known is not None
            and known.etag == obj.etag
            and known.size == obj.size
            and cached(known)
        ):
            plan.unchanged.append(obj)
        elif settle and obj.last_modified > cutoff:
            plan.settling.append(obj)
        elif known is None:
            plan.new.append(obj)
        else:
            plan.changed.append(obj)
    plan.deleted = sorted(k for k in ledger if k not in seen)
    return plan


def mass_delete_refused(plan: Plan, tracked: int) -> bool:
    """True when the plan deletes more than MASS_DELETE_SHARE of the tracked objects."""
    return tracked > 0 and len(plan.deleted) > MASS_DELETE_SHARE * tracked
