"""The fold store: fold folders written, read back and resumed for every executor, and the one reader of a
saved fold (:func:`read_saved_fold`) that ``predict``, paper trading and warm starts use.

A fold folder (``runs/<name>/folds/[<SYMBOL>/]<model>/<k>/seed-<s>/``, docs/design.md) holds
``forecasts.csv`` (timestamp, [symbol,] fold, y_pred_h1..hK: predicted log returns r̂[t+1..t+K] of
decision bar t), ``history.csv`` (epoch, loss, val_loss), ``training_log.csv`` (networks), the model
(``model/``) and its fitted input/target transform (``transform.pkl``; a pooled fold: one per symbol in
``transforms/<SYMBOL>.pkl`` and the members' rows in ``members.json``). Only the driver writes, each fold
atomically (a temporary folder renamed into place), so a folder with ``forecasts.csv`` is complete and a
re-run computes only the folds that are missing (resume).
"""
from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.errors import RunDirError
from backtest.folds.plan import FoldTask, symbol_safe


@dataclass
class FoldResult:
    """A fold as the run sees it: forecasts (timestamp, symbol, fold, y_pred_h1..hK), the training history,
    seconds spent (0 when read back), whether it was read back (resume), best validation loss, fit rows."""

    task_key: tuple[str, int, int]
    forecasts: pd.DataFrame
    history: pd.DataFrame
    seconds: float
    skipped: bool = False
    best_val_loss: float = float("nan")
    train_rows: int = 0


def _best(history: pd.DataFrame) -> float:
    return float(history["val_loss"].min()) if len(history) else float("nan")


class FoldStore:
    """Fold folders under one run directory (``folder`` paths of :class:`FoldTask` are relative to it)."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)

    def path(self, task: FoldTask) -> Path:
        return self.run_dir / task.folder

    def is_complete(self, task: FoldTask) -> bool:
        """A fold folder with ``forecasts.csv`` was written completely (folders are renamed into place)."""
        return (self.path(task) / "forecasts.csv").exists()

    def write(self, out: Any) -> FoldResult:
        """Write a computed fold (:class:`~backtest.folds.compute.FoldOutput`) atomically; return its result."""
        target = self.run_dir / out.folder
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            for rel, data in out.files.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)
            if target.exists():  # a crashed earlier attempt left an incomplete folder
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FoldResult(out.task_key, out.forecasts, out.history, out.seconds, False, _best(out.history),
                          out.train_rows)

    def read(self, task: FoldTask) -> FoldResult:
        """A complete fold read back (resume): forecasts with a ``symbol`` column, history."""
        d = self.path(task)
        forecasts = pd.read_csv(d / "forecasts.csv")
        forecasts["timestamp"] = pd.to_datetime(forecasts["timestamp"], utc=True)
        if "symbol" not in forecasts.columns:
            forecasts.insert(1, "symbol", task.symbol)
        history = pd.read_csv(d / "history.csv")
        return FoldResult(task.key, forecasts, history, 0.0, True, _best(history), task.train_rows)

    def weights(self, folder: str) -> list[np.ndarray]:
        """The model weights of a stored fold folder (relative to the run directory): where a resumed
        warm-start chain starts from."""
        return read_saved_fold(self.run_dir / folder).model.get_weights()


@dataclass
class SavedFold:
    """A fold folder read back: its fitted model, each symbol's fitted transform, and when it trained.

    ``test_start`` / ``test_end``: the first and last decision bar of its test block (open times, UTC) of
    ``symbol`` (a per-symbol fold has one). The model trained on rows ``t <= T - 1 - horizon`` of
    ``T = test_start``: every bar it saw lies before ``test_start``.
    """

    folder: Path
    model: Any  # models.base.Forecaster
    transforms: dict[str, Any]  # symbol -> backtest.features.FoldTransform; key "" for a per-symbol fold
    fold: int
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    def transform(self, symbol: str | None = None) -> Any:
        """The input/target transform of ``symbol`` (a per-symbol fold has only one)."""
        if "" in self.transforms:
            return self.transforms[""]
        key = symbol_safe(symbol or "")
        if key not in self.transforms:
            raise RunDirError(f"{self.folder}: no transform for {symbol!r} (pooled over {', '.join(self.transforms)})")
        return self.transforms[key]

    def forecast(self, feats: np.ndarray, close: np.ndarray, row: int, symbol: str | None = None) -> np.ndarray:
        """Predicted log returns ``r̂[t+1..t+K]`` of decision row ``row`` (bars ``<= row`` only)."""
        tr = self.transform(symbol)
        rows = np.array([row])
        z = self.model.predict(tr.transform_X(feats, rows))
        return np.asarray(z if self.model.target_space == "return" else tr.decode_y(z, close, rows), dtype=float)[0]


def fold_test_span(folder: str | os.PathLike[str], symbol: str | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last decision bar of a complete fold's test block (of ``symbol`` in a pooled fold), read
    from its ``forecasts.csv`` alone (cheap: no model is loaded)."""
    d = Path(folder)
    try:
        fc = pd.read_csv(d / "forecasts.csv", usecols=lambda c: c in ("timestamp", "symbol", "fold"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{d}: not a complete fold folder ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if symbol is not None and "symbol" in fc.columns:
        fc = fc[fc["symbol"] == symbol]
    if fc.empty:
        raise RunDirError(f"{d}: no forecasts{f' for {symbol}' if symbol else ''}")
    times = pd.to_datetime(fc["timestamp"], utc=True)
    return times.min(), times.max()


def read_saved_fold(folder: str | os.PathLike[str], symbol: str | None = None) -> SavedFold:
    """Read a complete fold folder (any executor wrote it; predict, paper trading and warm starts read it
    here). ``symbol``: for a pooled fold, whose test block ``test_start``/``test_end`` describe. A folder
    that is incomplete or unreadable is one :class:`RunDirError` line."""
    from models.base import Forecaster

    d = Path(folder)
    try:
        model = Forecaster.load(d / "model")
        if (d / "transform.pkl").exists():
            transforms = {"": pickle.loads((d / "transform.pkl").read_bytes())}
        else:
            transforms = {p.stem: pickle.loads(p.read_bytes()) for p in sorted((d / "transforms").glob("*.pkl"))}
    except (OSError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as exc:
        raise RunDirError(f"{d}: not a complete fold folder ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    start, end = fold_test_span(d, symbol)
    k = int(pd.read_csv(d / "forecasts.csv", usecols=["fold"], nrows=1)["fold"].iloc[0])
    return SavedFold(d, model, transforms, k, start, end)


__all__ = ["FoldResult", "FoldStore", "SavedFold", "fold_test_span", "read_saved_fold"]
