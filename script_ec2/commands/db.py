"""``script-ec2 db``: bring the database schema up to date and show where it stands."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

app = typer.Typer(help="Create, upgrade and inspect the database schema.", no_args_is_help=True)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]


@app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Migrate the database to the newest schema (creates it if empty; safe to run again)."""
    from script_ec2 import log
    from script_ec2.db import migrate

    before, after = migrate.upgrade(ctx.obj.raw_engine())
    if before == after:
        log.event(f"database schema already at {after}")
    else:
        log.event(f"database schema {before or 'none'} -> {after}")


@app.command("status")
def status(ctx: typer.Context, fmt: FormatOption = "table") -> None:
    """Show the database's schema revision, the newest this code knows, and whether they match."""
    from script_ec2 import log
    from script_ec2.db import migrate
    from script_ec2.output import render

    info = migrate.status(ctx.obj.raw_engine())
    render(info, fmt, title="database schema")
    if not info["up_to_date"]:
        log.event(info["advice"], level=logging.WARNING)
