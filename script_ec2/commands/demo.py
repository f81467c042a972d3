"""``script-ec2 demo``: synthetic charging data, for trying the tool without the private data."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from script_ec2.demo import DemoData

app = typer.Typer(
    help="Generate synthetic charging data and run the tool on it.", no_args_is_help=True
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]


@app.command("data")
def data(
    ctx: typer.Context,
    *,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="s3://bucket/prefix or folder to write to [default: the data_uri setting].",
        ),
    ] = None,
    sessions: Annotated[int, typer.Option("--sessions", help="Sessions in total.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same bytes.")] = 42,
    start_date: Annotated[
        str, typer.Option("--start-date", help="First day of sessions, YYYY-MM-DD.")
    ] = "2017-01-01",
    end_date: Annotated[
        str, typer.Option("--end-date", help="Day after the last day of sessions, YYYY-MM-DD.")
    ] = "2020-01-01",
    zips_per_county: Annotated[
        int, typer.Option("--zips-per-county", help="Station zips per Bay Area county.")
    ] = 6,
    fmt: FormatOption = "table",
) -> None:
    """Write synthetic session and interval files per station zip, and upload them to s3:// URIs."""
    from script_ec2.demo import parse_day, write_demo_data
    from script_ec2.errors import UsageError

    _check_format(fmt)
    start, end = parse_day(start_date, "--start-date"), parse_day(end_date, "--end-date")
    if sessions < 1:
        raise UsageError(f"--sessions must be at least 1, got {sessions}")
    if zips_per_county < 1:
        raise UsageError(f"--zips-per-county must be at least 1, got {zips_per_county}")
    if start >= end:
        raise UsageError(f"--start-date {start} must be before --end-date {end}")
    settings = ctx.obj.settings
    with _progress(settings.quiet) as progress:
        result = write_demo_data(
            out or settings.data_uri,
            ctx.obj.store,
            sessions=sessions,
            seed=seed,
            start_date=start,
            end_date=end,
            zips_per_county=zips_per_county,
            work_dir=settings.cache_dir,
            progress=progress,
        )
    _show(result, fmt)


@app.command("run")
def run(ctx: typer.Context, fmt: FormatOption = "table") -> None:
    """The tour behind `make demo`: synthetic data, then sync and stats, each shown as typed.

    Data (20,000 sessions, seed 42) goes to the data_uri setting; every later step is the real
    command with the same settings, so what you see is what you would get by typing it.
    """
    from script_ec2.demo import run_demo

    _check_format(fmt)
    with _progress(ctx.obj.settings.quiet) as progress:
        result = run_demo(ctx.obj.settings, ctx.obj.store, progress=progress)
    _show(result.data, fmt)
    for step in _demo_steps(ctx.obj.settings):
        _run_step(ctx, step)


# Few, small LP runs: enough to show the step without slowing the demo.
_CONTROL_DEMO = ("train", "load-control", "--county", "Santa Clara", "--runs", "12",
                 "--sessions-per-run", "100")  # fmt: skip


def _demo_steps(settings: Any) -> list[tuple[str, ...]]:
    """The commands of the tour, in order; a step may start with global options of its own."""
    home = settings.data_dir
    png = str(home / "demo-forecast.png")
    # A second machine that never saw the private data: its own registry and database.
    fresh = ("--models-dir", str(home / "pulled-models"), "--database-url",
             f"sqlite:///{home / 'pulled.db'}")  # fmt: skip
    forecast = ("fit", "load-forecast", "--param", "day_type=weekday", "--controlled")
    return [
        ("sync",),
        ("stats",),
        ("stats", "--by", "segment", "--county", "Santa Clara"),
        ("train", "load-forecast"),
        # Few, small LP runs: enough to show the step without slowing the demo.
        (
            "train",
            "load-control",
            "--county",
            "Santa Clara",
            *("--runs", "12"),
            *("--sessions-per-run", "100"),
        ),
        ("models", "list"),
        (*forecast, "--plot", png),
        forecast,  # the same request again: answered from the results cache
        ("publish", "--all"),
        (*fresh, "models", "pull", settings.public_uri),
        (*fresh, *forecast),
    ]


def _run_step(ctx: typer.Context, step: tuple[str, ...]) -> None:
    """Run one CLI step in-process with the demo's resolved settings; stop the demo on failure."""
    from script_ec2.cli import main

    settings = ctx.obj.settings
    flags = [
        "--data-dir", str(settings.data_dir),
        "--database-url", settings.database_url,
        "--data-uri", settings.data_uri,
        "--public-uri", settings.public_uri,
        "--cache-dir", str(settings.cache_dir),
        "--models-dir", settings.models_dir,
    ]  # fmt: skip
    print(f"\n$ script-ec2 {' '.join(step)}", flush=True)
    code = main([*flags, *step])
    if code != 0:
        raise typer.Exit(code)


def _check_format(fmt: str) -> None:
    # Before any work: a typo in --format must not cost a full generation.
    from script_ec2.output import check_format

    check_format(fmt)


def _show(result: DemoData, fmt: str) -> None:
    from script_ec2.output import render

    report = result.report()
    if fmt == "json":
        render(report, "json")
        return
    rows: list[dict[str, Any]] = list(report["counties"])
    if fmt == "table":
        rows.append(
            {
                "county": "Total",
                "zips": sum(r["zips"] for r in rows),
                "sessions": report["sessions"],
                "intervals": report["intervals"],
                "bytes": sum(f["bytes"] for f in report["files"]),
            }
        )
    files = len(report["files"])
    render(rows, fmt, title=f"{files} synthetic data files written to {report['uri']}")


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on stderr when it is a terminal and not --quiet; else no callback."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        yield update
