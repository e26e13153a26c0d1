"""Test hook: kill the paper process at a named point of a cycle.

Set ``WALKFORWARD_PAPER_CRASH_AT=<point>`` (or ``<point>@<n>``: the n-th time the
point is reached in this process) and the paper trader sends itself ``SIGKILL``
there, like a power cut: no ``finally`` block, no rollback, no flush. The crash
tests use it to prove that a bar's records are all committed or all absent.

Points, in the order a bar reaches them:

``after_fetch``    candles downloaded and cached, nothing of the bar written
``after_train``    a retrained model is on disk, the bar's transaction not yet begun
``after_fill``     inside the transaction: the bar row and its fills written
``before_order``   inside the transaction: positions, equity, forecasts, signals written, orders not
``before_commit``  inside the transaction: everything written, ``COMMIT`` not yet issued
``after_commit``   the bar committed, the next bar not begun

Never set it outside tests.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_ENV = "WALKFORWARD_PAPER_CRASH_AT"
POINTS = ("after_fetch", "after_train", "after_fill", "before_order", "before_commit", "after_commit")

_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """``SIGKILL`` this process if ``$WALKFORWARD_PAPER_CRASH_AT`` names ``name`` (and its count is reached)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
