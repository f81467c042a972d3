"""One output contract for every command: ``--format table|json|csv`` and ``--output FILE``.

Data goes to stdout (or the file); logs, progress and summaries go to stderr.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from script_ec2.errors import UsageError

FORMATS = ("table", "json", "csv")


def render(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any],
    fmt: str = "table",
    output: Path | None = None,
    title: str | None = None,
    columns: Sequence[str] | None = None,
) -> None:
    """Render rows (or one object) in ``fmt`` to stdout or ``output``."""
    check_format(fmt)
    if fmt == "json":
        text = json.dumps(rows, indent=2, default=_json_default) + "\n"
        _emit(text, output)
        return
    table_rows: list[Mapping[str, Any]]
    if isinstance(rows, Mapping):
        table_rows = [{"key": k, "value": v} for k, v in rows.items()]
    else:
        table_rows = list(rows)
    cols = list(columns) if columns else _columns(table_rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in table_rows:
            writer.writerow({c: _cell(row.get(c), exact=True) for c in cols})
        _emit(buf.getvalue(), output)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in table_rows:
        table.add_row(*(_cell(row.get(c)) for c in cols))
    if output is not None:
        buf = io.StringIO()
        Console(file=buf, width=200, no_color=True).print(table)
        _emit(buf.getvalue(), output)
    else:
        width = None if sys.stdout.isatty() else 200
        Console(file=sys.stdout, soft_wrap=False, width=width).print(table)


def check_format(fmt: str, allowed: Sequence[str] = FORMATS) -> None:
    """Refuse an unknown ``--format`` before any work is done."""
    if fmt not in allowed:
        raise UsageError(f"--format must be one of {', '.join(allowed)}, got {fmt!r}")


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def _cell(value: Any, exact: bool = False) -> str:
    """Text of one cell; tables round floats for reading, CSV keeps every digit."""
    if value is None:
        return ""
    if isinstance(value, float) and not exact:
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    return str(value)


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(output)
    except OSError as exc:
        raise UsageError(f"cannot write --output {output}: {exc.strerror}") from None
