"""``script-ec2 train``: session models for the load forecast, control models for load control."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Train models on the synced private data (the only step that reads it).")

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]


@app.command("load-forecast")
def load_forecast(
    ctx: typer.Context,
    *,
    segment: Annotated[
        list[str] | None,
        typer.Option("--segment", help="Segment to train (repeatable); default all six."),
    ] = None,
    day_type: Annotated[
        str | None, typer.Option("--day-type", help="weekday or weekend; default both.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="First session date, YYYY-MM-DD.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Last session date (inclusive), YYYY-MM-DD.")
    ] = None,
    county: Annotated[
        list[str] | None,
        typer.Option("--county", help="Train on these counties only (repeatable)."),
    ] = None,
    max_components: Annotated[
        int, typer.Option("--max-components", help="Largest component count tried by BIC.")
    ] = 8,
    seed: Annotated[int, typer.Option("--seed", help="random_state of the fit; recorded.")] = 0,
    fmt: FormatOption = "table",
) -> None:
    """Fit a joint GMM over (start time of day, energy) per charging segment and day type.

    Segments: Residential L1, Residential L2, Residential MUD, Workplace, Public L2, DC Fast.
    Each model is saved as a new registry version, or recognised as an existing one.
    """
    from script_ec2.commands.progress import step_progress
    from script_ec2.demo import parse_day
    from script_ec2.errors import UsageError
    from script_ec2.output import check_format, render
    from script_ec2.training import train_forecast_models

    check_format(fmt)
    if day_type is not None and day_type not in ("weekday", "weekend"):
        raise UsageError(f"--day-type must be weekday or weekend, got {day_type!r}")
    if not 1 <= max_components <= 20:
        raise UsageError(f"--max-components must be between 1 and 20, got {max_components}")
    app_ctx = ctx.obj
    s = app_ctx.settings
    with step_progress(s.quiet, "train load-forecast") as progress:
        outcome = train_forecast_models(
            app_ctx.engine,
            app_ctx.registry,
            source=s.data_uri,
            cache_dir=s.cache_dir,
            registry_uri=s.models_dir,
            licence=s.model_licence,
            segments=segment,
            day_types=[day_type] if day_type else None,
            since=parse_day(since, "--since") if since else None,
            until=parse_day(until, "--until") if until else None,
            counties=county,
            max_components=max_components,
            seed=seed,
            progress=progress,
        )
    render(outcome.rows, fmt, title="session models")
    if outcome.skipped and fmt == "table":
        render(outcome.skipped, "table", title="not trained")


@app.command("load-control")
def load_control(
    ctx: typer.Context,
    *,
    county: Annotated[
        str, typer.Option("--county", help="County whose workplace sessions to use.")
    ],
    rate: Annotated[
        str,
        typer.Option(
            "--rate",
            help="e19, pge-cev, pge-cev-demand, pge-cev-energy, sce-tou-ev8, cap, "
            "minpeak, or a TOML/JSON rate file.",
        ),
    ] = "e19",
    runs: Annotated[int, typer.Option("--runs", help="LP runs (training pairs).")] = 50,
    sessions_per_run: Annotated[
        int, typer.Option("--sessions-per-run", help="Workplace sessions sampled per run.")
    ] = 200,
    jobs: Annotated[int, typer.Option("--jobs", help="Parallel LP workers (joblib).")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling and the split.")] = 0,
    fmt: FormatOption = "table",
) -> None:
    """Solve the smart-charging LP on sampled workplace sessions; learn the control regression."""
    from script_ec2.commands.progress import step_progress
    from script_ec2.control import MIN_RUNS
    from script_ec2.errors import UsageError
    from script_ec2.output import check_format, render
    from script_ec2.training import train_control_model

    check_format(fmt)
    if not 1 <= jobs <= 64:
        raise UsageError(f"--jobs must be between 1 and 64, got {jobs}")
    if runs < MIN_RUNS:
        raise UsageError(f"--runs must be at least {MIN_RUNS} (to hold some out), got {runs}")
    if sessions_per_run < 1:
        raise UsageError(f"--sessions-per-run must be at least 1, got {sessions_per_run}")
    if not 0 <= seed < 2**32:
        raise UsageError(f"--seed must be from 0 to 4294967295, got {seed}")
    app_ctx = ctx.obj
    s = app_ctx.settings
    with step_progress(s.quiet, "train load-control") as progress:
        outcome = train_control_model(
            app_ctx.engine,
            app_ctx.registry,
            source=s.data_uri,
            cache_dir=s.cache_dir,
            registry_uri=s.models_dir,
            licence=s.model_licence,
            county=county,
            rate_spec=rate,
            runs=runs,
            sessions_per_run=sessions_per_run,
            seed=seed,
            jobs=jobs,
            progress=(lambda done, total: progress("run", done, total)) if progress else None,
        )
    render(outcome.rows, fmt, title="control model")
