"""``script-ec2 stats``: the basic statistics that sync keeps current."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BY_CHOICES = ("county", "month", "segment", "zip")


def stats(
    ctx: typer.Context,
    *,
    county: Annotated[
        str | None, typer.Option("--county", help="Only this county (bare name).")
    ] = None,
    by: Annotated[str, typer.Option("--by", help="county, month, segment or zip.")] = "county",
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE, not stdout.")
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Recompute every statistic from the local cache first."),
    ] = False,
) -> None:
    """Show statistics per county, county and month, county and segment, or zip.

    Definitions are in the README (section "Statistics"). Statistics come from the last sync of the
    data_uri setting; run `script-ec2 sync` first.
    """
    from script_ec2.errors import UsageError
    from script_ec2.output import check_format, render
    from script_ec2.stats import known_county, read_stats, refresh_all

    if by not in BY_CHOICES:
        raise UsageError(f"--by must be one of {', '.join(BY_CHOICES)}, got {by!r}")
    check_format(fmt)
    app_ctx = ctx.obj
    settings = app_ctx.settings
    if county is not None and not known_county(app_ctx.engine, county):
        raise UsageError(
            f"--county {county!r} is not a California county name "
            "(use the bare name, e.g. 'Santa Clara')"
        )
    if refresh:
        refresh_all(app_ctx.engine, settings.data_uri, settings.cache_dir)
    rows = read_stats(app_ctx.engine, settings.data_uri, by, county)
    render(rows, fmt, output=output, title=f"statistics by {by} for {settings.data_uri}")
