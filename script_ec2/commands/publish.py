"""``script-ec2 publish``: copy model versions from the registry to the public location."""

from __future__ import annotations

from typing import Annotated

import typer


def publish(
    ctx: typer.Context,
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Versions to publish: NAME (its latest version) or NAME@VERSION.",
            metavar="NAME[@VERSION]",
            show_default=False,
        ),
    ] = None,
    *,
    all_models: Annotated[
        bool,
        typer.Option("--all", help="Publish the latest version of every model in the registry."),
    ] = False,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="s3://bucket/prefix or a folder (default: the public_uri setting)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Run every check and list the files that would be uploaded; write nothing.",
        ),
    ] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
) -> None:
    """Publish model versions: their files, then index.json, then each model's latest.json.

    Only the registry's four artifact files are ever uploaded. A version folder holding anything
    else, or metadata or a model card naming private identifiers (session, driver, station IDs)
    or holding data rows, refuses the whole publish (exit 1) before anything is written.
    Publishing an identical version again writes nothing; a version that differs from what the
    target already holds under its number is an error (exit 1).
    """
    from script_ec2.commands.progress import step_progress
    from script_ec2.errors import UsageError
    from script_ec2.output import check_format, render
    from script_ec2.publish import publish as run_publish

    check_format(fmt)
    if bool(refs) == all_models:
        raise UsageError("name the models to publish (NAME or NAME@VERSION) or give --all")
    app_ctx = ctx.obj
    s = app_ctx.settings
    target = app_ctx.store(to or s.public_uri)
    with step_progress(s.quiet or dry_run, "publish") as progress:
        outcome = run_publish(
            app_ctx.registry,
            target,
            None if all_models else refs,
            dry_run=dry_run,
            engine=None if dry_run else app_ctx.engine,
            registry_uri=s.models_dir,
            licence=s.model_licence,
            lock_dir=s.cache_dir / "locks",
            progress=progress,
        )
    render(outcome.rows(), fmt, title=f"publish to {outcome.plan.target}")
