"""``python -m bench.run [--only NAME] [--scale X] [--output FILE]``: run the benchmarks, print
one table of figures, and write them with the machine they ran on to ``bench/results.json``.

Benchmarks are the ``bench/bench_*.py`` modules, each with ``run(ctx) -> list[Figure]``. A missed
target is reported, not a failure: the exit code is 0 unless a benchmark could not run (then 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pkgutil
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import bench
from bench.common import BenchContext, Figure

RESULTS = Path(__file__).resolve().parent / "results.json"
_VERSIONED = (
    "script-ec2",
    "boto3",
    "botocore",
    "awscli",
    "moto",
    "pyarrow",
    "pandas",
    "numpy",
    "sqlalchemy",
    "scikit-learn",
    "psutil",
)

# Above this share of CPU used by other processes, timings are flagged as possibly inflated.
_BUSY_SHARE = 0.10

Benchmark = Callable[[BenchContext], list[Figure]]


def discover(only: str | None = None) -> dict[str, Benchmark]:
    """Benchmark name (``sync`` for ``bench_sync.py``) -> its ``run``, in name order."""
    found: dict[str, Benchmark] = {}
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda i: i.name):
        if not info.name.startswith("bench_"):
            continue
        name = info.name.removeprefix("bench_")
        if only is not None and only not in (name, info.name):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        found[name] = cast(Benchmark, module.run)
    return found


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, memory, Python, library versions, commit, time."""
    import psutil

    versions: dict[str, str | None] = {}
    for dist in _VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=repo, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "git_commit": git("rev-parse", "--short", "HEAD") or None,
        # Uncommitted changes to the package mean the commit alone does not say what was measured.
        "git_dirty": bool(git("status", "--porcelain", "--", "script_ec2")),
        "versions": versions,
    }


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine was busy, CPU seconds of this process and its children).

    Children count once they are reaped, so call this after a benchmark has stopped its servers.
    """
    import resource

    import psutil

    t = psutil.cpu_times()
    # Interrupt time is left out: most of it is this run's own loopback traffic and disk writes.
    machine = t.user + t.nice + t.system
    own = sum(
        u.ru_utime + u.ru_stime
        for u in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )
    return machine, own


def _others_share(before: tuple[float, float], after: tuple[float, float], elapsed: float) -> float:
    """Share of the machine's CPU capacity that processes outside this run used meanwhile."""
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (elapsed * (os.cpu_count() or 1))) if elapsed > 0 else 0.0


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value == int(value) and abs(value) < 1e9:
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinity (a figure that could not be measured) become null: JSON has neither."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def print_table(figures: Sequence[tuple[str, Figure]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="script-ec2 benchmarks")
    table.add_column("figure")
    # Numbers never wrap; a long figure name does.
    for column in ("value", "baseline", "ratio", "target", "ok"):
        table.add_column(column, justify="right", no_wrap=True)
    notes: list[str] = []
    for bench_name, fig in figures:
        mark = ""
        if fig.note:
            notes.append(fig.note)
            mark = f" [{len(notes)}]"
        ok = {True: "[green]yes[/]", False: "[red]MISSED[/]", None: "-"}[fig.passed]
        shown = _fmt(fig.value)
        table.add_row(
            f"{bench_name}: {fig.name}{mark}",
            shown if shown == "-" else f"{shown} {fig.unit}".strip(),
            _fmt(fig.baseline),
            _fmt(fig.ratio),
            fig.target or "-",
            ok,
        )
    # Piped into a file or a CI log there is no terminal width to respect.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(table)
    for i, note in enumerate(notes, 1):
        console.print(f"[{i}] {note}", highlight=False, markup=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", help="run one benchmark, e.g. 'sync' (bench/bench_sync.py)")
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply data sizes (1.0: the sizes the targets are defined for; 0.25: smoke run)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON file")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f"--scale must be greater than 0, got {args.scale}")
    benchmarks = discover(args.only)
    if not benchmarks:
        parser.error(f"no benchmark named {args.only!r} in bench/ (bench_<name>.py)")

    figures: list[tuple[str, Figure]] = []
    runs: dict[str, dict[str, Any]] = {}
    busy: list[str] = []
    for name, run in benchmarks.items():
        started = time.perf_counter()
        cpu_before = _cpu_seconds()
        error = None
        with tempfile.TemporaryDirectory(prefix=f"script-ec2-bench-{name}-") as scratch:
            ctx = BenchContext(scale=args.scale, workdir=Path(scratch))
            ctx.log(f"benchmark {name} (scale {args.scale:g}) in {scratch}")
            try:
                figures.extend((name, f) for f in run(ctx))
            except Exception as exc:
                traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - started
        others = _others_share(cpu_before, _cpu_seconds(), elapsed)
        runs[name] = {"seconds": round(elapsed, 1), "error": error, "others_cpu_share": others}
        ctx.log(f"benchmark {name} took {elapsed:.1f} s; other processes used {others:.0%} of CPU")
        if others > _BUSY_SHARE:
            busy.append(f"{name} ({others:.0%} of the CPU went to other processes)")

    print_table(figures)
    missed = [f"{n}: {f.name}" for n, f in figures if f.passed is False]
    failed = {n: r["error"] for n, r in runs.items() if r["error"]}
    results = {
        "machine": machine(),
        "scale": args.scale,
        "benchmarks": runs,
        "figures": [{"benchmark": n, **_finite(asdict(f))} for n, f in figures],
        "missed": missed,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.output}")
    if args.scale != 1:
        print(f"scale {args.scale:g}: targets are defined for scale 1, read these as a smoke run")
    if busy:
        print("the machine was busy with other work, timings may be inflated: " + "; ".join(busy))
    if missed:
        print(f"{len(missed)} target(s) missed: " + "; ".join(missed))
    else:
        print("every target met")
    for name, error in failed.items():
        print(f"benchmark {name} could not run: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
