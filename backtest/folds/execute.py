"""Executors: where a unit of work runs, and nothing else (docs/design.md, "One path").

``sequential`` runs every unit in this process, ``process`` in ``walkforward.workers`` spawned worker
processes (default: one per core), ``ray`` as Ray tasks (:mod:`backtest.folds.ray`). All three run the
same units (:mod:`backtest.folds.units`) with the same function (:func:`backtest.folds.compute.run_unit`):
workers get the run's bars once per unit and return fold outputs as data; the driver alone writes every
fold through the :class:`~backtest.folds.store.FoldStore`, as it arrives, so an interruption leaves only
complete folds and a re-run computes only the missing ones. Every worker -- and this process when it
trains -- runs TensorFlow and BLAS on one thread, so every executor gives byte-identical predictions.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import pandas as pd

from backtest.folds.plan import FoldTask
from backtest.folds.store import FoldResult, FoldStore
from backtest.folds.units import Unit, make_units, needs_tensorflow, work_order
from backtest.folds.worker import ensure_tensorflow, worker_unit


def workers_of(workers: int | None) -> int:
    """``walkforward.workers``, or one per core of this machine when unset."""
    return int(workers) if workers else max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def session(executor: str, ray_cfg: Any = None) -> Iterator[None]:
    """Open what the executor needs before the run writes anything: ``ray`` connects to (or starts) Ray, so an
    unreachable address is one line with nothing written, and shuts it down after if it started it."""
    if executor != "ray":
        yield
        return
    from backtest.folds.ray import connect

    started = connect(ray_cfg)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def execute(tasks: list[FoldTask], bars: dict[str, pd.DataFrame], store: FoldStore, executor: str,
            workers: int | None = None, ray_cfg: Any = None,
            on_result: Callable[[FoldResult], None] | None = None) -> list[FoldResult]:
    """Compute every fold of ``tasks`` that is not in ``store`` and write it there; results in task order.

    ``executor``: ``"sequential"``, ``"process"`` or ``"ray"`` (``ray_cfg``: the ``[ray]`` section). Folds
    already in the store are read back (resume) and reported first. The process executor runs in this
    process when at most one unit is left (starting workers would cost more than it saves).
    """
    got: dict[str, FoldResult] = {}
    for t in tasks:
        if store.is_complete(t):
            got[t.folder] = store.read(t)
            if on_result:
                on_result(got[t.folder])
    units = work_order(make_units(tasks, store.is_complete, store.weights))

    def take(unit: Unit, outs: list[Any]) -> None:
        for t, out, missing in zip(unit.tasks, outs, unit.missing, strict=True):
            if missing:
                got[t.folder] = store.write(out)
                if on_result:
                    on_result(got[t.folder])

    n = workers_of(workers)
    if executor == "ray":
        from backtest.folds.ray import run_on_ray

        run_on_ray(units, bars, ray_cfg, take)
    elif executor == "sequential" or n == 1 or len(units) <= 1:
        from backtest.folds.compute import run_unit

        if needs_tensorflow(t for u in units for t in u.tasks):
            ensure_tensorflow()
        cache: dict = {}
        for unit in units:
            take(unit, run_unit(unit, bars, cache))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=min(n, len(units)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(worker_unit, u, bars): u for u in units}
            for fut in as_completed(futures):
                take(futures[fut], fut.result())
    return [got[t.folder] for t in tasks]


__all__ = ["execute", "session", "workers_of"]
