"""``script-ec2 fit``: run a fit algorithm on the trained models, answered from the results cache.

Three forms, one behaviour: ``fit load-forecast [...]``, ``fit load-control [...]`` and
``fit --params FILE`` where the file names its algorithm (``"algorithm": "load-forecast"``), the
form cron jobs and the frontend use. Parameters come from the file, then ``--param key=value``
flags, then named options (``--county``, ``--rate``); later ones win.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Fit scenarios with the trained models: load forecast and workplace load control. "
    "Results are cached by their canonical parameters (see script-ec2 results)."
)

ParamsFileOption = Annotated[
    Path | None,
    typer.Option("--params", help="JSON or TOML file of parameters (may name the algorithm)."),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="key=value, repeatable; wins over --params."),
]
NoCacheOption = Annotated[
    bool, typer.Option("--no-cache", help="Recompute and replace any cached result.")
]
AsyncOption = Annotated[
    bool,
    typer.Option(
        "--async",
        help="Queue the work and print a job id at once (the result itself if cached); "
        "follow it with `script-ec2 jobs wait ID`.",
    ),
]
FormatOption = Annotated[
    str, typer.Option("--format", "-f", help="table (96 steps), json or csv (the full grid).")
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write the data to FILE, not stdout.")
]
PlotOption = Annotated[
    Path | None,
    typer.Option("--plot", help="Also draw the profile as a stacked-area chart into FILE.png."),
]
ShowParamsOption = Annotated[
    bool,
    typer.Option("--show-params", help="List every parameter (meaning, range, default); no fit."),
]


@dataclass(frozen=True)
class _Request:
    """What every form of ``fit`` collects before running."""

    params_file: Path | None
    pairs: list[str]
    overrides: dict[str, Any]
    no_cache: bool
    fmt: str
    output: Path | None
    plot: Path | None
    controlled: bool = False
    run_async: bool = False


@app.callback(invoke_without_command=True)
def fit(
    ctx: typer.Context,
    *,
    params_file: ParamsFileOption = None,
    param: ParamOption = None,
    no_cache: NoCacheOption = False,
    run_async: AsyncOption = False,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    plot: PlotOption = None,
) -> None:
    """Run the algorithm named in --params FILE ("algorithm": "load-forecast"), or a subcommand."""
    from script_ec2.errors import UsageError

    given = params_file or param or no_cache or run_async or fmt != "table" or output or plot
    if ctx.invoked_subcommand is not None:
        if given:
            raise UsageError(
                f"put the options after the algorithm: script-ec2 fit {ctx.invoked_subcommand} "
                "--params FILE ..."
            )
        return
    if params_file is None:
        raise UsageError(
            "give --params FILE whose algorithm field names the algorithm, or an algorithm: "
            "script-ec2 fit load-forecast|load-control [OPTIONS]"
        )
    _run(
        ctx,
        None,
        _Request(params_file, param or [], {}, no_cache, fmt, output, plot, run_async=run_async),
    )


@app.command("load-forecast")
def load_forecast(
    ctx: typer.Context,
    *,
    params_file: ParamsFileOption = None,
    param: ParamOption = None,
    controlled: Annotated[
        bool,
        typer.Option(
            "--controlled",
            help="Control workplace charging with the work_control rate's model (default e19) "
            "and show the controlled profile.",
        ),
    ] = False,
    show_params: ShowParamsOption = False,
    no_cache: NoCacheOption = False,
    run_async: AsyncOption = False,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    plot: PlotOption = None,
) -> None:
    """Daily charging load of every segment, in kW, from the session models (upstream Gen B).

    Columns: Residential L1, Residential L2, Residential MUD, Work, Fast, Public L2, Total.
    """
    request = _Request(
        params_file, param or [], {}, no_cache, fmt, output, plot, controlled, run_async
    )
    if show_params:
        _show_params("load-forecast", fmt, output)
        return
    _run(ctx, "load-forecast", request)


@app.command("load-control")
def load_control(
    ctx: typer.Context,
    *,
    county: Annotated[
        str | None, typer.Option("--county", help="County whose control model to use.")
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate", help="Rate name (e.g. e19) or the TOML/JSON rate file it came from."
        ),
    ] = None,
    params_file: ParamsFileOption = None,
    param: ParamOption = None,
    show_params: ShowParamsOption = False,
    no_cache: NoCacheOption = False,
    run_async: AsyncOption = False,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    plot: PlotOption = None,
) -> None:
    """Uncontrolled and controlled 96-step workplace load, the peak reduction and daily costs."""
    if show_params:
        _show_params("load-control", fmt, output)
        return
    overrides = {k: v for k, v in (("county", county), ("rate", rate)) if v is not None}
    _run(
        ctx,
        "load-control",
        _Request(
            params_file, param or [], overrides, no_cache, fmt, output, plot, run_async=run_async
        ),
    )


def _show_params(algorithm: str, fmt: str, output: Path | None) -> None:
    from script_ec2.output import render
    from script_ec2.params import describe

    render(describe(algorithm), fmt, output, title=f"{algorithm} parameters")


def _run(ctx: typer.Context, algorithm: str | None, request: _Request) -> None:
    """Collect the parameters, fit (or find in the cache), then print, save and plot."""
    from script_ec2 import fitting
    from script_ec2.output import check_format
    from script_ec2.params import LOAD_CONTROL, read_params_file

    check_format(request.fmt)
    if request.plot is not None:
        from script_ec2.plot import check_png_path

        check_png_path(request.plot)
    file_algorithm, file_values = (
        read_params_file(request.params_file) if request.params_file else (None, {})
    )
    algorithm = fitting.pick_algorithm(algorithm, file_algorithm)
    raw = fitting.merge_params(file_values, request.pairs, request.overrides)
    if request.controlled:
        raw = fitting.with_control(raw)
    app_ctx = ctx.obj
    if algorithm == LOAD_CONTROL and isinstance(raw.get("rate"), str):
        raw["rate"] = fitting.rate_param(app_ctx.registry, raw["rate"], raw.get("county"))
    if request.run_async:
        _submit(app_ctx, algorithm, raw, request)
        return
    outcome = fitting.answer(
        lambda: app_ctx.engine,
        app_ctx.settings.database_url,
        app_ctx.registry,
        app_ctx.data_store,
        algorithm,
        raw,
        use_cache=not request.no_cache,
    )
    _show(outcome, request, quiet=app_ctx.settings.quiet)


def _submit(app_ctx: Any, algorithm: str, raw: dict[str, Any], request: _Request) -> None:
    """``--async``: the cached result at once, or a job id (joined if an identical one runs)."""
    from script_ec2 import fitting
    from script_ec2.jobs import get, submit_fit
    from script_ec2.output import render

    submission = submit_fit(app_ctx, algorithm, raw)
    if submission.cached_result is not None:
        outcome = fitting.FitOutcome(submission.cached_result, cached=True, seconds=0.0)
        _show(outcome, request, quiet=app_ctx.settings.quiet)
        return
    assert submission.job_id is not None  # no cached result means a job exists
    job = get(app_ctx.engine, submission.job_id)
    row = {
        "job_id": job.id,
        "state": job.state,
        "joined": submission.joined,
        "result_key": job.result_key,
        "follow": f"script-ec2 jobs wait {job.id}",
    }
    render(row, "json" if request.fmt == "json" else "table", request.output)


def _show(outcome: Any, request: _Request, *, quiet: bool) -> None:
    import sys

    from script_ec2 import fitting
    from script_ec2.output import render

    result = outcome.result
    if request.fmt == "json":
        render(fitting.result_document(outcome), "json", request.output)
    else:
        full = request.fmt != "table"
        columns, rows = fitting.table_rows(result, full=full, decimals=None if full else 1)
        title = fitting.table_title(result, full=full)
        render(rows, request.fmt, request.output, title=title, columns=columns)
    if request.plot is not None:
        from script_ec2.plot import write_result_png

        write_result_png(request.plot, result)
    if not quiet:
        print(fitting.summary_line(outcome), file=sys.stderr)
        print(fitting.headline(result), file=sys.stderr)
