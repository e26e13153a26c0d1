"""Pooled (global) models over a universe: per fold date, one model per network type trained on every symbol.

The fold calendar (:func:`pooled_calendar`) is common to all symbols: test blocks of ``walkforward.step``
bars over the *union* of the symbols' bar times, from the first time any symbol has ``initial_train``
bars. Symbol ``s`` takes part in the block ``[τ0, τ1)`` when it has at least ``initial_train`` bars
before ``τ0`` and at least one test bar in the block (a bar whose next close is known). Its rows obey
the single-symbol rules (DESIGN.md), with ``T`` = its first row at or after ``τ0``: it trains on rows
``t`` with ``t + horizon <= T - 1``, validates on the chronological tail of those (again with a gap of
``horizon`` rows), and is tested on its rows in ``[τ0, τ1)``. Its row ranges are computed by
:func:`backtest.walkforward.plan_folds` itself (a one-fold plan starting at ``T``), so the pooled and
the per-symbol walk-forward share one definition of a fold.

A pooled fold (:func:`compute_pooled_fold`) then runs :func:`backtest.walkforward.prepare_fold` for
each participating symbol (its own :class:`~backtest.features.FoldTransform`, fit on its own
training rows only: normalisation is per symbol), concatenates the fit and validation windows in
universe order, optionally appends one-hot symbol channels (``features.symbol_input = "onehot"``:
channel ``i`` is 1 at every time step of a window of the ``i``-th universe symbol, 0 otherwise),
fits one forecaster, predicts each symbol's test windows and decodes them with that symbol's own
transform (:func:`backtest.walkforward.finish_fold`). Every symbol's bars end at its test block's
end: the task is given no later bar of any symbol, so garbage after bar ``k`` of any symbol changes
no forecast at or before ``k`` of any symbol.

Fold folder (``folds/<model>/<k>/seed-<s>/``): ``model/`` (the one pooled model),
``transforms/<SYMBOL_SAFE>.pkl`` (each symbol's fitted transform), ``forecasts.csv`` (timestamp,
symbol, fold, y_pred_h1..hK as predicted log returns), ``history.csv``, ``training_log.csv``
(networks) and ``members.json`` (each symbol's fit/validation/test rows as bar times).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import Config, WalkForwardConfig
from backtest.walkforward import (
    FoldOutput,
    FoldResult,
    FoldSpec,
    FoldTask,
    finish_fold,
    fold_dir,
    plan_folds,
    prepare_fold,
    write_fold,
)


def symbol_safe(symbol: str) -> str:
    """A symbol as a folder/file name: ``BTC/USDT`` -> ``BTC_USDT`` (anything but letters, digits, ``-._`` -> ``_``)."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in symbol)


@dataclass(frozen=True)
class PooledFold:
    """One block of the common calendar: test bar times ``[start, stop)`` and each participant's rows."""

    k: int
    start: pd.Timestamp  # first test bar time (open, UTC)
    stop: pd.Timestamp  # exclusive
    specs: dict[str, FoldSpec]  # symbol -> its rows (positions into its own bars), universe order


def pooled_calendar(bars: dict[str, pd.DataFrame], first_rows: dict[str, int], wf: WalkForwardConfig,
                    horizon: int) -> list[PooledFold]:
    """The common fold calendar over the union of bar times (see the module docstring); ``max_folds`` counts blocks."""
    union = pd.DatetimeIndex(sorted(set().union(*[set(b.index) for b in bars.values()])))
    entries, lasts = [], []
    for b in bars.values():
        last_row = len(b) - 1 - horizon
        if wf.initial_train <= last_row:
            entries.append(b.index[wf.initial_train])
            lasts.append(b.index[last_row])
    if not entries:
        return []
    pos = int(union.get_loc(min(entries)))
    end = int(union.get_loc(max(lasts))) + 1
    folds: list[PooledFold] = []
    while pos < end:
        stop_pos = min(pos + wf.step, end)
        t0 = union[pos]
        t1 = union[stop_pos] if stop_pos < len(union) else union[-1] + pd.Timedelta(1, "ns")
        specs: dict[str, FoldSpec] = {}
        for sym, b in bars.items():
            T = int(b.index.searchsorted(t0, side="left"))
            stop = min(int(b.index.searchsorted(t1, side="left")), len(b) - horizon)
            if T < wf.initial_train or stop <= T:
                continue
            one = wf.model_copy(update={"initial_train": T, "step": stop - T, "max_folds": 1})
            specs[sym] = replace(plan_folds(len(b), first_rows[sym], one, horizon)[0], k=len(folds))
        if specs:
            folds.append(PooledFold(len(folds), t0, t1, specs))
            if wf.max_folds is not None and len(folds) >= wf.max_folds:
                break
        pos = stop_pos
    return folds


@dataclass
class PooledFoldTask:
    """Everything one pooled fold needs: picklable; each member's bars end at its test block's end."""

    model_name: str
    k: int
    seed: int
    universe: list[str]  # every symbol of the run, in config order (the one-hot channel order)
    members: dict[str, FoldTask]  # participating symbols -> their single-symbol fold task
    out_dir: Path  # folds/<model>/<k>/seed-<seed>
    symbol_input: str = "none"
    warm_from: Path | None = None
    warm_epochs: int | None = None
    deterministic: bool = True


def build_pooled_plan(cfg: Config, bars: dict[str, pd.DataFrame], first_rows: dict[str, int],
                      run_dir: Path) -> tuple[list[PooledFold], list[list[PooledFoldTask]]]:
    """The calendar and one chain of pooled fold tasks per (model, seed), folds in order."""
    folds = pooled_calendar(bars, first_rows, cfg.walkforward, cfg.features.horizon)
    wf, universe = cfg.walkforward, list(bars)
    chains: list[list[PooledFoldTask]] = []
    for name, mcfg in cfg.models.items():
        for seed in cfg.run.seeds:
            chain = []
            for f in folds:
                warm = wf.warm_start and f.k > 0 and mcfg.type not in ("persistence", "mean", "linear")
                out_dir = fold_dir(run_dir, name, f.k, seed)
                members = {
                    s: FoldTask(model_name=name, model_cfg=mcfg, features=cfg.features, fold=spec, n_folds=len(folds),
                                seed=seed, bars=bars[s].iloc[: spec.test_stop], out_dir=out_dir,
                                deterministic=cfg.run.deterministic)
                    for s, spec in f.specs.items()
                }
                chain.append(PooledFoldTask(
                    model_name=name, k=f.k, seed=seed, universe=universe, members=members, out_dir=out_dir,
                    symbol_input=cfg.features.symbol_input,
                    warm_from=fold_dir(run_dir, name, f.k - 1, seed) if warm else None,
                    warm_epochs=(wf.warm_start_epochs or max(1, mcfg.epochs // 3)) if warm else None,
                    deterministic=cfg.run.deterministic,
                ))
            chains.append(chain)
    return folds, chains


def with_symbol_channels(X: np.ndarray, index: int, n_symbols: int) -> np.ndarray:
    """``X`` ``(n, lookback, F)`` with ``n_symbols`` one-hot channels appended (channel ``index`` = 1) -> ``(n, lookback, F + n_symbols)``."""
    hot = np.zeros((X.shape[0], X.shape[1], n_symbols), dtype=X.dtype)
    hot[:, :, index] = 1.0
    return np.concatenate([X, hot], axis=2)


def _deterministic_backend(deterministic: bool) -> None:
    """Deterministic TensorFlow ops when TF is the Keras backend (as the single-symbol fold runner does)."""
    if not deterministic:
        return
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def compute_pooled_fold(task: PooledFoldTask, trainer_cache: dict | None = None) -> FoldOutput:
    """Train the fold's one model on every member's fit rows and forecast every member's test rows (writes nothing)."""
    t0 = time.perf_counter()
    preps = {s: prepare_fold(m) for s, m in task.members.items()}
    onehot = task.symbol_input == "onehot"

    def inputs(X: np.ndarray, s: str) -> np.ndarray:
        return with_symbol_channels(X, task.universe.index(s), len(task.universe)) if onehot else X

    X_fit = np.concatenate([inputs(p.X_fit, s) for s, p in preps.items()])
    y_fit = np.concatenate([p.y_fit for p in preps.values()])
    vals = [(inputs(p.X_val, s), p.y_val) for s, p in preps.items() if p.X_val is not None and len(p.X_val)]
    X_val = np.concatenate([v[0] for v in vals]) if vals else None
    y_val = np.concatenate([v[1] for v in vals]) if vals else None
    model = next(iter(preps.values())).model  # fresh, seeded from the run seed and the fold only
    fit_opts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=".fold-log-") as tmp:
        log = Path(tmp) / "training_log.csv"
        if hasattr(model, "build"):
            _deterministic_backend(task.deterministic)
            fit_opts.update(log_csv=log, trainer_cache=trainer_cache)
            if task.warm_from is not None:
                from models.base import Forecaster

                fit_opts["initial_weights"] = Forecaster.load(task.warm_from / "model").get_weights()
                fit_opts["epochs"] = task.warm_epochs
        model.fit(X_fit, y_fit, X_val, y_val, **fit_opts)
        log_bytes = log.read_bytes() if log.exists() else None
    files: dict[str, bytes] = {}
    parts, members = [], {}
    for i, (s, p) in enumerate(preps.items()):
        p.model = model
        p.X_test = inputs(p.X_test, s)
        out = finish_fold(p, log_bytes)
        if i == 0:
            files.update({k: v for k, v in out.files.items() if k != "transform.pkl"})
        files[f"transforms/{symbol_safe(s)}.pkl"] = out.files["transform.pkl"]
        fc = out.forecasts.copy()
        fc.insert(1, "symbol", s)
        parts.append(fc)
        members[s] = _member_rows(task.members[s])
    forecasts = pd.concat(parts, ignore_index=True)
    history = out.history
    files["forecasts.csv"] = forecasts.to_csv(index=False).encode()
    files["members.json"] = json.dumps(members, indent=2).encode()
    return FoldOutput((task.model_name, task.seed, task.k), forecasts, history, files,
                      time.perf_counter() - t0, len(X_fit))


def _member_rows(t: FoldTask) -> dict[str, Any]:
    """A member's fit/validation/test rows as ``[first, last]`` bar times (inclusive), ISO UTC; null when empty."""
    idx, f = t.bars.index, t.fold

    def span(a: int, b: int) -> list[str] | None:
        return [idx[a].isoformat(), idx[b - 1].isoformat()] if b > a else None

    return {"fit": span(f.train_start, f.train_stop), "validation": span(f.val_start, f.val_stop),
            "test": span(f.test_start, f.test_stop), "fit_rows": f.train_stop - f.train_start}


def run_pooled_fold(task: PooledFoldTask, trainer_cache: dict | None = None) -> FoldResult:
    """Compute and write a pooled fold atomically, or read it back when its folder is complete (resume)."""
    key = (task.model_name, task.seed, task.k)
    if (task.out_dir / "forecasts.csv").exists():
        forecasts = pd.read_csv(task.out_dir / "forecasts.csv")
        forecasts["timestamp"] = pd.to_datetime(forecasts["timestamp"], utc=True)
        history = pd.read_csv(task.out_dir / "history.csv")
        best = float(history["val_loss"].min()) if len(history) else float("nan")
        rows = sum(m.fold.n_train for m in task.members.values())
        return FoldResult(key, forecasts, history, 0.0, True, best, rows)
    return write_fold(compute_pooled_fold(task, trainer_cache), task.out_dir)


def run_pooled_chain(chain: list[PooledFoldTask]) -> list[FoldResult]:
    """A (model, seed) chain of pooled folds in order (warm start needs it), reusing compiled trainers."""
    cache: dict = {}
    return [run_pooled_fold(t, cache) for t in chain]


def execute_pooled(chains: list[list[PooledFoldTask]], wf: WalkForwardConfig,
                   on_result: Callable[[FoldResult], None] | None = None) -> list[FoldResult]:
    """Run every chain sequentially or in spawned worker processes (``walkforward.executor``); results in plan order."""
    results: list[FoldResult] = []
    if wf.executor == "sequential" or wf.workers == 1:
        cache: dict = {}
        for chain in chains:
            for task in chain:
                results.append(run_pooled_fold(task, cache))
                if on_result:
                    on_result(results[-1])
        return results
    with ProcessPoolExecutor(max_workers=wf.workers, mp_context=mp.get_context("spawn")) as pool:
        for chain_results in pool.map(run_pooled_chain, chains):
            for r in chain_results:
                results.append(r)
                if on_result:
                    on_result(r)
    return results


__all__ = [
    "PooledFold", "PooledFoldTask", "build_pooled_plan", "compute_pooled_fold",
    "execute_pooled", "pooled_calendar", "run_pooled_fold", "symbol_safe", "with_symbol_channels",
]
