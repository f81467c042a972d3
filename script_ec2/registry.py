"""The model registry: immutable, numbered, checksummed model versions on any object store.

A registry lives under one store root (a local folder or an ``s3://bucket/prefix``) and holds, per
model name, numbered versions 1, 2, 3… Each version is a folder of exactly four files
(:data:`ARTIFACT_FILES`)::

    <name>/<version>/model.json    what the model is (schema below), no data rows
    <name>/<version>/arrays.npz    its numbers: one .npy member per array, no pickles
    <name>/<version>/README.md     a model card generated from model.json
    <name>/<version>/SHA256SUMS    sha256sum-format checksums of the three files above

and two optional name-level files kept *outside* the version folders, so marking a version never
changes its bytes::

    <name>/published.json          where each version was published (written by mark_published)
    <name>/removed.json            numbers of removed versions, never handed out again

``model.json`` (``schema_version`` :data:`SCHEMA_VERSION`) holds: kind, name, version, created_at
(UTC), content_hash, parameters, metrics, fingerprint (of the training data, never the data),
libraries (name → version), licence, record (free-form, see below) and arrays (name → member,
shape, dtype).

**Content addressing.** :func:`content_hash` covers kind, name, parameters, fingerprint and the
arrays' names, dtypes, shapes and bytes — not the creation time, library versions, metrics or
record. Saving content that an intact version already holds returns that version
(``created=False``) instead of writing a duplicate; different content always gets the next number.
``arrays.npz`` is written deterministically (members in name order, stored uncompressed, every
zip timestamp fixed at 1980-01-01), so equal arrays give equal bytes.

**Crash safety.** A save writes model.json, arrays.npz and README.md first and ``SHA256SUMS``
last. A version folder without ``SHA256SUMS`` is *incomplete*: listing and loading ignore it and
the next save of that name deletes it. Removal deletes ``SHA256SUMS`` first for the same reason.
The registry assumes one writer at a time (the commands that save run under the run lock).

**Loading verifies everything** and refuses with a one-line :class:`ModelError`: a missing or
unexpected file, a malformed ``SHA256SUMS``, a checksum mismatch, an unknown schema version, a
model.json that does not match its folder, array members that differ from model.json, or a content
hash that no longer matches. Arrays are read with ``allow_pickle=False``.

**The model card** (README.md) is built from model.json. It reads these optional ``record`` keys:
``title`` (str), ``summary`` (str: what the model is), ``scope`` and ``training`` (flat dicts shown
as tables: segment, county, rate, period, counts — aggregates only), ``units`` (dict),
``intended_use`` (str) and ``limitations`` (list of str). Other record keys stay in model.json only.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import hashlib
import io
import json
import math
import re
import struct
import sys
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

from script_ec2.errors import KeyNotFound, ScriptEc2Error, StoreError, UsageError
from script_ec2.store.interface import ObjectInfo, ObjectStore
from script_ec2.store.local import LocalStore

if TYPE_CHECKING:
    import numpy as np

SCHEMA_VERSION = 1
ARTIFACT_FILES = ("model.json", "arrays.npz", "README.md", "SHA256SUMS")
MODEL_FILE, ARRAYS_FILE, CARD_FILE, CHECKSUM_FILE = ARTIFACT_FILES
PUBLISHED_FILE = "published.json"
REMOVED_FILE = "removed.json"
MAX_NAME_LENGTH = 100

_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_ARRAY_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SUM_LINE_RE = re.compile(r"^([0-9a-f]{64}) [ *]([^/\s]+)$")
# Booleans, integers, floats and complex numbers: nothing that needs a pickle.
_ARRAY_KINDS = "biufc"
# 1980-01-01 00:00 is the earliest time a zip entry can carry.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ZIP_UNIX = 3

VerifyStatus = Literal["ok", "damaged", "incomplete"]


class ModelError(ScriptEc2Error):
    """A model version that is missing, incomplete, damaged or cannot be changed as asked."""


@dataclass(frozen=True)
class ModelVersion:
    """One complete version as the registry lists it (kind etc. are None if model.json is bad)."""

    name: str
    version: int
    kind: str | None
    created_at: str | None
    content_hash: str | None
    published: bool = False
    published_to: tuple[str, ...] = ()
    problem: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "created_at": self.created_at,
            "content_hash": self.content_hash,
            "published": self.published,
            "published_to": list(self.published_to),
            "problem": self.problem,
        }


@dataclass(frozen=True)
class SaveResult:
    version: ModelVersion
    created: bool  # False: identical content was already stored under ``version``


@dataclass(frozen=True)
class LoadedModel:
    """A verified version: its model.json as a dict and its arrays."""

    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def version(self) -> int:
        return int(self.meta["version"])


@dataclass(frozen=True)
class VerifyResult:
    name: str
    version: int
    status: VerifyStatus
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "problem": self.problem,
        }


def slug(text: str) -> str:
    """Lower-case ASCII words joined by ``-``: ``"DC Fast"`` → ``"dc-fast"``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    result = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if not result:
        raise UsageError(f"{text!r} has no letters or digits to build a model name from")
    return result


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`UsageError`."""
    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise UsageError(
            f"invalid model name {name!r}: use lower-case letters and digits joined by single "
            f"'-', at most {MAX_NAME_LENGTH} characters (e.g. sessions-workplace-weekday)"
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"name@3"`` → ``("name", 3)``; ``"name"`` or ``"name@latest"`` → ``("name", None)``."""
    name, at, version_text = ref.strip().partition("@")
    check_name(name)
    if not at or version_text == "latest":
        return name, None
    if not _VERSION_RE.match(version_text):
        raise UsageError(
            f"invalid model reference {ref!r}: the version after '@' must be a whole number "
            "from 1 or 'latest' (e.g. sessions-workplace-weekday@3)"
        )
    return name, int(version_text)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys; numpy scalars and dates become plain values, NaN fails."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default
    )


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} values cannot be stored in model.json")


def _normalised(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays in name order, C-contiguous and little-endian; checks names and dtypes."""
    import numpy as np

    if not arrays:
        raise ValueError("a model needs at least one array")
    result = {}
    for name in sorted(arrays):
        if not _ARRAY_NAME_RE.match(name):
            raise ValueError(f"invalid array name {name!r}: use [a-z][a-z0-9_]*")
        array = np.asarray(arrays[name])
        if array.dtype.kind not in _ARRAY_KINDS:
            raise ValueError(
                f"array {name!r} has dtype {array.dtype}; only numeric and boolean arrays are "
                "stored (no objects, strings or pickles)"
            )
        # astype, not ascontiguousarray, which would turn a 0-d array into shape (1,).
        result[name] = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
    return result


def content_hash(
    kind: str,
    name: str,
    parameters: Mapping[str, Any],
    fingerprint: str,
    arrays: Mapping[str, np.ndarray],
) -> str:
    """sha256 over kind, name, parameters, fingerprint and the arrays (name, dtype, shape, bytes).

    Parameters enter as canonical JSON (sorted keys, compact), so the order of their keys does not
    matter and a model.json read back hashes the same as the dict that was saved.
    """
    normalised = _normalised(arrays)
    digest = hashlib.sha256()
    header = {
        "kind": kind,
        "name": name,
        "parameters": parameters,
        "fingerprint": fingerprint,
        "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in normalised.items()],
    }
    digest.update(canonical_json(header).encode())
    for array in normalised.values():
        digest.update(b"\x00")
        digest.update(array.tobytes(order="C"))
    return digest.hexdigest()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A standard ``.npz`` whose bytes depend only on the arrays (see the module docstring)."""
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in _normalised(arrays).items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = _ZIP_UNIX
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, read without pickles; :class:`ValueError` if unreadable."""
    import numpy as np

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"not a readable .npz file ({type(exc).__name__})") from None


class NpzArrays(Mapping[str, "np.ndarray"]):
    """The arrays of ``.npz`` bytes as :func:`read_npz` reads them, but decoded on first use.

    The names come from the zip directory at once (:class:`ValueError` if it is unreadable); the
    first array asked for imports numpy and decodes them all. :meth:`float64_columns` reads a
    float64 table with the standard library alone, so a caller that only needs the numbers as
    Python floats (a cached fit printed as JSON) never imports numpy.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = archive.namelist()
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"not a readable .npz file ({type(exc).__name__})") from None
        # As numpy.load, and so read_npz, names them: member "x.npy" holds the array "x".
        self._members = {(m[:-4] if m.endswith(".npy") else m): m for m in members}
        self._arrays: dict[str, np.ndarray] | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._members:
            raise KeyError(name)
        if self._arrays is None:
            self._arrays = read_npz(self.data)
        return self._arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"NpzArrays({', '.join(self._members)})"

    def float64_columns(self, name: str) -> tuple[int, list[list[float]]] | None:
        """(rows, columns as lists of floats) of the array ``name``, read without numpy.

        A 1-D array is one column. None unless the array is a 1-D or 2-D, C-order, little-endian
        float64 one (every array :func:`npz_bytes` writes from float64 data); read it with numpy
        then. :class:`KeyError` if there is no such array.
        """
        with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
            return _npy_float64_columns(archive.read(self._members[name]))


_NPY_MAGIC = b"\x93NUMPY"


def _npy_float64_columns(member: bytes) -> tuple[int, list[list[float]]] | None:
    """(rows, columns) of a ``.npy`` file of a 1-D or 2-D C-order ``<f8`` array, else None."""
    from array import array

    if not member.startswith(_NPY_MAGIC) or len(member) < 12:
        return None
    major = member[6]
    if major not in (1, 2, 3):
        return None
    # Format 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one.
    (length,) = struct.unpack_from("<H" if major == 1 else "<I", member, 8)
    start = 10 if major == 1 else 12
    try:
        header = ast.literal_eval(
            member[start : start + length].decode("utf-8" if major == 3 else "latin-1")
        )
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None
    if not isinstance(header, dict) or header.get("descr") != "<f8":
        return None
    shape = header.get("shape")
    if (
        header.get("fortran_order") is not False
        or not isinstance(shape, tuple)
        or len(shape) not in (1, 2)
        or not all(isinstance(n, int) and n >= 0 for n in shape)
    ):
        return None
    data = member[start + length :]
    if len(data) != 8 * math.prod(shape):
        return None
    values = array("d")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    if len(shape) == 1:
        return shape[0], [values.tolist()]
    rows, width = shape
    return rows, [values[i::width].tolist() for i in range(width)]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checksums(files: Mapping[str, bytes]) -> bytes:
    return "".join(f"{_sha256(data)}  {name}\n" for name, data in files.items()).encode()


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class _Folder:
    """The objects found under one ``<name>/<version>/`` folder."""

    name: str
    version: int
    files: dict[str, ObjectInfo] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return CHECKSUM_FILE in self.files

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class _Scan:
    folders: dict[tuple[str, int], _Folder] = field(default_factory=dict)
    marks: dict[tuple[str, str], ObjectInfo] = field(default_factory=dict)

    def names(self) -> builtins.list[str]:
        return sorted({name for name, _ in self.folders} | {name for name, _ in self.marks})

    def versions(self, name: str) -> builtins.list[_Folder]:
        return sorted(
            (f for (n, _), f in self.folders.items() if n == name), key=lambda f: f.version
        )


class Registry:
    """Model versions under one object-store root (see the module docstring)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # ---- writing -------------------------------------------------------------------------

    def save(
        self,
        kind: str,
        name: str,
        *,
        parameters: Mapping[str, Any],
        metrics: Mapping[str, Any],
        fingerprint: str,
        arrays: Mapping[str, np.ndarray],
        record: Mapping[str, Any],
        licence: str,
        libraries: Mapping[str, str] | None = None,
    ) -> SaveResult:
        """Store a new version of ``name``, or return the intact version with the same content."""
        import numpy as np

        check_name(name)
        if not kind.strip() or not licence.strip() or not fingerprint.strip():
            raise ValueError("kind, licence and fingerprint must be non-empty")
        normalised = _normalised(arrays)
        digest = content_hash(kind, name, parameters, fingerprint, normalised)
        scan = self._scan(name)
        for folder in scan.versions(name):
            if not folder.complete:
                self._delete_folder(folder)
        for folder in scan.versions(name):
            if not folder.complete:
                continue
            meta = self._peek_meta(folder)
            if meta is None or meta.get("content_hash") != digest:
                continue
            try:
                self._verified_files(folder)
            except ModelError:
                continue  # damaged: never hand it out as the stored copy; write a fresh one
            return SaveResult(self._version_of(folder, meta), created=False)

        version = self._next_version(name, scan)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "name": name,
            "version": version,
            "created_at": _now(),
            "content_hash": digest,
            "parameters": parameters,
            "metrics": metrics,
            "fingerprint": fingerprint,
            "libraries": {"numpy": np.__version__, **(libraries or {})},
            "licence": licence,
            "record": record,
            "arrays": {
                n: {"member": f"{n}.npy", "shape": list(a.shape), "dtype": a.dtype.str}
                for n, a in normalised.items()
            },
        }
        model_json = (
            json.dumps(meta, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
            + "\n"
        ).encode()
        files = {
            MODEL_FILE: model_json,
            ARRAYS_FILE: npz_bytes(normalised),
            CARD_FILE: model_card(json.loads(model_json)).encode(),
        }
        base = f"{name}/{version}/"
        try:
            for filename, data in files.items():
                self.store.put_bytes(base + filename, data)
            self.store.put_bytes(base + CHECKSUM_FILE, _checksums(files))
        except BaseException:
            # Best effort: whatever is left is an incomplete version that the next save removes.
            for filename in files:
                with contextlib.suppress(StoreError):
                    self.store.delete(base + filename)
            raise
        saved = ModelVersion(
            name=name,
            version=version,
            kind=kind,
            created_at=str(meta["created_at"]),
            content_hash=digest,
        )
        return SaveResult(saved, created=True)

    def remove(self, name: str, version: int) -> ModelVersion:
        """Delete a version that was never published; its number is never reused."""
        check_name(name)
        scan = self._scan(name)
        folder = scan.folders.get((name, version))
        if folder is None:
            raise self._not_found(name, version, scan)
        published = self._published(name, scan).get(version)
        if published:
            raise ModelError(
                f"{folder.ref} is published to {', '.join(published)}; published versions "
                "cannot be removed (publish a newer version instead)"
            )
        listed = self._version_of(folder, self._peek_meta(folder)) if folder.complete else None
        removed = self._read_marks(name, REMOVED_FILE, scan)
        numbers = sorted({*removed.get("versions", []), version})
        self._write_marks(name, REMOVED_FILE, {"name": name, "versions": numbers})
        self._delete_folder(folder)
        return listed or ModelVersion(name, version, None, None, None, problem="incomplete")

    def mark_published(self, name: str, version: int, where: str) -> ModelVersion:
        """Record in ``<name>/published.json`` that an intact version was published to ``where``."""
        check_name(name)
        scan = self._scan(name)
        folder = scan.folders.get((name, version))
        if folder is None or not folder.complete:
            raise self._not_found(name, version, scan)
        self._verified_files(folder)
        marks = self._read_marks(name, PUBLISHED_FILE, scan)
        versions: dict[str, list[dict[str, str]]] = marks.get("versions", {})
        entries = versions.setdefault(str(version), [])
        if all(entry.get("where") != where for entry in entries):
            entries.append({"where": where, "published_at": _now()})
        self._write_marks(name, PUBLISHED_FILE, {"name": name, "versions": versions})
        return self._version_of(folder, self._peek_meta(folder), self._published(name))

    # ---- reading -------------------------------------------------------------------------

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """Every complete version (of ``name``, or of all names), by name then version."""
        if name is not None:
            check_name(name)
        scan = self._scan(name)
        result = []
        for model in scan.names():
            published = self._published(model, scan)
            for folder in scan.versions(model):
                if folder.complete:
                    result.append(self._version_of(folder, self._peek_meta(folder), published))
        return result

    def newest(self, name: str) -> ModelVersion | None:
        """The highest complete version of ``name`` with a readable model.json naming its
        content hash, or None.

        The same version as the last such entry of :meth:`list`, but only the model.json files
        needed are read (on S3 each is a GET): the newest, older ones only while a newer one is
        unreadable.
        """
        check_name(name)
        scan = self._scan(name)
        published = self._published(name, scan)
        for folder in reversed(scan.versions(name)):
            if folder.complete:
                version = self._version_of(folder, self._peek_meta(folder), published)
                if version.content_hash and version.problem is None:
                    return version
        return None

    def load(self, name: str, version: int | None = None) -> LoadedModel:
        """A verified version (``None``: the highest complete one); :class:`ModelError` if not."""
        check_name(name)
        folder = self._folder(name, version)
        files = self._verified_files(folder)
        return LoadedModel(meta=json.loads(files[MODEL_FILE]), arrays=read_npz(files[ARRAYS_FILE]))

    def artifact_files(self, name: str, version: int | None = None) -> dict[str, bytes]:
        """The verified bytes of a version's :data:`ARTIFACT_FILES`, for copying elsewhere."""
        check_name(name)
        return self._verified_files(self._folder(name, version))

    def verify(self, name: str | None = None) -> builtins.list[VerifyResult]:
        """Check every version (of ``name``): ok, damaged (with the reason) or incomplete."""
        if name is not None:
            check_name(name)
        scan = self._scan(name)
        results = []
        for model in scan.names():
            for folder in scan.versions(model):
                if not folder.complete:
                    results.append(
                        VerifyResult(
                            model,
                            folder.version,
                            "incomplete",
                            "no SHA256SUMS: a save was interrupted; the next save removes it",
                        )
                    )
                    continue
                try:
                    self._verified_files(folder)
                except ModelError as exc:
                    results.append(VerifyResult(model, folder.version, "damaged", str(exc)))
                else:
                    results.append(VerifyResult(model, folder.version, "ok"))
        return results

    # ---- internals -----------------------------------------------------------------------

    def _where(self, key: str = "") -> str:
        return f"{self.store.uri.rstrip('/')}/{key}"

    def _scan(self, name: str | None) -> _Scan:
        scan = _Scan()
        if isinstance(self.store, LocalStore) and not self.store.root.exists():
            return scan  # a registry folder nobody has saved to yet is simply empty
        for info in self.store.list(f"{name}/" if name else ""):
            parts = info.key.split("/")
            if not _NAME_RE.match(parts[0]) or len(parts[0]) > MAX_NAME_LENGTH:
                continue
            if len(parts) == 2 and parts[1] in (PUBLISHED_FILE, REMOVED_FILE):
                scan.marks[(parts[0], parts[1])] = info
            elif len(parts) >= 3 and _VERSION_RE.match(parts[1]):
                key = (parts[0], int(parts[1]))
                folder = scan.folders.setdefault(key, _Folder(parts[0], int(parts[1])))
                folder.files["/".join(parts[2:])] = info
        return scan

    def _folder(self, name: str, version: int | None) -> _Folder:
        scan = self._scan(name)
        if version is None:
            complete = [f for f in scan.versions(name) if f.complete]
            if not complete:
                raise self._not_found(name, None, scan)
            return complete[-1]
        folder = scan.folders.get((name, version))
        if folder is None:
            raise self._not_found(name, version, scan)
        if not folder.complete:
            raise ModelError(
                f"{folder.ref} is incomplete (a save was interrupted: no {CHECKSUM_FILE} under "
                f"{self._where(f'{name}/{version}/')}); save the model again"
            )
        return folder

    def _not_found(self, name: str, version: int | None, scan: _Scan) -> ModelError:
        complete = [str(f.version) for f in scan.versions(name) if f.complete]
        what = f"{name}@{version}" if version is not None else f"model {name!r}"
        have = f"versions: {', '.join(complete)}" if complete else "no versions"
        return ModelError(
            f"{what} not found in the registry at {self._where()} ({name} has {have})"
        )

    def _next_version(self, name: str, scan: _Scan) -> int:
        used = {f.version for f in scan.versions(name) if f.complete}
        used.update(int(v) for v in self._read_marks(name, REMOVED_FILE, scan).get("versions", []))
        used.update(self._published(name, scan))
        return max(used, default=0) + 1

    def _delete_folder(self, folder: _Folder) -> None:
        # The checksum file first: from then on the folder is incomplete, never half-valid.
        base = f"{folder.name}/{folder.version}/"
        names = sorted(folder.files, key=lambda n: n != CHECKSUM_FILE)
        for filename in names:
            self.store.delete(base + filename)

    def _peek_meta(self, folder: _Folder) -> dict[str, Any] | None:
        """model.json parsed without verification (for listings), or None if unreadable."""
        if MODEL_FILE not in folder.files:
            return None
        try:
            meta = json.loads(self.store.get_bytes(f"{folder.name}/{folder.version}/{MODEL_FILE}"))
        except (KeyNotFound, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _version_of(
        self,
        folder: _Folder,
        meta: Mapping[str, Any] | None,
        published: Mapping[int, builtins.list[str]] | None = None,
    ) -> ModelVersion:
        where = tuple((published or {}).get(folder.version, []))
        if meta is None:
            return ModelVersion(
                folder.name,
                folder.version,
                None,
                None,
                None,
                bool(where),
                where,
                problem=f"{MODEL_FILE} is missing or unreadable",
            )
        return ModelVersion(
            name=folder.name,
            version=folder.version,
            kind=_text_or_none(meta.get("kind")),
            created_at=_text_or_none(meta.get("created_at")),
            content_hash=_text_or_none(meta.get("content_hash")),
            published=bool(where),
            published_to=where,
        )

    def _read_marks(self, name: str, filename: str, scan: _Scan | None = None) -> dict[str, Any]:
        if scan is not None and (name, filename) not in scan.marks:
            return {}
        key = f"{name}/{filename}"
        try:
            data = json.loads(self.store.get_bytes(key))
        except KeyNotFound:
            return {}
        except ValueError:
            raise ModelError(
                f"{self._where(key)} is not valid JSON; restore it from a backup or delete it"
            ) from None
        if not isinstance(data, dict):
            raise ModelError(f"{self._where(key)} is not a JSON object; restore or delete it")
        return data

    def _write_marks(self, name: str, filename: str, data: Mapping[str, Any]) -> None:
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        self.store.put_bytes(f"{name}/{filename}", text.encode())

    def _published(self, name: str, scan: _Scan | None = None) -> dict[int, builtins.list[str]]:
        versions = self._read_marks(name, PUBLISHED_FILE, scan).get("versions", {})
        if not isinstance(versions, dict):
            return {}
        result = {}
        for number, entries in versions.items():
            if _VERSION_RE.match(str(number)) and isinstance(entries, builtins.list):
                result[int(number)] = [str(e.get("where")) for e in entries if isinstance(e, dict)]
        return result

    def _verified_files(self, folder: _Folder) -> dict[str, bytes]:
        """Every artifact's bytes after all the checks of the module docstring."""
        ref = folder.ref
        where = self._where(f"{folder.name}/{folder.version}/")
        extra = sorted(set(folder.files) - set(ARTIFACT_FILES))
        if extra:
            raise ModelError(
                f"{ref}: unexpected file {extra[0]!r} in {where}; versions are immutable "
                "(delete the stray file or restore the version from its published copy)"
            )
        missing = [f for f in ARTIFACT_FILES if f not in folder.files]
        if missing:
            raise ModelError(f"{ref}: file {missing[0]!r} is missing from {where}")
        files: dict[str, bytes] = {}
        for filename in ARTIFACT_FILES:
            try:
                files[filename] = self.store.get_bytes(f"{folder.name}/{folder.version}/{filename}")
            except KeyNotFound:
                raise ModelError(f"{ref}: file {filename!r} is missing from {where}") from None
        sums = _parse_checksums(ref, files[CHECKSUM_FILE])
        expected = set(ARTIFACT_FILES) - {CHECKSUM_FILE}
        if set(sums) != expected:
            raise ModelError(
                f"{ref}: {CHECKSUM_FILE} must list exactly {', '.join(sorted(expected))}"
            )
        for filename in ARTIFACT_FILES:
            if filename != CHECKSUM_FILE and _sha256(files[filename]) != sums[filename]:
                raise ModelError(
                    f"{ref}: checksum mismatch for {filename} in {where}; the file changed "
                    "after it was saved (restore it from its published copy or re-train)"
                )
        _check_meta(ref, folder, files)
        return {f: files[f] for f in ARTIFACT_FILES}


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parse_checksums(ref: str, data: bytes) -> dict[str, str]:
    sums: dict[str, str] = {}
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise ModelError(f"{ref}: {CHECKSUM_FILE} is not sha256sum text") from None
    for number, line in enumerate(lines, start=1):
        match = _SUM_LINE_RE.match(line)
        if not match or match[2] in sums:
            raise ModelError(f"{ref}: {CHECKSUM_FILE} is malformed at line {number}")
        sums[match[2]] = match[1]
    return sums


def _check_meta(ref: str, folder: _Folder, files: Mapping[str, bytes]) -> None:
    """model.json's schema, identity, array list and content hash against the stored files."""
    try:
        meta = json.loads(files[MODEL_FILE])
    except ValueError:
        raise ModelError(f"{ref}: {MODEL_FILE} is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{ref}: {MODEL_FILE} is not a JSON object")
    schema = meta.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ModelError(
            f"{ref}: unknown model schema version {schema!r} (this script-ec2 reads version "
            f"{SCHEMA_VERSION}); use a matching script-ec2 release or re-train the model"
        )
    if meta.get("name") != folder.name or meta.get("version") != folder.version:
        raise ModelError(
            f"{ref}: {MODEL_FILE} describes {meta.get('name')}@{meta.get('version')}, "
            "not the folder it is in"
        )
    try:
        arrays = read_npz(files[ARRAYS_FILE])
    except ValueError as exc:
        raise ModelError(f"{ref}: {ARRAYS_FILE} is {exc}") from None
    declared = meta.get("arrays")
    if not isinstance(declared, dict) or set(declared) != set(arrays):
        raise ModelError(f"{ref}: the arrays in {ARRAYS_FILE} differ from those in {MODEL_FILE}")
    for array_name, spec in declared.items():
        array = arrays[array_name]
        if (
            not isinstance(spec, dict)
            or spec.get("shape") != list(array.shape)
            or spec.get("dtype") != array.dtype.str
        ):
            raise ModelError(
                f"{ref}: array {array_name!r} does not have the shape and dtype {MODEL_FILE} gives"
            )
    try:
        digest = content_hash(
            str(meta.get("kind")),
            folder.name,
            meta.get("parameters") or {},
            str(meta.get("fingerprint")),
            arrays,
        )
    except (TypeError, ValueError):
        digest = ""
    if digest != meta.get("content_hash"):
        raise ModelError(
            f"{ref}: the content hash in {MODEL_FILE} does not match its parameters and arrays"
        )


def model_card(meta: Mapping[str, Any]) -> str:
    """The README.md of a version: a YAML header, then what a reader needs to judge the model."""
    record: Mapping[str, Any] = meta.get("record") or {}
    name, version = meta["name"], meta["version"]
    header = {
        "name": name,
        "version": version,
        "kind": meta["kind"],
        "schema_version": meta["schema_version"],
        "created_at": meta["created_at"],
        "content_hash": meta["content_hash"],
        "fingerprint": meta["fingerprint"],
        "licence": meta["licence"],
    }
    # JSON scalars are valid YAML scalars, so the header needs no YAML library.
    lines = ["---", *(f"{k}: {json.dumps(v)}" for k, v in header.items()), "---", ""]
    lines += [f"# {record.get('title') or name} (version {version})", ""]
    if record.get("summary"):
        lines += [str(record["summary"]), ""]
    for title, table in (
        ("Scope", record.get("scope")),
        ("Training data", record.get("training")),
        ("Units", record.get("units")),
        ("Parameters", meta.get("parameters")),
        ("Metrics", meta.get("metrics")),
        ("Libraries", meta.get("libraries")),
    ):
        if isinstance(table, Mapping) and table:
            lines += [f"## {title}", "", "| Item | Value |", "|---|---|"]
            lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in table.items()]
            lines.append("")
    lines += [
        "The training-data fingerprint is a sha256 over the (key, ETag) list of the source files;"
        " no session rows are part of this model.",
        "",
    ]
    if record.get("intended_use"):
        lines += ["## Intended use", "", str(record["intended_use"]), ""]
    limitations = record.get("limitations") or []
    if limitations:
        lines += ["## Limitations", "", *(f"- {item}" for item in limitations), ""]
    lines += [
        "## Files",
        "",
        f"- `{MODEL_FILE}`: metadata (schema version {meta['schema_version']})",
        f"- `{ARRAYS_FILE}`: "
        + ", ".join(
            f"`{n}` {tuple(s['shape'])} {s['dtype']}" for n, s in sorted(meta["arrays"].items())
        )
        + " (NumPy .npz; load with allow_pickle=False)",
        f"- `{CARD_FILE}`: this card",
        f"- `{CHECKSUM_FILE}`: sha256 checksums (`sha256sum -c {CHECKSUM_FILE}`)",
        "",
        "## Licence",
        "",
        str(meta["licence"]),
        "",
    ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, Iterable) and not isinstance(value, Mapping):
        items = builtins.list(value)
        text = ", ".join(_cell(v) for v in items) if len(items) <= 12 else canonical_json(items)
    else:
        text = canonical_json(value) if isinstance(value, Mapping) else str(value)
    # A pipe or newline would break the Markdown table row.
    return text.replace("|", "\\|").replace("\n", " ")
