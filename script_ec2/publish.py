"""Publishing trained models to a public location, and pulling published models back.

SLAC keeps the charging data private and publishes only models: plain arrays and JSON with
checksums (never pickles), so that anyone can run the algorithms. The public location is an
``s3://bucket/prefix`` or a local folder, laid out as::

    <name>/<version>/model.json     the registry's four artifact files, byte for byte; a version
    <name>/<version>/arrays.npz     prefix is immutable once written
    <name>/<version>/README.md
    <name>/<version>/SHA256SUMS     always the last file of its version to be written
    index.json                      every published model and version: content hash, kind,
                                    creation time, licence, and each file's sha256 and size
    <name>/latest.json              {"name", "version", "content_hash", "sha256sums"}: the highest
                                    published version and the sha256 of its SHA256SUMS

**Publish order.** (1) each version's files, SHA256SUMS last, each upload read back and checked
(size and sha256); (2) ``index.json``, merged with the index already there; (3) last, each
model's ``latest.json``. So ``latest`` never names a version before all of its files are up and
verified, and ``index.json`` never lists one either: an interrupted publish leaves at most files
nobody points to, and running it again completes it. ``faults.checkpoint`` points
``publish.file``, ``publish.index`` and ``publish.latest`` follow each write (crash tests).

**Privacy guard** (nothing is uploaded unless every selected version passes): a version folder
holding any file besides :data:`~script_ec2.registry.ARTIFACT_FILES` (a CSV, Parquet, log …)
refuses the publish; model.json, the model card and SHA256SUMS are scanned by
:mod:`script_ec2.privacy` and any finding refuses it. Both raise
:class:`~script_ec2.privacy.PrivacyRefusal` (exit code 1: a failed publish). The card must also
have every section a public model needs (:data:`CARD_SECTIONS`). Its licence line is the
``model_licence`` setting recorded when the model was trained; a version is immutable, so a
changed setting only logs a warning.

**Idempotence.** A file already at the target with the same bytes is not written again, and
``index.json`` / ``latest.json`` are written only when their bytes change, so publishing an
identical version again writes nothing. A version whose files or index entry at the target differ
is a :class:`PublishConflict` (exit code 1), found before anything is written. ``--dry-run`` runs
the same checks and lists exactly the files a real run would upload.

**Records.** A real publish marks each version in the registry
(:meth:`~script_ec2.registry.Registry.mark_published`) and sets ``published_to`` /
``published_at`` of its ``model_versions`` row (inserting the row if the database has none).
Publishes to one target run one at a time under the run lock ``publish <target>``.

**Pull** reads ``index.json``, resolves ``NAME`` through ``<name>/latest.json`` (``NAME@N``
directly; no names: the latest of every model), downloads every file into a temporary staging
registry, and checks each against the index (size, sha256), against SHA256SUMS and, for a
``latest`` pull, against ``latest.json``; then the staged copy is loaded with every registry check
(schema, content hash, arrays without pickles). Only when every selected version passes is
anything installed: files are copied into the local registry under the published version number
with SHA256SUMS last, so a version becomes visible only once complete, and read back through the
registry. A local version with the same number and the same content is left alone; a damaged one
with the same content hash is repaired; a different one is a conflict and nothing is installed.

**Anonymous reads.** :func:`open_source` gives pull an S3 client that sends unsigned requests
(botocore ``UNSIGNED``) when asked (``anonymous=True``, the ``--anonymous`` flag) or when the
standard AWS chain finds no credentials (``anonymous=None``), which is how a public bucket is
read from a machine with no AWS account. Publishing always signs: writing needs credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from script_ec2 import faults, log
from script_ec2.errors import BucketNotFound, KeyNotFound, ScriptEc2Error
from script_ec2.privacy import Finding, PrivacyRefusal, scan_model
from script_ec2.registry import (
    ARTIFACT_FILES,
    CHECKSUM_FILE,
    MODEL_FILE,
    ModelError,
    Registry,
    parse_ref,
)
from script_ec2.store.interface import ObjectStore
from script_ec2.store.local import LocalStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from script_ec2.settings import Settings

INDEX_FILE = "index.json"
LATEST_FILE = "latest.json"
INDEX_FORMAT = "script-ec2-models"
INDEX_FORMAT_VERSION = 1
# The model-card sections a public model must have: (what the card calls it, where it comes from).
CARD_SECTIONS = (
    ("summary (what the model is)", ("record", "summary")),
    ("scope (segment, or county and rate)", ("record", "scope")),
    ("training data (period and counts)", ("record", "training")),
    ("metrics", ("metrics",)),
    ("intended use", ("record", "intended_use")),
    ("limitations", ("record", "limitations")),
    ("licence", ("licence",)),
)

_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_VERSION_KEY = re.compile(r"^[1-9][0-9]{0,8}\Z")
_SUM_LINE = re.compile(r"^([0-9a-f]{64}) [ *]([^/\s]+)$")

Progress = Callable[[str, int, int], None]
FileAction = Literal["upload", "unchanged"]
PullStatus = Literal["installed", "present", "repaired"]


class PublishError(ScriptEc2Error):
    """A publish that cannot go ahead: a bad index at the target, a failed read-back, a bad card."""


class PublishConflict(PublishError):
    """The target already holds different content under a version being published."""


class PullError(ScriptEc2Error):
    """A pull refused: missing, tampered or partial files, or a conflicting local version."""


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedFile:
    """One object a publish writes (``upload``) or finds already in place (``unchanged``)."""

    key: str
    data: bytes
    action: FileAction
    model: str  # "name@version", or "index" / "name latest" for the index and aliases

    @property
    def sha256(self) -> str:
        return _sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def row(self, status: str) -> dict[str, Any]:
        return {
            "file": self.key,
            "model": self.model,
            "size": self.size,
            "sha256": self.sha256,
            "status": status,
        }


@dataclass(frozen=True)
class VersionPlan:
    name: str
    version: int
    meta: dict[str, Any]
    files: tuple[PlannedFile, ...]  # upload order: SHA256SUMS last

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class PublishPlan:
    target: str
    versions: tuple[VersionPlan, ...]
    index: PlannedFile
    latest: tuple[PlannedFile, ...]

    def files(self) -> list[PlannedFile]:
        """Every planned file in upload order: versions, then the index, then the aliases."""
        return [f for v in self.versions for f in v.files] + [self.index, *self.latest]

    def uploads(self) -> list[PlannedFile]:
        return [f for f in self.files() if f.action == "upload"]


@dataclass(frozen=True)
class PublishOutcome:
    plan: PublishPlan
    dry_run: bool
    uploaded: tuple[str, ...] = ()

    def rows(self) -> list[dict[str, Any]]:
        """Dry run: exactly the files that would be uploaded. Real run: every file and its fate."""
        if self.dry_run:
            return [f.row("would upload") for f in self.plan.uploads()]
        done = set(self.uploaded)
        return [f.row("uploaded" if f.key in done else "unchanged") for f in self.plan.files()]

    def summary(self) -> str:
        refs = ", ".join(v.ref for v in self.plan.versions)
        if self.dry_run:
            return (
                f"dry run: {len(self.plan.uploads())} file(s) would be uploaded to "
                f"{self.plan.target} for {refs}; nothing was written"
            )
        if not self.uploaded:
            return f"{refs} already published to {self.plan.target}; nothing changed"
        return f"published {refs} to {self.plan.target} ({len(self.uploaded)} file(s) uploaded)"


def plan_publish(
    registry: Registry,
    target: ObjectStore,
    refs: Sequence[str] | None,
    *,
    licence: str | None = None,
) -> PublishPlan:
    """Check every selected version (privacy guard, model card, conflicts) and plan the writes.

    Reads the registry and the target; writes nothing. Raises :class:`PrivacyRefusal`,
    :class:`PublishError` or :class:`PublishConflict` before anything could be uploaded.
    """
    loaded = _guarded_versions(registry, _select_local(registry, refs), licence)
    index_bytes = _read_optional(target, INDEX_FILE)
    index = _parse_index(index_bytes, _where(target, INDEX_FILE), PublishError) or _empty_index()
    conflicts: list[str] = []
    versions: list[VersionPlan] = []
    for name, version, files, meta in loaded:
        planned = []
        for filename in ARTIFACT_FILES:
            key = f"{name}/{version}/{filename}"
            existing = _read_optional(target, key)
            if existing is not None and existing != files[filename]:
                conflicts.append(
                    f"{_where(target, key)} holds different content "
                    f"(sha256 {_sha256(existing)[:12]}…, this registry has "
                    f"{_sha256(files[filename])[:12]}…)"
                )
            action: FileAction = "unchanged" if existing is not None else "upload"
            planned.append(PlannedFile(key, files[filename], action, f"{name}@{version}"))
        entry = _index_entry(meta, files)
        old = index["models"].get(name, {}).get("versions", {}).get(str(version))
        if old is not None and not _same_content(old, entry):
            conflicts.append(
                f"{_where(target, INDEX_FILE)} lists {name}@{version} with content hash "
                f"{str(old.get('content_hash'))[:12]}…, this registry has "
                f"{entry['content_hash'][:12]}…"
            )
        model = index["models"].setdefault(name, {"versions": {}})
        model["versions"][str(version)] = entry
        versions.append(VersionPlan(name, version, meta, tuple(planned)))
    if conflicts:
        raise PublishConflict(
            f"refusing to publish to {target.uri}: {conflicts[0]}"
            + (f" (+{len(conflicts) - 1} more)" if len(conflicts) > 1 else "")
            + "; published versions are immutable: publish a new version instead; "
            "nothing was uploaded"
        )

    new_index = _json_bytes(index)
    index_file = PlannedFile(
        INDEX_FILE, new_index, "unchanged" if new_index == index_bytes else "upload", "index"
    )
    latest = _latest_aliases(target, index, [v.name for v in versions])
    return PublishPlan(_location(target), tuple(versions), index_file, tuple(latest))


_Loaded = tuple[str, int, dict[str, bytes], dict[str, Any]]


def _guarded_versions(
    registry: Registry, selected: Sequence[tuple[str, int]], licence: str | None
) -> list[_Loaded]:
    """The verified files and metadata of each version, once all pass the privacy guard and
    have a complete model card; :class:`PrivacyRefusal` or :class:`PublishError` if not."""
    findings: list[tuple[str, Finding]] = []
    card_gaps: list[str] = []
    loaded: list[_Loaded] = []
    for name, version in selected:
        ref = f"{name}@{version}"
        extra = _extra_files(registry, name, version)
        if extra:
            findings += [
                (
                    ref,
                    Finding(
                        key,
                        "(version folder)",
                        "not-an-artifact",
                        "is not a model artifact (only " + ", ".join(ARTIFACT_FILES) + ")",
                    ),
                )
                for key in extra
            ]
            continue
        files = registry.artifact_files(name, version)
        meta = json.loads(files[MODEL_FILE])
        findings += [(ref, f) for f in scan_model(files)]
        missing = _card_gaps(meta)
        if missing:
            card_gaps.append(f"{ref} lacks {', '.join(missing)}")
        if licence is not None and meta.get("licence") != licence:
            log.event(
                "published with the licence recorded at training",
                logging.WARNING,
                model=ref,
                recorded=str(meta.get("licence")),
                setting=licence,
            )
        loaded.append((name, version, files, meta))
    if findings:
        raise _refusal(findings, registry)
    if card_gaps:
        raise PublishError(
            f"refusing to publish: the model card of {'; '.join(card_gaps)}; a public model "
            "needs every section (re-train it with this script-ec2); nothing was uploaded"
        )
    return loaded


def _latest_aliases(
    target: ObjectStore, index: Mapping[str, Any], names: Sequence[str]
) -> list[PlannedFile]:
    """Each model's latest.json: the highest version the (merged) index lists."""
    latest = []
    for name in dict.fromkeys(names):
        entries = index["models"][name]["versions"]
        top = max(entries, key=int)
        alias = _json_bytes(
            {
                "name": name,
                "version": int(top),
                "content_hash": entries[top]["content_hash"],
                "sha256sums": entries[top]["files"][CHECKSUM_FILE]["sha256"],
            }
        )
        key = f"{name}/{LATEST_FILE}"
        same = _read_optional(target, key) == alias
        latest.append(PlannedFile(key, alias, "unchanged" if same else "upload", f"{name} latest"))
    return latest


def publish(
    registry: Registry,
    target: ObjectStore,
    refs: Sequence[str] | None,
    *,
    dry_run: bool = False,
    engine: Engine | None = None,
    registry_uri: str = "",
    licence: str | None = None,
    lock_dir: Path | None = None,
    progress: Progress | None = None,
) -> PublishOutcome:
    """Publish ``refs`` (``NAME`` or ``NAME@VERSION``) to ``target`` (see the module docstring).

    ``refs=None`` publishes the latest complete version of every model in the registry.

    With ``dry_run`` only :func:`plan_publish` runs: no upload, no lock, no record. ``engine``
    (with ``lock_dir``) serialises publishes to one target and records them in
    ``model_versions``; without it only the registry's publish marks are written.
    """
    if dry_run:
        outcome = PublishOutcome(plan_publish(registry, target, refs, licence=licence), True)
        log.event(outcome.summary(), would_upload=len(outcome.plan.uploads()))
        return outcome
    with _maybe_lock(engine, f"publish {_location(target)}", lock_dir):
        plan = plan_publish(registry, target, refs, licence=licence)
        uploaded = _execute(plan, target, progress)
        published_at = datetime.now(UTC)
        for version in plan.versions:
            registry.mark_published(version.name, version.version, plan.target)
        if engine is not None:
            _record_published(engine, plan, registry_uri, published_at)
    outcome = PublishOutcome(plan, False, tuple(uploaded))
    log.event(
        outcome.summary(),
        versions=len(plan.versions),
        uploaded=len(uploaded),
        unchanged=len(plan.files()) - len(uploaded),
    )
    return outcome


def _execute(plan: PublishPlan, target: ObjectStore, progress: Progress | None) -> list[str]:
    """The writes of a plan in the safe order; returns the keys written."""
    uploads = plan.uploads()
    uploaded: list[str] = []

    def write(planned: PlannedFile, point: str) -> None:
        target.put_bytes(planned.key, planned.data)
        _verify_upload(target, planned)
        uploaded.append(planned.key)
        faults.checkpoint(point)
        if progress is not None:
            progress(planned.key, len(uploaded), len(uploads))

    for version in plan.versions:
        for planned in version.files:
            if planned.action == "upload":
                write(planned, "publish.file")
    if plan.index.action == "upload":
        write(plan.index, "publish.index")
    for alias in plan.latest:
        if alias.action == "upload":
            write(alias, "publish.latest")
    return uploaded


def _verify_upload(target: ObjectStore, planned: PlannedFile) -> None:
    info = target.head(planned.key)
    back = target.get_bytes(planned.key) if info.size == planned.size else b""
    if info.size != planned.size or _sha256(back) != planned.sha256:
        raise PublishError(
            f"uploaded {_where(target, planned.key)} but reading it back gave "
            f"{info.size} bytes with another checksum (expected {planned.size} bytes, sha256 "
            f"{planned.sha256[:12]}…); latest was not moved: run publish again"
        )


def _record_published(
    engine: Engine, plan: PublishPlan, registry_uri: str, published_at: datetime
) -> None:
    """Set published_to/published_at of each version's row; insert rows the database lacks."""
    from sqlalchemy import insert, select, update

    from script_ec2.db.models import ModelRecord

    with engine.begin() as conn:
        for version in plan.versions:
            meta = version.meta
            row = conn.execute(
                select(ModelRecord.id, ModelRecord.published_to).where(
                    ModelRecord.name == version.name,
                    ModelRecord.content_hash == meta["content_hash"],
                )
            ).first()
            if row is None:
                conn.execute(
                    insert(ModelRecord).values(
                        **_record_values(meta, registry_uri),
                        published_to=plan.target,
                        published_at=published_at,
                    )
                )
            elif row.published_to != plan.target:
                conn.execute(
                    update(ModelRecord)
                    .where(ModelRecord.id == row.id)
                    .values(published_to=plan.target, published_at=published_at)
                )


def _record_values(meta: Mapping[str, Any], registry_uri: str) -> dict[str, Any]:
    return {
        "name": meta["name"],
        "version": meta["version"],
        "kind": meta["kind"],
        "content_hash": meta["content_hash"],
        "fingerprint": meta["fingerprint"],
        "registry_uri": registry_uri,
        "created_at": _parse_time(meta.get("created_at")),
        "metrics": json.dumps(meta.get("metrics") or {}, sort_keys=True, default=str),
    }


def _select_local(registry: Registry, refs: Sequence[str] | None) -> list[tuple[str, int]]:
    """(name, version) for each ref, the latest complete version for a bare name; no repeats.

    ``None`` selects every model in the registry.
    """
    if refs is None:
        refs = sorted({v.name for v in registry.list()})
        if not refs:
            raise PublishError(
                f"the registry at {registry.store.uri} holds no complete model version to "
                "publish (train models first: script-ec2 train load-forecast)"
            )
    if not refs:
        raise PublishError("name at least one model to publish (NAME or NAME@VERSION)")
    chosen: dict[tuple[str, int], None] = {}
    for ref in refs:
        name, version = parse_ref(ref)
        if version is None:
            versions = registry.list(name)
            if not versions:
                raise ModelError(
                    f"model {name!r} has no complete version in the registry at "
                    f"{registry.store.uri} (script-ec2 models list shows what exists)"
                )
            version = versions[-1].version
        chosen[(name, version)] = None
    return list(chosen)


def _extra_files(registry: Registry, name: str, version: int) -> list[str]:
    """Keys under the version folder that are not artifacts (the registry's own temp files are
    never listed)."""
    prefix = f"{name}/{version}/"
    try:
        infos = list(registry.store.list(prefix))
    except BucketNotFound:
        return []  # an empty local registry: artifact_files reports the missing version
    return [
        f"{prefix}{i.key[len(prefix) :]}"
        for i in infos
        if i.key[len(prefix) :] not in ARTIFACT_FILES
    ]


def _refusal(findings: Sequence[tuple[str, Finding]], registry: Registry) -> PrivacyRefusal:
    for ref, finding in findings:
        log.event("privacy finding", logging.WARNING, model=ref, finding=str(finding))
    ref, first = findings[0]
    more = f" (+{len(findings) - 1} more finding(s), logged above)" if len(findings) > 1 else ""
    if first.rule == "not-an-artifact":
        what = (
            f"{registry.store.uri.rstrip('/')}/{first.file} {first.detail}{more}; "
            "remove it from the version folder (private data never belongs in the registry)"
        )
    else:
        what = (
            f"{first}{more}; private identifiers or data rows must not reach a model's metadata "
            "or card: fix the training record and train a new version"
        )
    return PrivacyRefusal(f"refusing to publish {ref}: {what}; nothing was uploaded")


def _card_gaps(meta: Mapping[str, Any]) -> list[str]:
    gaps = []
    for label, path in CARD_SECTIONS:
        value: Any = meta
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        if not value or (isinstance(value, str) and not value.strip()):
            gaps.append(label)
    return gaps


# --------------------------------------------------------------------------- index


def _empty_index() -> dict[str, Any]:
    return {"format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION, "models": {}}


def _index_entry(meta: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "content_hash": meta["content_hash"],
        "created_at": meta["created_at"],
        "kind": meta["kind"],
        "licence": meta["licence"],
        "schema_version": meta["schema_version"],
        "files": {
            filename: {"sha256": _sha256(files[filename]), "size": len(files[filename])}
            for filename in ARTIFACT_FILES
        },
    }


def _same_content(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    files = old.get("files")
    old_files: Mapping[str, Any] = files if isinstance(files, Mapping) else {}
    return old.get("content_hash") == new["content_hash"] and all(
        isinstance(old_files.get(f), Mapping)
        and old_files[f].get("sha256") == new["files"][f]["sha256"]
        for f in ARTIFACT_FILES
    )


def _parse_index(
    data: bytes | None, where: str, error: type[ScriptEc2Error]
) -> dict[str, Any] | None:
    """A checked index.json, None if absent; ``error`` names a malformed one."""
    if data is None:
        return None
    try:
        index = json.loads(data)
    except ValueError:
        raise error(
            f"{where} is not valid JSON; restore it or remove it and publish again"
        ) from None
    if (
        not isinstance(index, dict)
        or index.get("format") != INDEX_FORMAT
        or not isinstance(index.get("models"), dict)
    ):
        raise error(f"{where} is not a script-ec2 model index (format {INDEX_FORMAT!r})")
    if index.get("format_version") != INDEX_FORMAT_VERSION:
        raise error(
            f"{where} has index format version {index.get('format_version')!r}; this script-ec2 "
            f"reads version {INDEX_FORMAT_VERSION} (use a matching release)"
        )
    for name, model in index["models"].items():
        versions = model.get("versions") if isinstance(model, dict) else None
        if not isinstance(versions, dict) or not all(
            _VERSION_KEY.match(str(v)) and _entry_ok(e) for v, e in versions.items()
        ):
            raise error(f"{where}: the entry of model {name!r} is malformed")
    return index


def _entry_ok(entry: Any) -> bool:
    if not isinstance(entry, dict) or not _HEX64.match(str(entry.get("content_hash"))):
        return False
    files = entry.get("files")
    return isinstance(files, dict) and all(
        isinstance(files.get(f), dict)
        and _HEX64.match(str(files[f].get("sha256")))
        and isinstance(files[f].get("size"), int)
        for f in ARTIFACT_FILES
    )


# --------------------------------------------------------------------------- pull


@dataclass(frozen=True)
class PulledVersion:
    name: str
    version: int
    content_hash: str
    status: PullStatus

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "content_hash": self.content_hash,
            "status": self.status,
        }


@dataclass(frozen=True)
class _Wanted:
    name: str
    version: int
    entry: dict[str, Any]
    latest_sums: str | None = None  # sha256 of SHA256SUMS when chosen through latest.json
    staged: dict[str, Path] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def open_source(uri: str, settings: Settings, anonymous: bool | None = None) -> ObjectStore:
    """The store to pull from; for S3, unsigned when ``anonymous`` (None: when no credentials)."""
    from script_ec2.store import S3Store, open_store

    store = open_store(uri, settings)
    if isinstance(store, S3Store) and (
        anonymous or (anonymous is None and not _have_credentials(settings))
    ):
        _sign_nothing(store)
    return store


def _have_credentials(settings: Settings) -> bool:
    import boto3

    return (
        boto3.session.Session(region_name=settings.aws_region or None).get_credentials() is not None
    )


def _sign_nothing(store: Any) -> None:
    """Swap the store's client for one that sends unsigned (anonymous) requests.

    Same endpoint, region, retries and addressing as the signed client; only the signature
    changes, so a public bucket answers exactly as it would to ``aws s3 --no-sign-request``.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    signed = store._client
    config = signed.meta.config.merge(Config(signature_version=UNSIGNED))
    session = boto3.session.Session(region_name=signed.meta.region_name)
    store._client = session.client("s3", endpoint_url=signed.meta.endpoint_url, config=config)


def pull(
    source: ObjectStore,
    registry: Registry,
    refs: Sequence[str] = (),
    *,
    engine: Engine | None = None,
    registry_uri: str = "",
    lock_dir: Path | None = None,
    staging_dir: Path | None = None,
    progress: Progress | None = None,
) -> list[PulledVersion]:
    """Download, verify and install published versions (see the module docstring).

    Nothing is installed unless every selected version passes every check. ``engine`` (with
    ``lock_dir``) serialises pulls into one registry and records the versions in
    ``model_versions``, as training does.
    """
    where = _where(source, INDEX_FILE)
    index = _parse_index(_read_optional(source, INDEX_FILE), where, PullError)
    if index is None:
        raise PullError(
            f"{where} does not exist: {source.uri} holds no published models "
            "(check the URI, or publish there first)"
        )
    with (
        _maybe_lock(engine, f"pull into {registry.store.uri}", lock_dir),
        tempfile.TemporaryDirectory(prefix="script-ec2-pull-", dir=staging_dir) as tmp,
    ):
        wanted = _select_published(source, index, refs)
        staging = Path(tmp)
        total = len(wanted) * len(ARTIFACT_FILES)
        for number, item in enumerate(wanted):
            _stage(source, item, staging)
            if progress is not None:
                progress(item.ref, (number + 1) * len(ARTIFACT_FILES), total)
        staged = Registry(LocalStore(staging))
        for item in wanted:
            try:
                staged.artifact_files(item.name, item.version)
            except ModelError as exc:
                raise PullError(
                    f"refusing to pull from {source.uri}: {exc}; nothing was installed"
                ) from None
        plan = [(item, _local_status(registry, item)) for item in wanted]
        results = []
        for item, status in plan:
            if status != "present":
                _install(registry, item, repair=status == "repaired")
            results.append(
                PulledVersion(item.name, item.version, item.entry["content_hash"], status)
            )
        if engine is not None:
            _record_pulled(engine, registry, results, registry_uri)
    log.event(
        "pull finished",
        source=source.uri,
        versions=len(results),
        installed=sum(r.status != "present" for r in results),
    )
    return results


def _select_published(
    source: ObjectStore, index: Mapping[str, Any], refs: Sequence[str]
) -> list[_Wanted]:
    models: Mapping[str, Any] = index["models"]
    chosen: dict[tuple[str, int], _Wanted] = {}
    names: list[tuple[str, int | None]] = [parse_ref(ref) for ref in refs]
    if not names:
        names = [(name, None) for name in sorted(models)]
    for name, version in names:
        versions = models.get(name, {}).get("versions", {})
        have = ", ".join(sorted(versions, key=int)) or "none"
        if not versions:
            listed = ", ".join(sorted(models)) or "none"
            raise PullError(
                f"model {name!r} is not published at {source.uri} (published models: {listed})"
            )
        latest_sums = None
        if version is None:
            version, latest_sums = _latest(source, name, versions)
        entry = versions.get(str(version))
        if entry is None:
            raise PullError(
                f"{name}@{version} is not published at {source.uri} ({name} versions: {have})"
            )
        previous = chosen.get((name, version))
        chosen[(name, version)] = _Wanted(
            name, version, entry, latest_sums or (previous.latest_sums if previous else None)
        )
    return list(chosen.values())


def _latest(source: ObjectStore, name: str, versions: Mapping[str, Any]) -> tuple[int, str]:
    key = f"{name}/{LATEST_FILE}"
    data = _read_optional(source, key)
    if data is None:
        raise PullError(
            f"{_where(source, key)} does not exist: no version of {name} is completely published "
            "yet (name a version as NAME@N, or finish the publish)"
        )
    try:
        alias = json.loads(data)
        version = int(alias["version"])
        sums = str(alias["sha256sums"])
        content_hash = str(alias["content_hash"])
    except (ValueError, KeyError, TypeError):
        raise PullError(f"{_where(source, key)} is malformed; publish the model again") from None
    entry = versions.get(str(version))
    if entry is None or entry.get("content_hash") != content_hash:
        raise PullError(
            f"{_where(source, key)} names {name}@{version}, which {INDEX_FILE} does not list "
            "with that content; publish the model again"
        )
    return version, sums


def _stage(source: ObjectStore, item: _Wanted, staging: Path) -> None:
    """Download a version's files into the staging registry and check them against the index."""
    expected = item.entry["files"]
    for filename in ARTIFACT_FILES:
        key = f"{item.name}/{item.version}/{filename}"
        dest = staging / item.name / str(item.version) / filename
        try:
            source.download(key, dest)
        except KeyNotFound:
            raise PullError(
                f"refusing to pull {item.ref}: {_where(source, key)} is missing (a partial "
                "publish?); nothing was installed"
            ) from None
        data = dest.read_bytes()
        if len(data) != expected[filename]["size"] or _sha256(data) != expected[filename]["sha256"]:
            raise PullError(
                f"refusing to pull {item.ref}: {_where(source, key)} does not match the checksum "
                f"in {INDEX_FILE} (tampered or partially written); nothing was installed"
            )
        item.staged[filename] = dest
    sums = item.staged[CHECKSUM_FILE].read_bytes()
    if item.latest_sums is not None and _sha256(sums) != item.latest_sums:
        raise PullError(
            f"refusing to pull {item.ref}: its {CHECKSUM_FILE} does not match "
            f"{_where(source, f'{item.name}/{LATEST_FILE}')}; nothing was installed"
        )
    listed = _parse_sums(sums)
    for filename in ARTIFACT_FILES:
        if filename == CHECKSUM_FILE:
            continue
        if listed.get(filename) != expected[filename]["sha256"]:
            raise PullError(
                f"refusing to pull {item.ref}: {CHECKSUM_FILE} disagrees with {INDEX_FILE} about "
                f"{filename}; nothing was installed"
            )


def _parse_sums(data: bytes) -> dict[str, str]:
    sums = {}
    for line in data.decode("ascii", errors="replace").splitlines():
        match = _SUM_LINE.match(line)
        if match:
            sums[match[2]] = match[1]
    return sums


def _local_status(registry: Registry, item: _Wanted) -> PullStatus:
    """What pulling ``item`` will do locally; :class:`PullError` for a conflicting version."""
    local = {v.version: v for v in registry.list(item.name)}
    mine = local.get(item.version)
    if mine is None:
        return "installed"
    if mine.content_hash is not None and mine.content_hash != item.entry["content_hash"]:
        raise PullError(
            f"the local registry at {registry.store.uri} already has {item.ref} with different "
            f"content (content hash {mine.content_hash[:12]}…, published "
            f"{item.entry['content_hash'][:12]}…); pull into another --models-dir or remove the "
            "local version; nothing was installed"
        )
    try:
        registry.artifact_files(item.name, item.version)
    except ModelError:
        return "repaired"
    return "present"


def _install(registry: Registry, item: _Wanted, *, repair: bool) -> None:
    """Copy a staged version into the registry, SHA256SUMS last, and read it back verified."""
    store = registry.store
    base = f"{item.name}/{item.version}/"
    _clear_folder(store, base)
    try:
        for filename in ARTIFACT_FILES:
            store.upload(item.staged[filename], base + filename)
            faults.checkpoint("pull.file")
        registry.artifact_files(item.name, item.version)
    except BaseException:
        # Leave no half version: without SHA256SUMS the registry ignores the rest anyway.
        with contextlib.suppress(ScriptEc2Error):
            _clear_folder(store, base)
        raise
    if repair:
        log.event("repaired from the published copy", logging.WARNING, model=item.ref)


def _clear_folder(store: ObjectStore, base: str) -> None:
    """Delete whatever a version folder holds, SHA256SUMS first (so it is never half-valid)."""
    try:
        keys = [info.key for info in store.list(base)]
    except BucketNotFound:
        return
    for key in sorted(keys, key=lambda k: k != base + CHECKSUM_FILE):
        store.delete(key)


def _record_pulled(
    engine: Engine, registry: Registry, pulled: Sequence[PulledVersion], registry_uri: str
) -> None:
    from sqlalchemy import insert, select

    from script_ec2.db.models import ModelRecord

    with engine.begin() as conn:
        for version in pulled:
            exists = conn.execute(
                select(ModelRecord.id).where(
                    ModelRecord.name == version.name,
                    ModelRecord.content_hash == version.content_hash,
                )
            ).first()
            if exists is None:
                meta = registry.load(version.name, version.version).meta
                conn.execute(insert(ModelRecord).values(**_record_values(meta, registry_uri)))


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _maybe_lock(engine: Engine | None, name: str, lock_dir: Path | None) -> Iterator[None]:
    if engine is None or lock_dir is None:
        yield
        return
    from script_ec2.lock import run_lock

    with run_lock(engine, name, lock_dir):
        yield


def _read_optional(store: ObjectStore, key: str) -> bytes | None:
    """An object's bytes, or None when it (or a local store's folder) does not exist yet."""
    try:
        return store.get_bytes(key)
    except KeyNotFound:
        return None
    except BucketNotFound:
        if isinstance(store, LocalStore) and not store.root.exists():
            return None  # publishing creates the folder; a dry run must not
        raise


def _location(store: ObjectStore) -> str:
    return str(store.root) if isinstance(store, LocalStore) else store.uri.rstrip("/")


def _where(store: ObjectStore, key: str) -> str:
    return f"{store.uri.rstrip('/')}/{key}"


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_time(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.now(UTC)
