"""What runs inside a worker (a spawned process, a Ray worker, or this process when it trains): TensorFlow
on one thread, the worker's cache of compiled trainers, and one unit of work computed as every executor
computes it (:func:`backtest.folds.compute.run_unit`).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from backtest.folds.units import Unit, needs_tensorflow
from backtest.quiet import import_tensorflow


def ensure_tensorflow() -> None:
    """TensorFlow imported quietly, with one intra-op and one inter-op thread (set before its runtime starts;
    a process whose TensorFlow runtime already started -- a notebook that trained before -- keeps its own)."""
    import_tensorflow()
    try:
        import tensorflow as tf
    except ImportError:  # another Keras backend (JAX, PyTorch)
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


#: Compiled trainers of a worker process, kept across the units it is given (a speed-up only: each trainer is
#: reset to its members' initial weights and zeroed optimizer slots before use, so results do not depend on it).
WORKER_CACHE: dict = {}


def worker_unit(unit: Unit, bars: dict[str, pd.DataFrame]) -> list[Any]:
    """One unit computed in a worker process (TensorFlow is set up on the first network unit)."""
    from backtest.folds.compute import run_unit

    if needs_tensorflow(unit.tasks):
        ensure_tensorflow()
    return run_unit(unit, bars, WORKER_CACHE)


__all__ = ["WORKER_CACHE", "ensure_tensorflow", "worker_unit"]
