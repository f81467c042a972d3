"""The health checks behind ``script-ec2 doctor``: can this host do its job with these settings?

:func:`run_checks` runs every check in a fixed order and returns one :class:`Check` per line of
the report; each says pass, fail or skip, what it found and, on failure, what to do. A check that
fails never stops the others, except where a later check needs what an earlier one could not
provide (no database: the migrations are not checked). The checks, by name:

``settings``
    The settings resolved (the root callback did that), every store location parses, the database
    and broker URLs parse, and the public target does not overlap the private data location.
``database`` / ``migrations``
    The database answers, and its schema is at the newest migration. Nothing is created or
    upgraded: a SQLite file that does not exist yet fails with "run script-ec2 db upgrade".
``private bucket list`` / ``private bucket read``
    One LIST of the private data location, then a download of its smallest listed object to a
    temporary file (deleted at once; its bytes are never shown).
``public write``
    A temporary object ``.script-ec2-doctor-<random>`` is written to the public target and deleted.
``broker`` / ``workers``
    With a broker_url: the broker accepts a connection (kombu), and at least one worker consumes
    the job queue (:func:`script_ec2.tasks.queue_name`), read from the queue's consumer count on
    an AMQP broker; workers run with remote control off, so they answer no ping. Without a
    broker_url both are skipped: jobs run in-process.
``session models`` / ``control models``
    The twelve session models fit needs (``sessions-<segment>-<weekday|weekend>``) have a complete
    version of kind ``sessions-gmm``, and every version of them verifies. Control models are
    optional (only a fit with ``work_control`` needs one): none is a skip, a damaged one a failure.

``quick=True`` (``doctor --quick``, the container health check) leaves out what is slow or has side
effects: the private read, the public write test and the checksum verification of the models
(their presence is still checked).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from script_ec2 import log
from script_ec2.errors import (
    AccessDenied,
    BucketNotFound,
    DatabaseUnavailable,
    EndpointUnreachable,
    ScriptEc2Error,
)
from script_ec2.settings import Settings, mask_url

if TYPE_CHECKING:
    from script_ec2.context import AppContext
    from script_ec2.registry import ModelVersion, Registry
    from script_ec2.store.interface import ObjectInfo, ObjectStore

BROKER_TIMEOUT_S = 5.0
AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
# A listing sample big enough to find a small object to read, small enough to stay one S3 page.
LIST_SAMPLE = 1000
PROBE_PREFIX = ".script-ec2-doctor-"
QUICK_SKIP = "skipped by --quick"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report. ``ok`` is None when the check was skipped."""

    name: str
    ok: bool | None
    detail: str
    hint: str = ""

    @property
    def status(self) -> str:
        return {True: "pass", False: "fail", None: "skip"}[self.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "status": self.status,
            "detail": self.detail,
            "hint": self.hint,
        }


def all_passed(checks: list[Check]) -> bool:
    """True when no check failed (skipped checks do not count against it)."""
    return not any(check.ok is False for check in checks)


def run_checks(ctx: AppContext, *, quick: bool = False) -> list[Check]:
    """Every check, in report order (see the module docstring)."""
    started = time.perf_counter()
    settings = ctx.settings
    groups: list[tuple[tuple[str, ...], Callable[[], list[Check]]]] = [
        (("settings",), lambda: [check_settings(settings)]),
        (("database", "migrations"), lambda: check_database(ctx)),
        (("private bucket list", "private bucket read"), lambda: check_private(ctx, quick=quick)),
        (("public write",), lambda: [check_public_write(ctx, quick=quick)]),
        (("broker", "workers"), lambda: check_broker(settings)),
        (("session models", "control models"), lambda: check_models(ctx, quick=quick)),
    ]
    checks: list[Check] = []
    for names, run in groups:
        checks.extend(_guarded(names, run))
    failed = [c.name for c in checks if c.ok is False]
    log.event(
        "doctor finished",
        level=logging.WARNING if failed else logging.INFO,
        passed=sum(c.ok is True for c in checks),
        failed=len(failed),
        skipped=sum(c.ok is None for c in checks),
        failed_checks=", ".join(failed),
        quick=quick,
        seconds=round(time.perf_counter() - started, 3),
    )
    return checks


def _guarded(names: tuple[str, ...], run: Callable[[], list[Check]]) -> list[Check]:
    """Run one group; an unexpected exception fails its checks instead of hiding the others."""
    try:
        return run()
    except Exception as exc:  # a diagnostic must report every check, whatever broke one
        detail = f"unexpected {type(exc).__name__}: {_one_line(exc)}"
        hint = "this is a bug or an unusual setup: run the matching command to see the traceback"
        return [Check(names[0], False, detail, hint), *(_skip(n, "not checked") for n in names[1:])]


# ---------------------------------------------------------------------------------- settings


def check_settings(settings: Settings) -> Check:
    """Locations and URLs parse, and the public target does not overlap the private data."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from script_ec2.store.uri import parse_uri

    name = "settings"
    for key in ("data_uri", "public_uri", "models_dir"):
        try:
            parse_uri(getattr(settings, key))
        except ScriptEc2Error as exc:
            return Check(name, False, f"{key}: {exc}", _setting_hint(key))
    try:
        make_url(settings.database_url)
    except (ArgumentError, ValueError):
        detail = f"database_url {mask_url(settings.database_url)!r} cannot be parsed"
        return Check(name, False, detail, _setting_hint("database_url"))
    if settings.broker_url:
        from script_ec2.tasks import check_broker_url, queue_name

        try:
            check_broker_url(settings.broker_url)
            queue_name(settings)
        except ScriptEc2Error as exc:
            return Check(name, False, str(exc), _setting_hint("broker_url"))
    overlap = _overlap(settings.data_uri, settings.public_uri)
    if overlap:
        detail = f"public_uri and data_uri overlap: {overlap}"
        hint = "publishing there would expose private data: point public_uri somewhere else"
        return Check(name, False, detail, hint)
    explicit = sorted(k for k, source in settings.sources.items() if source != "default")
    config = settings.config_file or "none"
    given = ", ".join(explicit) if explicit else "none"
    return Check(name, True, f"config file: {config}; set explicitly: {given}")


def _setting_hint(key: str) -> str:
    return f"fix {key}: --{key.replace('_', '-')}, SCRIPT_EC2_{key.upper()} or the config file"


def _overlap(private: str, public: str) -> str:
    """Why two store locations overlap (one inside the other), or "" if they do not."""
    from script_ec2.store.uri import S3Location, parse_uri

    a, b = parse_uri(private), parse_uri(public)
    if isinstance(a, S3Location) and isinstance(b, S3Location):
        nested = a.prefix.startswith(b.prefix) or b.prefix.startswith(a.prefix)
        if a.bucket == b.bucket and nested:
            return f"both in s3://{a.bucket}/ with prefixes {a.prefix!r} and {b.prefix!r}"
        return ""
    if isinstance(a, S3Location) or isinstance(b, S3Location):
        return ""
    ra, rb = a.root.resolve(), b.root.resolve()
    if ra == rb or ra in rb.parents or rb in ra.parents:
        return f"folders {ra} and {rb}"
    return ""


# ---------------------------------------------------------------------------------- database


def check_database(ctx: AppContext) -> list[Check]:
    """The database answers (nothing is created) and its schema is at head."""
    from script_ec2.db import migrate
    from script_ec2.db.engine import display_url

    url = ctx.settings.database_url
    missing = _missing_sqlite_file(url)
    if missing is not None:
        return [
            Check(
                "database",
                False,
                f"SQLite file {missing} does not exist",
                "run script-ec2 db upgrade to create it (or fix database_url)",
            ),
            _skip("migrations", "not checked: no database"),
        ]
    try:
        engine = ctx.raw_engine()
    except ScriptEc2Error as exc:
        hint = (
            "check that the server runs and accepts this host and user (pg_hba.conf, security "
            "group), and database_url"
            if isinstance(exc, DatabaseUnavailable)
            else _setting_hint("database_url")
        )
        return [Check("database", False, str(exc), hint), _skip("migrations", "not checked")]
    try:
        status = migrate.status(engine)
    finally:
        engine.dispose()
    reached = Check("database", True, f"{status['dialect']} at {display_url(status['url'])}")
    if status["up_to_date"]:
        return [reached, Check("migrations", True, f"at head {status['head']}")]
    detail = f"schema at {status['current'] or 'none'}, code expects {status['head']}"
    return [reached, Check("migrations", False, detail, status["advice"])]


def _missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist yet (connecting would create it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None  # connecting reports the bad URL
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if parsed.query.get("uri") == "true":
        return None
    path = Path(database)
    return None if path.exists() else path


# ---------------------------------------------------------------------------------- stores


def _store_hint(exc: ScriptEc2Error, permission: str) -> str:
    if isinstance(exc, AccessDenied):
        return f"the credentials need {permission} on this location (bucket policy, IAM role)"
    if isinstance(exc, BucketNotFound):
        return "check the bucket name or folder, and the region"
    if isinstance(exc, EndpointUnreachable):
        return "check the network path to S3 and s3_endpoint_url / AWS_ENDPOINT_URL"
    return "check the location and the credentials"


def check_private(ctx: AppContext, *, quick: bool) -> list[Check]:
    """One LIST of the private data, then (unless quick) a read of its smallest object."""
    try:
        store = ctx.data_store
        sample = list(itertools.islice(store.list(), LIST_SAMPLE))
    except ScriptEc2Error as exc:
        return [
            Check("private bucket list", False, str(exc), _store_hint(exc, "s3:ListBucket")),
            _skip("private bucket read", "not checked: the listing failed"),
        ]
    more = "+" if len(sample) == LIST_SAMPLE else ""
    listed = Check("private bucket list", True, f"{len(sample)}{more} objects in {store.uri}")
    if quick:
        return [listed, _skip("private bucket read", QUICK_SKIP)]
    if not sample:
        hint = "read permission is checked once the location holds an object"
        return [listed, _skip("private bucket read", f"{store.uri} is empty", hint)]
    return [listed, _read_smallest(store, sample)]


def _read_smallest(store: ObjectStore, sample: list[ObjectInfo]) -> Check:
    smallest = min(sample, key=lambda info: (info.size, info.key))
    try:
        with tempfile.TemporaryDirectory(prefix="script-ec2-doctor-") as folder:
            got = store.download(smallest.key, Path(folder) / "object")
    except ScriptEc2Error as exc:
        return Check("private bucket read", False, str(exc), _store_hint(exc, "s3:GetObject"))
    return Check("private bucket read", True, f"read {smallest.key} ({got.size} bytes)")


def check_public_write(ctx: AppContext, *, quick: bool) -> Check:
    """Write a temporary object to the public target, then delete it."""
    name = "public write"
    if quick:
        return _skip(name, QUICK_SKIP)
    key = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    try:
        store = ctx.public_store
    except ScriptEc2Error as exc:
        return Check(name, False, str(exc), _setting_hint("public_uri"))
    with _remove_created_folders(store):
        try:
            store.put_bytes(key, b"script-ec2 doctor write test; safe to delete\n")
        except ScriptEc2Error as exc:
            return Check(name, False, str(exc), _store_hint(exc, "s3:PutObject"))
        try:
            store.delete(key)
        except ScriptEc2Error as exc:
            hint = f"delete {key} by hand; the credentials need s3:DeleteObject for this check"
            return Check(name, False, f"wrote {key} but could not delete it: {exc}", hint)
    return Check(name, True, f"wrote and deleted {key} in {store.uri}")


@contextmanager
def _remove_created_folders(store: ObjectStore) -> Iterator[None]:
    """A local public folder that did not exist is created by the write: remove it again."""
    from script_ec2.store.local import LocalStore

    created: list[Path] = []
    if isinstance(store, LocalStore):
        folder = store.root
        while not folder.exists() and folder != folder.parent:
            created.append(folder)
            folder = folder.parent
    try:
        yield
    finally:
        for folder in created:  # deepest first; rmdir refuses a folder someone else filled
            try:
                folder.rmdir()
            except OSError:
                break


# ---------------------------------------------------------------------------------- broker


def check_broker(settings: Settings) -> list[Check]:
    """The broker accepts a connection, and workers consume the job queue (AMQP brokers)."""
    url = settings.broker_url
    if not url:
        detail = "no broker_url: jobs run in-process"
        return [_skip("broker", detail), _skip("workers", "not checked: no broker")]
    from script_ec2.tasks import check_broker_url, queue_name

    shown = mask_url(url)
    try:
        check_broker_url(url)
        queue = queue_name(settings)
    except ScriptEc2Error:
        detail = "not checked: broker_url or the queue name is invalid (see settings)"
        return [_skip("broker", detail), _skip("workers", "not checked")]
    try:
        import kombu
    except ImportError:
        hint = "install Celery into script-ec2's environment (it brings kombu)"
        return [
            Check("broker", False, "kombu is not installed", hint),
            _skip("workers", "not checked"),
        ]
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss") and importlib.util.find_spec("redis") is None:
        detail = "the redis transport needs the redis package, which is not installed"
        hint = "pip install redis into script-ec2's environment, or use RabbitMQ (amqp://)"
        return [Check("broker", False, detail, hint), _skip("workers", "not checked")]
    conn = kombu.Connection(url, connect_timeout=BROKER_TIMEOUT_S)
    try:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_S
        )
    except Exception as exc:  # kombu, amqp and redis each raise their own unrelated types
        with contextlib.suppress(Exception):
            conn.release()
        detail = f"cannot connect to broker {shown}: {_one_line(exc)}"
        hint = "check broker_url (host, port, user, password, vhost) and that the broker runs"
        return [Check("broker", False, detail, hint), _skip("workers", "not checked")]
    with conn:
        reached = Check("broker", True, f"connected to {shown}")
        if scheme not in AMQP_SCHEMES:
            detail = "not checked: consumer counts are known only on AMQP brokers (RabbitMQ)"
            return [reached, _skip("workers", detail, "check the workers' own logs")]
        return [reached, _count_consumers(conn, queue, shown)]


def _count_consumers(conn: Any, queue: str, shown: str) -> Check:
    # Workers run with remote control off (see script_ec2.tasks), so they answer no ping; the
    # queue's consumer count, from a passive declare, says whether any is taking jobs.
    from amqp.exceptions import NotFound

    hint = (
        "start one: script-ec2 worker (systemd script-ec2-worker.service, compose service "
        "worker); workers and senders must agree on SCRIPT_EC2_BROKER_QUEUE"
    )
    try:
        declared = conn.channel().queue_declare(queue=queue, passive=True)
    except NotFound:
        detail = f"queue {queue!r} does not exist on {shown}: no worker has started on it"
        return Check("workers", False, detail, hint)
    consumers, waiting = declared.consumer_count, declared.message_count
    if consumers == 0:
        detail = f"no worker consumes queue {queue!r} ({waiting} jobs waiting)"
        return Check("workers", False, detail, hint)
    return Check("workers", True, f"{consumers} consuming queue {queue!r} ({waiting} jobs waiting)")


# ---------------------------------------------------------------------------------- models


def session_model_names() -> list[str]:
    """Every session model fit can need: each forecast segment for each day type."""
    from script_ec2.forecast_fit import SEGMENT_LABELS, session_model_name
    from script_ec2.forecast_train import DAY_TYPES

    return [session_model_name(label, day) for day in DAY_TYPES for label in SEGMENT_LABELS]


def check_models(ctx: AppContext, *, quick: bool) -> list[Check]:
    """The session models fit needs are present (and, unless quick, verify); control: optional."""
    from script_ec2.forecast_train import KIND
    from script_ec2.training import CONTROL_KIND

    try:
        registry = ctx.registry
        versions = registry.list()
    except ScriptEc2Error as exc:
        return [
            Check("session models", False, str(exc), _setting_hint("models_dir")),
            _skip("control models", "not checked"),
        ]
    return [
        _session_models(registry, versions, KIND, quick),
        _control_models(registry, versions, CONTROL_KIND, quick),
    ]


def _usable_latest(versions: list[ModelVersion]) -> dict[str, ModelVersion]:
    """Per name, the version fit picks: the newest complete one whose model.json is readable."""
    latest: dict[str, ModelVersion] = {}
    for version in versions:  # listed by name, then version: the last usable one wins
        if version.content_hash and version.problem is None:
            latest[version.name] = version
    return latest


def _session_models(
    registry: Registry, versions: list[ModelVersion], kind: str, quick: bool
) -> Check:
    name = "session models"
    needed = session_model_names()
    latest = _usable_latest(versions)
    missing = [n for n in needed if n not in latest]
    found = [latest[n] for n in needed if n in latest]
    wrong = [f"{v.ref} is {v.kind}" for v in found if v.kind != kind]
    damaged = _damaged(registry, versions, set(needed), quick)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} of {len(needed)}: {', '.join(missing)}")
    if wrong:
        problems.append(f"not {kind}: {'; '.join(wrong)}")
    if damaged:
        problems.append(f"damaged: {'; '.join(damaged)}")
    if problems:
        hints = []
        if missing or wrong:
            hints.append("train them: script-ec2 train load-forecast")
        if damaged:
            hints.append(_DAMAGED_HINT)
        return Check(name, False, "; ".join(problems), "; ".join(hints))
    checked = "not verified: --quick" if quick else "every version verified"
    return Check(name, True, f"{len(needed)} of {len(needed)} present ({checked})")


def _control_models(
    registry: Registry, versions: list[ModelVersion], kind: str, quick: bool
) -> Check:
    name = "control models"
    present = sorted(n for n, v in _usable_latest(versions).items() if v.kind == kind)
    if not present:
        detail = "none (optional: a fit with work_control needs control-<county>-<rate>)"
        return _skip(name, detail, "script-ec2 train load-control --county NAME")
    damaged = _damaged(registry, versions, set(present), quick)
    if damaged:
        return Check(name, False, f"damaged: {'; '.join(damaged)}", _DAMAGED_HINT)
    checked = "not verified: --quick" if quick else "verified"
    return Check(name, True, f"{len(present)} present ({checked}): {', '.join(present)}")


_DAMAGED_HINT = "script-ec2 models verify NAME says why; re-train or restore the version"


def _damaged(
    registry: Registry, versions: list[ModelVersion], names: set[str], quick: bool
) -> list[str]:
    """``name@version (reason)`` for each damaged version of ``names``: an unreadable model.json
    always, a failed verification unless ``quick``. Incomplete versions (an interrupted save,
    removed by the next save of that name) are not damage."""
    found = {v.ref: str(v.problem) for v in versions if v.name in names and v.problem}
    if not quick:
        for model in sorted(names & {v.name for v in versions}):
            for result in registry.verify(model):
                if result.status == "damaged":
                    found[f"{result.name}@{result.version}"] = str(result.problem)
    return [f"{ref} ({problem})" for ref, problem in found.items()]


# ---------------------------------------------------------------------------------- helpers


def _skip(name: str, detail: str, hint: str = "") -> Check:
    return Check(name, None, detail, hint)


def _one_line(value: object) -> str:
    return mask_url(" ".join(str(value).split()))
