"""``script-ec2 jobs``: follow asynchronous jobs (status, wait, list) in the jobs table.

Exit codes: 0 ok (for ``wait``: the job succeeded), 1 the job failed, 2 unknown job id or bad
option, 124 ``wait --timeout`` ran out while the job was still queued or running.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Follow asynchronous jobs (fit --async, sync --async).", no_args_is_help=True
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table or json.")]
JobId = Annotated[str, typer.Argument(help="The job id printed by --async.")]
_FORMATS = ("table", "json")
_LIST_COLUMNS = (
    "id",
    "kind",
    "state",
    "progress",
    "attempts",
    "result_key",
    "created_at",
    "finished_at",
    "error",
)


@app.command("status")
def status(ctx: typer.Context, job_id: JobId, fmt: FormatOption = "table") -> None:
    """Show one job: state, progress, error, result key, attempts, worker, times, notifications."""
    from script_ec2 import jobs

    _check_format(fmt)
    _show(jobs.get(ctx.obj.engine, job_id), fmt)


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_id: JobId,
    *,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Give up after S seconds (exit 124); default: no limit."),
    ] = None,
    fmt: FormatOption = "table",
) -> None:
    """Wait until the job has finished, show it, and exit 0 if it succeeded, 1 if it failed."""
    import sys

    from script_ec2 import jobs
    from script_ec2.errors import EXIT_FAILED, UsageError

    _check_format(fmt)
    if timeout is not None and timeout < 0:
        raise UsageError(f"--timeout must be zero or more seconds, got {timeout:g}")
    job = jobs.wait(ctx.obj.engine, job_id, timeout=timeout)
    _show(job, fmt)
    if job.state == jobs.FAILED:
        print(f"Error: job {job.id} failed: {job.error}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)


@app.command("list")
def list_(
    ctx: typer.Context,
    *,
    state: Annotated[
        str | None,
        typer.Option(
            "--state", help="Only jobs in this state: queued, running, succeeded, failed."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most N jobs, newest first.")] = 50,
    fmt: FormatOption = "table",
) -> None:
    """List the newest jobs."""
    from script_ec2 import jobs
    from script_ec2.output import render

    _check_format(fmt)
    rows = [j.as_dict() for j in jobs.list_jobs(ctx.obj.engine, state=state, limit=limit)]
    if fmt == "json":
        render(rows, "json")
        return
    for row in rows:  # the full key is in `jobs status` and the JSON; 16 hex digits identify it
        if row["result_key"]:
            row["result_key"] = row["result_key"][:16] + "…"
    render(rows, "table", title="jobs", columns=_LIST_COLUMNS)


def _check_format(fmt: str) -> None:
    from script_ec2.output import check_format

    check_format(fmt, _FORMATS)


def _show(job: Any, fmt: str) -> None:
    import json

    from script_ec2.output import render

    data = job.as_dict()
    if fmt == "json":
        render(data, "json")
        return
    hidden = ("params", "notify", "notifications", "summary")
    flat = {k: v for k, v in data.items() if k not in hidden}
    flat["params"] = json.dumps(data["params"], sort_keys=True)
    flat["notifications"] = job.notification_summary()
    flat["summary"] = _summary_line(job.summary)
    render(flat, "table", title=f"job {job.id}")


def _summary_line(summary: dict[str, Any] | None) -> str:
    """The counts of a job's summary on one line (``--format json`` shows all of it)."""
    if not summary:
        return ""
    counts = {k: v for k, v in summary.items() if isinstance(v, int) and not isinstance(v, bool)}
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
