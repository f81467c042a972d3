"""The one factory that builds clients (database engine, object stores) from settings.

Commands get an :class:`AppContext` from the root callback; core functions receive the clients
it builds as arguments, never globals.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from script_ec2.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from script_ec2.registry import Registry
    from script_ec2.store.interface import ObjectStore


class AppContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        """An engine whose schema is at head (SQLite upgrades itself; PostgreSQL must be)."""
        from script_ec2.db.engine import connect

        return connect(self.settings.database_url, auto_upgrade_sqlite=True)

    def raw_engine(self) -> Engine:
        """An engine with no schema check, for ``db upgrade`` and ``db status``."""
        from script_ec2.db.engine import connect

        return connect(self.settings.database_url, check_schema=False)

    def store(self, uri: str) -> ObjectStore:
        from script_ec2.store import open_store

        return open_store(uri, self.settings)

    @cached_property
    def data_store(self) -> ObjectStore:
        return self.store(self.settings.data_uri)

    @cached_property
    def registry(self) -> Registry:
        """The model registry at the models_dir setting (a folder or an s3:// prefix)."""
        from script_ec2.registry import Registry

        return Registry(self.store(self.settings.models_dir))

    @cached_property
    def public_store(self) -> ObjectStore:
        return self.store(self.settings.public_uri)
