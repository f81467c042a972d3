"""``script-ec2 worker``: run a Celery worker that executes queued fit and sync jobs."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    ctx: typer.Context,
    *,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", help="Jobs run at once (default: number of CPUs)."),
    ] = None,
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated queues to consume [default: SCRIPT_EC2_BROKER_QUEUE or "
            "script-ec2].",
        ),
    ] = None,
) -> None:
    """Consume jobs from the broker (broker_url setting) until SIGTERM or Ctrl+C.

    Exit codes: 0 stopped cleanly, 1 the database is unreachable or the worker failed, 2 no
    broker_url is set or an option is invalid.
    """
    from script_ec2.tasks import run_worker

    names = queues.split(",") if queues else None
    code = run_worker(ctx.obj, concurrency=concurrency, queues=names)
    if code:
        raise typer.Exit(code)
