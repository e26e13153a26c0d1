"""What any executor runs for a unit of work: bars in, fold outputs as data out (nothing is written here).

A fold task's members each get only their bars ``[0, test_stop)`` (:func:`prepare`), so a fold is given
no bar after its test block, whichever executor runs it. Every fitted transform is fit on the member's
own fit rows only (normalisation is per symbol in a pooled fold) and applied unchanged to its
validation and test rows. A pooled fold concatenates its members' windows in universe order
(``features.symbol_input = "onehot"`` appends one 0/1 channel per universe symbol) and trains one
forecaster, whose test forecasts are decoded with each member's own transform; a per-symbol fold is
the pooled fold of one member.

:func:`run_unit` is the unit protocol (units: :mod:`backtest.folds.units`); :func:`worker_unit` is how
every worker -- a spawned process, a Ray worker, or this process -- calls it: TensorFlow and BLAS on one
thread, so a fold's result does not depend on the executor, the worker or the other units.
"""
from __future__ import annotations

import contextlib
import json
import pickle
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.features import FoldTransform, feature_matrix, target_returns
from backtest.folds.plan import FoldTask, Member, symbol_safe
from backtest.folds.units import Unit, model_params, needs_tensorflow
from backtest.quiet import import_tensorflow


@dataclass
class FoldOutput:
    """A computed fold as data, before anything is written: ``forecasts`` (timestamp, symbol, fold,
    y_pred_h1..hK: predicted log returns r̂[t+1..t+K] of decision bar t), ``history`` (epoch, loss,
    val_loss) and ``files``: the fold folder's files (:mod:`backtest.folds.store`) as relative path -> bytes.
    """

    folder: str
    task_key: tuple[str, int, int]
    forecasts: pd.DataFrame
    history: pd.DataFrame
    files: dict[str, bytes]
    seconds: float
    train_rows: int


@dataclass
class PreparedMember:
    """One member's inputs, fit on its own training rows: windows ``(n, lookback, F)`` (float32) and targets
    ``(n, horizon)`` in the model's space (raw log returns for return-space baselines, else encoded)."""

    member: Member
    transform: FoldTransform
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray
    test_rows: np.ndarray
    index: pd.DatetimeIndex  # the member's bar times [0, test_stop)
    close: np.ndarray


@dataclass
class PreparedFold:
    """A fold ready to train: its members, their fit/validation windows together, and a fresh seeded model."""

    task: FoldTask
    members: list[PreparedMember]
    model: Any
    X_fit: np.ndarray
    y_fit: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    started: float


def fold_seed(seed: int, k: int) -> int:
    """The seed a fold trains with: a function of the run seed and the fold only (not of execution order)."""
    return (seed * 1_000_003 + k) % (2**31 - 1)


def with_symbol_channels(X: np.ndarray, index: int, n_symbols: int) -> np.ndarray:
    """``X`` ``(n, lookback, F)`` with ``n_symbols`` one-hot channels appended (channel ``index`` = 1)."""
    hot = np.zeros((X.shape[0], X.shape[1], n_symbols), dtype=X.dtype)
    hot[:, :, index] = 1.0
    return np.concatenate([X, hot], axis=2)


def _prepare_member(task: FoldTask, m: Member, bars: pd.DataFrame, raw_space: bool) -> PreparedMember:
    f, fc = m.spec, task.features
    bars = bars.iloc[: f.test_stop]  # the fold is given no bar after its test block
    feats_df = feature_matrix(bars, fc.inputs)
    feats = feats_df.to_numpy()
    close = bars["close"].to_numpy()
    y_all = target_returns(close, fc.horizon)  # rows >= test_start are NaN or unused: bars stop at test_stop
    fit_rows, val_rows = np.arange(f.train_start, f.train_stop), np.arange(f.val_start, f.val_stop)
    test_rows = np.arange(f.test_start, f.test_stop)
    tr = FoldTransform.fit(fc, feats, close, fit_rows, y_all[fit_rows], list(feats_df.columns))

    def y_for(rows: np.ndarray) -> np.ndarray:
        return y_all[rows] if raw_space else tr.encode_y(y_all[rows], close, rows)

    def X_for(rows: np.ndarray) -> np.ndarray:
        X = tr.transform_X(feats, rows)
        if task.pooled and fc.symbol_input == "onehot":
            X = with_symbol_channels(X, task.universe.index(m.symbol), len(task.universe))
        return X

    has_val = len(val_rows) > 0
    return PreparedMember(m, tr, X_for(fit_rows), y_for(fit_rows), X_for(val_rows) if has_val else None,
                          y_for(val_rows) if has_val else None, X_for(test_rows), test_rows, bars.index, close)


def prepare(task: FoldTask, bars: dict[str, pd.DataFrame]) -> PreparedFold:
    """Features, each member's fitted transform, windows and targets, and a fresh model seeded for this fold."""
    t0 = time.perf_counter()
    from models import make_forecaster

    model = make_forecaster(task.model_cfg.type, **model_params(task.model_cfg, task.features,
                                                                fold_seed(task.seed, task.k)))
    raw = model.target_space == "return"
    members = [_prepare_member(task, m, bars[m.symbol], raw) for m in task.members]
    vals = [p for p in members if p.X_val is not None and len(p.X_val)]

    def cat(arrays: list[Any]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    return PreparedFold(task, members, model, X_fit=cat([p.X_fit for p in members]),
                        y_fit=cat([p.y_fit for p in members]), X_val=cat([p.X_val for p in vals]) if vals else None,
                        y_val=cat([p.y_val for p in vals]) if vals else None, started=t0)


def _configure_backend(deterministic: bool) -> None:
    """Deterministic TensorFlow ops when TF is the Keras backend (no effect on JAX/PyTorch)."""
    if not deterministic:
        return
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def train_alone(prep: PreparedFold, cache: dict | None = None, warm_weights: list[np.ndarray] | None = None) -> bytes | None:
    """Fit the fold's model on its own (Keras ``fit``, or a baseline's closed form); returns its CSV training
    log (networks). ``warm_weights``: start from these (a warm-started fold: ``task.warm_epochs`` epochs)."""
    model, task = prep.model, prep.task
    opts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=".fold-log-") as tmp:
        log = Path(tmp) / "training_log.csv"
        if hasattr(model, "build"):
            _configure_backend(task.deterministic)
            opts.update(log_csv=log, trainer_cache=cache)
            if warm_weights is not None:
                opts.update(initial_weights=warm_weights, epochs=task.warm_epochs)
        model.fit(prep.X_fit, prep.y_fit, prep.X_val, prep.y_val, **opts)
        return log.read_bytes() if log.exists() else None


def train_group(preps: list[PreparedFold], cache: dict | None = None) -> list[FoldOutput]:
    """Train prepared cold-start folds of one architecture as one vectorised computation
    (:func:`models.grouped.fit_group`: each fold keeps its own rows, seed and ``train_settings()``); returns
    each fold's output (:func:`finish`), its saved model the single Keras model with its slice of the group
    weights. ``cache`` is a speed-up only (compiled group trainers reused across calls in one process).
    """
    from models.grouped import Member as GroupMember
    from models.grouped import fit_group

    _configure_backend(preps[0].task.deterministic)
    T, F = preps[0].X_fit.shape[1:]
    specs = preps[0].model.group_architecture(preps[0].y_fit.shape[1])
    f32 = lambda a: None if a is None else np.asarray(a, dtype="float32")  # noqa: E731
    members = [GroupMember(f32(p.X_fit), f32(p.y_fit).reshape(len(p.y_fit), -1), f32(p.X_val),
                           None if p.y_val is None else f32(p.y_val).reshape(len(p.y_val), -1), seed=p.model.seed,
                           settings=p.model.train_settings())
               for p in preps]
    fits = fit_group(specs, members, cache=cache, slots=min(p.task.group_slots for p in preps))
    templates: dict = {}
    outs = []
    for p, fit in zip(preps, fits, strict=True):
        p.model.horizon = p.y_fit.shape[1] if p.y_fit.ndim > 1 else 1
        p.model.adopt(fit.weights, fit.history, T, F, templates)  # the fold's weights in a shared Keras template:
        log = pd.DataFrame(fit.history)[["epoch", "loss"] + (["val_loss"] if p.X_val is not None else [])]
        outs.append(finish(p, log.to_csv(index=False).encode()))  # predicted and saved before the next adopts it
        p.model.model_ = None
    return outs


def finish(prep: PreparedFold, log_csv: bytes | None) -> FoldOutput:
    """Predict every member's test rows with the fitted model and collect the fold folder's files as bytes."""
    task, model, fc = prep.task, prep.model, prep.task.features
    parts = []
    files: dict[str, bytes] = {}
    for p in prep.members:
        z = model.predict(p.X_test)
        y_pred = z if model.target_space == "return" else p.transform.decode_y(z, p.close, p.test_rows)
        fc_df = pd.DataFrame({"timestamp": p.index[p.test_rows], "symbol": p.member.symbol, "fold": task.k})
        for h in range(fc.horizon):
            fc_df[f"y_pred_h{h + 1}"] = y_pred[:, h]
        parts.append(fc_df)
        name = f"transforms/{symbol_safe(p.member.symbol)}.pkl" if task.pooled else "transform.pkl"
        files[name] = pickle.dumps(p.transform)  # to forecast the next bar later (predict, paper trading)
    forecasts = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    history = pd.DataFrame(model.history_, columns=["epoch", "loss", "val_loss"])
    with tempfile.TemporaryDirectory(prefix=".fold-") as tmp:
        model.save(Path(tmp) / "model")
        files.update({path.relative_to(tmp).as_posix(): path.read_bytes()
                      for path in sorted((Path(tmp) / "model").rglob("*")) if path.is_file()})
    files["history.csv"] = history.to_csv(index=False).encode()
    files["forecasts.csv"] = (forecasts if task.pooled else forecasts.drop(columns="symbol")).to_csv(index=False).encode()
    if task.pooled:
        members = {p.member.symbol: _member_rows(p) for p in prep.members}
        files["members.json"] = json.dumps(members, indent=2).encode()
    if log_csv is not None:
        files["training_log.csv"] = log_csv
    return FoldOutput(task.folder, task.key, forecasts, history, files, time.perf_counter() - prep.started,
                      len(prep.X_fit))


def _member_rows(p: PreparedMember) -> dict[str, Any]:
    """A member's fit/validation/test rows as ``[first, last]`` bar times (inclusive), ISO UTC; null when empty."""
    f, idx = p.member.spec, p.index

    def span(a: int, b: int) -> list[str] | None:
        return [idx[a].isoformat(), idx[b - 1].isoformat()] if b > a else None

    return {"fit": span(f.train_start, f.train_stop), "validation": span(f.val_start, f.val_stop),
            "test": span(f.test_start, f.test_stop), "fit_rows": f.train_stop - f.train_start}


def run_unit(unit: Unit, bars: dict[str, pd.DataFrame], cache: dict | None = None) -> list[FoldOutput]:
    """Compute every fold of ``unit``; one output per task, in the unit's order. A ``group`` unit trains its
    folds as one computation (:func:`train_group`), a ``chain`` unit one by one in order, each warm-started
    fold from the weights of the fold before it (held in memory; the first from ``Unit.warm_weights``).
    BLAS (numpy/scikit-learn) runs on one thread, so a fold gives the same floats in every executor."""
    from threadpoolctl import threadpool_limits

    cache = {} if cache is None else cache
    with threadpool_limits(limits=1):
        if unit.kind == "group":
            return train_group([prepare(t, bars) for t in unit.tasks], cache)
        outs, weights = [], unit.warm_weights
        for t in unit.tasks:
            prep = prepare(t, bars)
            log = train_alone(prep, cache, weights if t.warm else None)
            outs.append(finish(prep, log))
            weights = prep.model.get_weights() if hasattr(prep.model, "get_weights") else None
        return outs


def ensure_tensorflow() -> None:
    """TensorFlow imported quietly, with one intra-op and one inter-op thread (set before its runtime starts;
    a process whose TensorFlow runtime already started -- a notebook that trained before -- keeps its own)."""
    import_tensorflow()
    try:
        import tensorflow as tf
    except ImportError:  # another Keras backend (JAX, PyTorch)
        return
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)


#: Compiled trainers of a worker process, kept across the units it is given (a speed-up only: each trainer is
#: reset to its members' initial weights and zeroed optimizer slots before use, so results do not depend on it).
WORKER_CACHE: dict = {}


def worker_unit(unit: Unit, bars: dict[str, pd.DataFrame], cache: dict = WORKER_CACHE) -> list[FoldOutput]:
    """One unit computed in a worker (TensorFlow is set up on the first network unit)."""
    if needs_tensorflow(unit.tasks):
        ensure_tensorflow()
    return run_unit(unit, bars, cache)


__all__ = ["WORKER_CACHE", "FoldOutput", "PreparedFold", "PreparedMember", "ensure_tensorflow", "finish", "fold_seed",
           "prepare", "run_unit", "train_alone", "train_group", "with_symbol_channels", "worker_unit"]
