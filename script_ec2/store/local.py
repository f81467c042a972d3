"""The local-folder object store, and the atomic file writes both store kinds use.

A folder stands in for a bucket so that every command also runs without S3 (tests, laptops, a
single EC2 box with an attached volume). Writes go to a hidden temp file beside the target that is
fsynced and then renamed onto it, so a reader never sees a half-written object and a crash leaves
at most a ``.NAME.XXXX.part`` file, which listings skip.
"""

from __future__ import annotations

import builtins
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from script_ec2.errors import AccessDenied, BucketNotFound, KeyNotFound, StoreError
from script_ec2.store.interface import ObjectInfo
from script_ec2.store.uri import clean_key, clean_prefix, is_temp_name

# What atomic_write calls to produce the content: it gets a function that appends bytes.
Fill = Callable[[Callable[[bytes], object]], object]

_COPY_CHUNK = 1024 * 1024
_LOCATION_HINT = "check the location given by --data-uri, --public-uri or --models-dir"
# When a same-size rewrite lands in the same kernel clock tick as the write it replaces, the two
# files share an mtime and so an etag; bumping by a microsecond keeps etags distinct on file
# systems that store microseconds or finer.
_MTIME_BUMP_NS = 1_000


def atomic_write(
    dest: Path,
    fill: Fill,
    *,
    expected_size: int | None = None,
    newer_than_existing: bool = False,
    durable: bool = True,
    observe: Callable[[bytes], object] | None = None,
) -> int:
    """Write ``dest`` via a fsynced temp file in its folder, renamed on success; return the size.

    ``fill`` receives a function that appends bytes to the temp file. If ``fill`` fails (its
    exception propagates unchanged), or the size differs from ``expected_size``, the temp file is
    removed and ``dest`` is left as it was. With ``newer_than_existing`` the new file's mtime is
    made later than that of the file it replaces, so a local etag always changes. ``observe`` sees
    each chunk as it is appended; ``durable=False`` skips the fsyncs of the file and its folder
    (see :meth:`script_ec2.store.interface.ObjectStore.download`).
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _create_temp(dest)
    except OSError as exc:
        raise local_error(exc, dest, "write") from exc
    try:
        with os.fdopen(fd, "wb") as fh:

            def append(chunk: bytes) -> None:
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise local_error(exc, dest, "write") from exc
                if observe is not None:
                    observe(chunk)

            # Errors from fill are the source's (network, source file) and keep their type.
            fill(append)
            try:
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise local_error(exc, dest, "write") from exc
            size = fh.tell()
        if expected_size is not None and size != expected_size:
            raise StoreError(
                f"incomplete copy for {dest}: got {size} bytes, expected {expected_size} "
                "(the source changed or the transfer was cut; retry)"
            )
        try:
            if newer_than_existing:
                _make_newer(tmp, dest)
            os.replace(tmp, dest)
        except OSError as exc:
            raise local_error(exc, dest, "write") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(dest.parent)
    return size


def local_error(exc: OSError, path: Path, action: str) -> StoreError:
    """A one-line project error for a failed local file operation."""
    if isinstance(exc, PermissionError):
        return AccessDenied(
            f"permission denied to {action} {path} (check the owner and mode of the folder)"
        )
    reason = exc.strerror or type(exc).__name__
    return StoreError(f"cannot {action} {path}: {reason}")


class LocalStore:
    """An object store over a folder; keys are relative paths."""

    def __init__(self, root: Path, *, uri: str | None = None) -> None:
        self.root = root
        self.uri = uri if uri is not None else str(root)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = clean_prefix(prefix)
        self._check_root()
        # Walk only the deepest folder the prefix names; the rest of the prefix filters names.
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        infos = [info for info in self._walk(start) if info.key.startswith(prefix)]
        infos.sort(key=lambda info: info.key)
        return iter(infos)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise local_error(exc, path, "read") from exc
        if not stat.S_ISREG(st.st_mode):
            raise self._not_found(key)
        return _info(key, st)

    def download(
        self,
        key: str,
        dest: Path,
        *,
        durable: bool = True,
        observe: Callable[[bytes], object] | None = None,
    ) -> ObjectInfo:
        path = self._path(key)
        with self._open_object(key, path) as src:
            info = _info(key, os.fstat(src.fileno()))
            atomic_write(
                dest,
                _copier(src, path),
                expected_size=info.size,
                durable=durable,
                observe=observe,
            )
        return info

    def upload(self, src: Path, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            source = src.open("rb")
            expected = os.fstat(source.fileno()).st_size
        except OSError as exc:
            raise local_error(exc, src, "read") from exc
        with source:
            atomic_write(
                path, _copier(source, src), expected_size=expected, newer_than_existing=True
            )
        return self.head(key)

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        atomic_write(self._path(key), lambda append: append(data), newer_than_existing=True)
        return self.head(key)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        with self._open_object(key, path) as src:
            try:
                return src.read()
            except OSError as exc:
                raise local_error(exc, path, "read") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise local_error(exc, path, "delete") from exc
        self._prune_empty_parents(path.parent)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*clean_key(key).split("/"))

    def _check_root(self) -> None:
        if not self.root.exists():
            raise BucketNotFound(f"local folder {self.root} does not exist ({_LOCATION_HINT})")
        if not self.root.is_dir():
            raise BucketNotFound(f"local store {self.root} is not a folder ({_LOCATION_HINT})")

    def _not_found(self, key: str) -> StoreError:
        self._check_root()
        return KeyNotFound(f"object {key!r} not found in local folder {self.root}")

    def _open_object(self, key: str, path: Path) -> BinaryIO:
        try:
            if path.is_dir():
                raise self._not_found(key)
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise local_error(exc, path, "read") from exc

    def _walk(self, start: Path) -> builtins.list[ObjectInfo]:
        def fail(exc: OSError) -> None:
            # A folder vanishing mid-walk is a concurrent delete, and a prefix may name a file
            # rather than a folder: neither is an error, both just hold nothing to list.
            if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                raise local_error(exc, Path(exc.filename or start), "list") from exc

        infos = []
        for folder, _dirs, files in os.walk(start, onerror=fail):
            base = Path(folder)
            for name in files:
                if is_temp_name(name):
                    continue
                path = base / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise local_error(exc, path, "list") from exc
                if stat.S_ISREG(st.st_mode):
                    infos.append(_info(path.relative_to(self.root).as_posix(), st))
        return infos

    def _prune_empty_parents(self, folder: Path) -> None:
        # S3 has no folders, so a folder emptied by a delete should not linger either.
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    seconds, nanos = divmod(st.st_mtime_ns, 1_000_000_000)
    modified = datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=nanos // 1000)
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
        last_modified=modified,
    )


def _copier(src: BinaryIO, src_path: Path) -> Fill:
    """A ``fill`` for :func:`atomic_write` that copies ``src``, naming it in read errors."""

    def copy(append: Callable[[bytes], object]) -> None:
        while True:
            try:
                chunk = src.read(_COPY_CHUNK)
            except OSError as exc:
                raise local_error(exc, src_path, "read") from exc
            if not chunk:
                return
            append(chunk)

    return copy


def _create_temp(dest: Path) -> tuple[Path, int]:
    # os.open with 0o666 (not mkstemp's 0o600) so the final file gets the usual umask-based mode.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def _make_newer(tmp: Path, dest: Path) -> None:
    try:
        old = dest.stat()
    except FileNotFoundError:
        return
    new = tmp.stat()
    if new.st_size == old.st_size and new.st_mtime_ns <= old.st_mtime_ns:
        os.utime(tmp, ns=(new.st_atime_ns, old.st_mtime_ns + _MTIME_BUMP_NS))


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open a folder, which is harmless.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
