"""Fault injection for the crash-safety tests: a real ``kill -9`` at a named point.

``SCRIPT_EC2_CRASH_AT=name`` (or ``name#N`` for the N-th time the point is reached) makes the
process SIGKILL itself at :func:`checkpoint` ``(name)``. Unset, a checkpoint costs one dict lookup.
Operators never set this; it exists so that tests can prove a re-run after a crash at any step
converges to the state of one clean run.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def checkpoint(name: str) -> None:
    target = os.environ.get("SCRIPT_EC2_CRASH_AT")
    if not target:
        return
    wanted, _, nth = target.partition("#")
    if wanted != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
