"""``script-ec2 models``: list, show, verify and remove versions in the model registry."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="Inspect the model registry (the models_dir setting).", no_args_is_help=True)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]


@app.command("list")
def list_(ctx: typer.Context, fmt: FormatOption = "table") -> None:
    """Every complete version: name, version, kind, creation time, content hash, published."""
    from script_ec2.output import render

    rows = [v.as_dict() for v in ctx.obj.registry.list()]
    render(rows, fmt, title=f"models in {ctx.obj.settings.models_dir}")


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (default: the latest).")],
    fmt: FormatOption = "table",
) -> None:
    """Show one version's metadata (parameters, metrics, fingerprint); checksums are verified."""
    from script_ec2.output import render
    from script_ec2.registry import parse_ref

    name, version = parse_ref(ref)
    meta = ctx.obj.registry.load(name, version).meta
    if fmt == "json":
        render(meta, "json")
        return
    flat = {k: v for k, v in meta.items() if not isinstance(v, dict | list)}
    for section in ("parameters", "metrics"):
        for key, value in (meta.get(section) or {}).items():
            if not isinstance(value, dict | list):
                flat[f"{section}.{key}"] = value
    render(flat, fmt, title=f"{name}@{meta['version']}")


@app.command("verify")
def verify(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this model name.")] = None,
    fmt: FormatOption = "table",
) -> None:
    """Check every version's files against SHA256SUMS and its schema; exit 1 if any fails."""
    from script_ec2.output import render
    from script_ec2.registry import ModelError

    results = ctx.obj.registry.verify(name)
    if name is not None and not results:
        # A mistyped name must not pass as "nothing wrong".
        raise ModelError(
            f"model {name!r} not found in the registry at {ctx.obj.settings.models_dir}"
        )
    render([r.as_dict() for r in results], fmt, title="model verification")
    if any(not r.ok for r in results):
        raise typer.Exit(1)


@app.command("rm")
def rm(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to remove (unpublished only).")],
) -> None:
    """Remove one unpublished version; its number is never reused."""
    import sys

    from script_ec2.errors import UsageError
    from script_ec2.registry import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise UsageError(f"models rm needs NAME@VERSION, got {ref!r}")
    removed = ctx.obj.registry.remove(name, version)
    print(f"removed {removed.ref}", file=sys.stderr)


@app.command("pull")
def pull(
    ctx: typer.Context,
    uri: Annotated[
        str,
        typer.Argument(help="Published models: s3://bucket/prefix or a folder.", metavar="URI"),
    ],
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="NAME (its latest version) or NAME@VERSION; default: the latest of every model.",
            metavar="NAME[@VERSION]",
        ),
    ] = None,
    *,
    anonymous: Annotated[
        bool,
        typer.Option(
            "--anonymous",
            help="Send unsigned S3 requests (a public bucket); automatic when no AWS "
            "credentials are found.",
        ),
    ] = False,
    fmt: FormatOption = "table",
) -> None:
    """Download published models into the registry; every checksum is verified first.

    A tampered, partial or conflicting version refuses the pull (exit 1) and nothing is
    installed. Versions keep their published numbers.
    """
    from script_ec2.commands.progress import step_progress
    from script_ec2.output import check_format, render
    from script_ec2.publish import open_source
    from script_ec2.publish import pull as run_pull

    check_format(fmt)
    app_ctx = ctx.obj
    s = app_ctx.settings
    source = open_source(uri, s, anonymous=True if anonymous else None)
    with step_progress(s.quiet, "pull") as progress:
        pulled = run_pull(
            source,
            app_ctx.registry,
            refs or [],
            engine=app_ctx.engine,
            registry_uri=s.models_dir,
            lock_dir=s.cache_dir / "locks",
            progress=progress,
        )
    render([p.as_dict() for p in pulled], fmt, title=f"pulled into {s.models_dir}")
