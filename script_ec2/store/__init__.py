"""Object stores: :func:`open_store` turns a location (``s3://bucket/prefix``, ``file://`` URI or
folder path) into an :class:`ObjectStore`.

Importing this package is cheap: boto3 is imported only when an S3 store is built.
"""

from __future__ import annotations

from script_ec2.settings import Settings
from script_ec2.store.interface import ObjectInfo, ObjectStore
from script_ec2.store.local import LocalStore
from script_ec2.store.s3 import S3Store
from script_ec2.store.uri import S3Location, parse_uri

__all__ = ["LocalStore", "ObjectInfo", "ObjectStore", "S3Store", "open_store"]


def open_store(uri: str, settings: Settings) -> ObjectStore:
    """The store a location names; :class:`~script_ec2.errors.UsageError` if it is malformed."""
    location = parse_uri(uri)
    if isinstance(location, S3Location):
        return S3Store(uri, settings)
    return LocalStore(location.root, uri=uri)
