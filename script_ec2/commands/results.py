"""``script-ec2 results``: list, show, remove and prune cached fit results."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="The results cache: every fit stored under the sha256 of its canonical parameters.",
    no_args_is_help=True,
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")]
KeyArgument = Annotated[
    str, typer.Argument(help="A result key, or a unique prefix of at least 6 hex digits.")
]


@app.command("list")
def list_(
    ctx: typer.Context,
    *,
    algorithm: Annotated[
        str | None, typer.Option("--algorithm", help="Only this algorithm's results.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most N rows.")] = None,
    fmt: FormatOption = "table",
) -> None:
    """Stored results, newest first: key, algorithm, created, compute seconds, hits, size."""
    from script_ec2.output import render
    from script_ec2.results import list_results

    rows = [r.as_dict() for r in list_results(ctx.obj.engine, algorithm=algorithm, limit=limit)]
    columns = [
        "key",
        "algorithm",
        "created_at",
        "compute_seconds",
        "hits",
        "last_hit_at",
        "size_bytes",
    ]
    render(rows, fmt, title="cached results", columns=columns)


@app.command("show")
def show(ctx: typer.Context, key: KeyArgument, *, fmt: FormatOption = "table") -> None:
    """One result: parameters, model versions, metadata and a summary of its arrays."""
    import json

    from script_ec2.output import render
    from script_ec2.results import describe, get

    document = describe(get(ctx.obj.engine, key))
    if fmt == "json":
        render(document, "json")
        return
    flat = {
        k: v if not isinstance(v, dict | list) else json.dumps(v, sort_keys=True)
        for k, v in document.items()
        if k not in ("params", "meta", "arrays")
    }
    flat.update({f"params.{k}": v for k, v in document["params"].items()})
    flat.update(
        {
            f"meta.{k}": v if not isinstance(v, dict | list) else json.dumps(v, sort_keys=True)
            for k, v in document["meta"].items()
        }
    )
    flat.update(
        {
            f"arrays.{name}": f"{tuple(a['shape'])} {a['dtype']} min {a['min']:.6g} "
            f"max {a['max']:.6g} sum {a['sum']:.6g}"
            for name, a in document["arrays"].items()
        }
    )
    render(flat, fmt, title=f"result {document['key'][:12]}")


@app.command("rm")
def rm(ctx: typer.Context, key: KeyArgument) -> None:
    """Remove one result; the next identical fit computes it again."""
    import sys

    from script_ec2.results import remove

    print(f"removed result {remove(ctx.obj.engine, key)}", file=sys.stderr)


@app.command("prune")
def prune(
    ctx: typer.Context,
    *,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age of the results to remove: 90s, 12h, 30d...")
    ],
) -> None:
    """Remove every result created longer ago than --older-than (for cron)."""
    import sys

    from script_ec2.durations import parse_duration
    from script_ec2.results import prune as prune_results

    age = parse_duration(older_than, "--older-than")
    count = prune_results(ctx.obj.engine, age)
    if not ctx.obj.settings.quiet:
        print(f"removed {count} result(s) older than {older_than}", file=sys.stderr)
