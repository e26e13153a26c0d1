"""Executors: where a unit of work runs, and nothing else (docs/design.md, "One path").

``sequential`` runs every unit in this process, ``process`` in ``walkforward.workers`` spawned worker
processes (default: one per core), ``ray`` as Ray tasks (:mod:`backtest.folds.ray`). Every worker gets the
run's bars once per unit, computes it with :func:`backtest.folds.compute.worker_unit` and returns fold
outputs as data; the driver alone writes each fold through the :class:`~backtest.folds.store.FoldStore` as
it arrives, so an interruption leaves only complete folds and a re-run computes only the missing ones.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import pandas as pd

from backtest.folds.compute import worker_unit
from backtest.folds.plan import FoldTask
from backtest.folds.store import FoldResult, FoldStore
from backtest.folds.units import Unit, make_units, work_order


def session(executor: str, ray_cfg: Any = None) -> contextlib.AbstractContextManager[Any]:
    """Open what the executor needs before the run writes anything: ``ray`` connects to (or starts) Ray, so an
    unreachable address is one line with nothing written, and shuts it down after if it started it."""
    if executor != "ray":
        return contextlib.nullcontext()
    from backtest.folds.ray import connected

    return connected(ray_cfg)


def execute(tasks: list[FoldTask], bars: dict[str, pd.DataFrame], store: FoldStore, executor: str,
            workers: int | None = None, ray_cfg: Any = None,
            on_result: Callable[[FoldResult], None] | None = None) -> list[FoldResult]:
    """Compute every fold of ``tasks`` that is not in ``store`` and write it there; results in task order.

    ``executor``: ``"sequential"``, ``"process"`` or ``"ray"`` (``ray_cfg``: the ``[ray]`` section). Folds
    already in the store are read back (resume) and reported first. The process executor runs in this
    process when at most one unit is left (starting workers would cost more than it saves).
    """
    got: dict[str, FoldResult] = {}
    on_result = on_result or (lambda r: None)
    for t in tasks:
        if store.is_complete(t):
            got[t.folder] = store.read(t)
            on_result(got[t.folder])
    units = work_order(make_units(tasks, store.is_complete, store.weights))

    def take(unit: Unit, outs: list[Any]) -> None:
        for t, out, missing in zip(unit.tasks, outs, unit.missing, strict=True):
            if missing:
                got[t.folder] = store.write(out)
                on_result(got[t.folder])

    n = int(workers) if workers else max(1, os.cpu_count() or 1)  # one worker per core when unset
    if executor == "ray":
        from backtest.folds.ray import run_on_ray

        run_on_ray(units, bars, ray_cfg, take)
    elif executor == "sequential" or n == 1 or len(units) <= 1:
        cache: dict = {}  # this run's compiled trainers
        for unit in units:
            take(unit, worker_unit(unit, bars, cache))
    else:
        with ProcessPoolExecutor(max_workers=min(n, len(units)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(worker_unit, u, bars): u for u in units}
            for fut in as_completed(futures):
                take(futures[fut], fut.result())
    return [got[t.folder] for t in tasks]


__all__ = ["execute", "session"]
