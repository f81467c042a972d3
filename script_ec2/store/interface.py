"""The object-store axis: one small interface, two implementations (S3 and a local folder).

Keys are relative to the store's root (the ``s3://bucket/prefix`` prefix or the folder) and
always use ``/``. Implementations turn botocore and filesystem errors into the project's
:class:`script_ec2.errors.StoreError` subclasses with one-line messages, keeping the cause.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # opaque: S3 ETag without quotes (multipart "-N" kept); local: mtime_ns-size
    last_modified: datetime  # timezone-aware, UTC


class ObjectStore(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in one paginated pass, sorted by key."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Metadata of one object; :class:`KeyNotFound` if absent."""
        ...

    def download(
        self,
        key: str,
        dest: Path,
        *,
        durable: bool = True,
        observe: Callable[[bytes], object] | None = None,
    ) -> ObjectInfo:
        """Stream ``key`` into a temp file beside ``dest``, then rename atomically onto ``dest``.

        ``observe`` sees every chunk as it is written (e.g. a hash's ``update``, so the file need
        not be read again). ``durable=False`` skips the fsyncs: the rename is still atomic for
        other processes and survives the process being killed, but not a power cut; for copies
        that can be fetched again, such as sync's download cache.
        """
        ...

    def upload(self, src: Path, key: str) -> ObjectInfo:
        """Upload a file (multipart above a threshold on S3); visible only once complete."""
        ...

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        """Write a small object from memory."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read a small object into memory."""
        ...

    def delete(self, key: str) -> None:
        """Delete an object; deleting an absent key is not an error."""
        ...
