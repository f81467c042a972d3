"""Alembic environment for script-ec2: runs the migrations on a connection handed in by the caller.

There is no alembic.ini: :func:`script_ec2.db.migrate.alembic_config` builds the configuration and
puts an open connection in ``config.attributes["connection"]``, so the caller owns the transaction
(and, on SQLite, the write lock). SQLite gets batch mode, which rebuilds a table for the ALTERs
SQLite lacks; the naming convention on the models' metadata keeps constraint names predictable
for that.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from script_ec2.db.models import Base

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "script-ec2 migrations need an open connection in config.attributes['connection']; "
            "run them through script_ec2.db.migrate"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("script-ec2 migrations run online only (no --sql mode)")
run_migrations_online()
