"""``script-ec2 doctor``: check that the settings, database, buckets, broker and models work."""

from __future__ import annotations

from typing import Annotated

import typer

FORMATS = ("table", "json")


def doctor(
    ctx: typer.Context,
    *,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Skip the slow checks and those with side effects: the private read, the "
            "public write test and the models' checksums (for health checks).",
        ),
    ] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """Check each thing a run depends on and say pass, fail or skip, with a hint on failure.

    Checks: settings; database reachable and migrations at head; private bucket list and read;
    public target writable (a temporary key, deleted afterwards); broker reachable and workers
    alive (with a broker_url); the session models fit needs present and verified; control models
    (optional). Exit 0 when nothing failed, 1 otherwise.
    """
    from script_ec2.doctor import all_passed, run_checks
    from script_ec2.errors import EXIT_FAILED
    from script_ec2.output import check_format, render

    check_format(fmt, FORMATS)
    checks = run_checks(ctx.obj, quick=quick)
    passed = all_passed(checks)
    rows = [check.as_dict() for check in checks]
    if fmt == "json":
        render({"ok": passed, "quick": quick, "checks": rows}, "json")
    else:
        title = f"script-ec2 doctor{' --quick' if quick else ''}: {'ok' if passed else 'FAILED'}"
        render(rows, "table", title=title, columns=("check", "status", "detail", "hint"))
    if not passed:
        raise typer.Exit(EXIT_FAILED)
