"""``script-ec2 config``: show the resolved settings and where each came from."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Inspect the resolved settings.", no_args_is_help=True)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]


@app.command("show")
def show(ctx: typer.Context, fmt: FormatOption = "table") -> None:
    """Print every setting, its value (passwords masked), its source and its variable."""
    from script_ec2.output import render

    settings = ctx.obj.settings
    rows = settings.shown()
    if fmt == "json":
        render({r["key"]: {"value": r["value"], "source": r["source"]} for r in rows}, "json")
    else:
        render(rows, fmt, title="script-ec2 settings")
