"""``script-ec2 sync``: one pass (or ``--watch`` passes) over the private data prefix."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from script_ec2.commands.progress import progress_observer


def sync(
    ctx: typer.Context,
    *,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the plan (new, changed, deleted, unchanged); write nothing."
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Run a pass every --interval until SIGINT or SIGTERM.")
    ] = False,
    interval: Annotated[
        str, typer.Option("--interval", help="Time between --watch passes, e.g. 30m.")
    ] = "30m",
    settle: Annotated[
        float,
        typer.Option(
            "--settle", help="Skip objects modified in the last N minutes (uploads in progress)."
        ),
    ] = 0.0,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="Allow a pass to delete more than half of the tracked objects.",
        ),
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            help="Objects in flight at once (at most one ingest per CPU core among them).",
        ),
    ] = 4,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Summary as table or json.")] = "table",
    run_async: Annotated[
        bool,
        typer.Option(
            "--async",
            help="Queue a refresh for a worker and print its job id (joins one already queued).",
        ),
    ] = False,
) -> None:
    """Fetch what is new or changed in the private data, ingest it, and update the statistics.

    Exit codes: 0 ok, 3 some files quarantined or failed (see the summary), 75 another sync holds
    the lock, 1 the database or bucket failed.
    """
    import signal
    import threading
    from datetime import timedelta

    from script_ec2.durations import parse_duration
    from script_ec2.errors import EXIT_PARTIAL, ScriptEc2Error, UsageError
    from script_ec2.sync import SyncSummary, run_sync
    from script_ec2.sync import watch as watch_loop

    if fmt not in ("table", "json"):
        raise UsageError(f"--format must be table or json, got {fmt!r}")
    if concurrency < 1 or concurrency > 64:
        raise UsageError(f"--concurrency must be between 1 and 64, got {concurrency}")
    if settle < 0:
        raise UsageError(f"--settle must be zero or more minutes, got {settle}")
    every = parse_duration(interval, "--interval")
    if watch and (dry_run or every.total_seconds() < 1):
        raise UsageError(
            "--watch needs an --interval of at least 1s and cannot be combined with --dry-run"
        )
    app_ctx = ctx.obj
    settings = app_ctx.settings
    if run_async:
        if watch or dry_run:
            raise UsageError("--async cannot be combined with --watch or --dry-run")
        _submit(app_ctx, fmt)
        return
    stop = threading.Event()

    def one_pass() -> SyncSummary:
        observer = progress_observer(settings.quiet)
        try:
            return run_sync(
                app_ctx.engine,
                app_ctx.data_store,
                source=settings.data_uri,
                cache_dir=settings.cache_dir,
                settle=timedelta(minutes=settle),
                dry_run=dry_run,
                allow_mass_delete=allow_mass_delete,
                concurrency=concurrency,
                observer=observer,
                stop=stop,
            )
        finally:
            if observer is not None:
                observer.close()

    if not watch:
        summary = one_pass()
        _show(summary, fmt, settings.quiet)
        if summary.partial:
            raise typer.Exit(EXIT_PARTIAL)
        return

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)

    def on_error(exc: ScriptEc2Error) -> None:
        print(f"Error: {exc}", file=sys.stderr)

    watch_loop(
        one_pass,
        interval=every,
        stop=stop,
        on_summary=lambda s: _show(s, fmt, settings.quiet),
        on_error=on_error,
    )


def _submit(app_ctx: Any, fmt: str) -> None:
    from script_ec2.jobs import get, submit_sync
    from script_ec2.output import render

    submission = submit_sync(app_ctx)
    assert submission.job_id is not None  # a sync is never answered from a cache
    job = get(app_ctx.engine, submission.job_id)
    row = {
        "job_id": job.id,
        "state": job.state,
        "joined": submission.joined,
        "follow": f"script-ec2 jobs wait {job.id}",
    }
    render(row, "json" if fmt == "json" else "table")


def _show(summary: object, fmt: str, quiet: bool) -> None:
    from script_ec2.output import render
    from script_ec2.sync import SyncSummary

    assert isinstance(summary, SyncSummary)
    data = summary.as_json()
    if fmt == "json":
        render(data, "json")
        return
    if quiet and not summary.partial and not summary.dry_run:
        return
    if summary.plan is not None:
        rows = [
            {"change": k, "key": key}
            for k, keys in summary.plan.items()
            if k != "unchanged"
            for key in keys
        ]
        rows.append({"change": "unchanged", "key": f"{len(summary.plan['unchanged'])} objects"})
        render(rows, "table", title=f"sync plan (dry run) for {summary.source}")
        return
    counts = {
        k: data[k]
        for k in (
            "new",
            "changed",
            "deleted",
            "unchanged",
            "quarantined",
            "failed",
            "settling",
            "rows_ingested",
            "bytes_downloaded",
            "seconds",
        )
    }
    render([counts], "table", title=f"sync {summary.source}")
    problems = [{"status": "quarantined", **q} for q in summary.quarantined]
    problems += [{"status": "failed", **f} for f in summary.failed]
    if problems:
        render(problems, "table", title="files not ingested")
    dropped = {k: v for k, v in data["dropped_rows"].items() if v} | {
        k: v for k, v in data["clipped_rows"].items() if v
    }
    if dropped:
        render(
            [{"rule": k, "rows": v} for k, v in dropped.items()],
            "table",
            title="rows dropped or clipped by rule",
        )
