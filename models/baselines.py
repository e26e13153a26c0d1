"""Baseline forecasters every model must beat: persistence, mean return, ridge.

``persistence`` and ``mean`` are defined in return space (``target_space =
"return"``): they receive the raw next-bar log returns ``r[t+1..t+K]``.
``linear`` is a learner on the same windows as the networks (scikit-learn
``Ridge`` on the flattened window).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge

from models.base import Forecaster
from models.params import LinearParams


class Persistence(Forecaster):
    """"No change": predicts a log return of 0 for every future bar (close[t+k] = close[t])."""

    type_name = "persistence"
    target_space = "return"

    def _fit(self, X: np.ndarray, y: np.ndarray, X_val: Any, y_val: Any, **opts: Any) -> None:
        self.horizon = y.shape[1]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.zeros((len(X), self.horizon))

    def _save(self, folder: Path) -> None:
        (folder / "horizon.txt").write_text(str(self.horizon))

    def _load(self, folder: Path) -> None:
        self.horizon = int((folder / "horizon.txt").read_text())


class MeanReturn(Forecaster):
    """Predicts the mean log return of the fold's training rows (per horizon step), i.e. the drift."""

    type_name = "mean"
    target_space = "return"

    def _fit(self, X: np.ndarray, y: np.ndarray, X_val: Any, y_val: Any, **opts: Any) -> None:
        self.mean_ = y.astype("float64").mean(axis=0)
        self.horizon = y.shape[1]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.tile(self.mean_, (len(X), 1))

    def _save(self, folder: Path) -> None:
        np.save(folder / "mean.npy", self.mean_)

    def _load(self, folder: Path) -> None:
        self.mean_ = np.load(folder / "mean.npy")
        self.horizon = len(self.mean_)


class Linear(Forecaster):
    """Ridge regression (scikit-learn) of the encoded targets on the flattened input window."""

    type_name = "linear"
    param_names = LinearParams.parameter_names()

    def _fit(self, X: np.ndarray, y: np.ndarray, X_val: Any, y_val: Any, **opts: Any) -> None:
        self.model_ = Ridge(alpha=float(self.hparams.alpha)).fit(X.reshape(len(X), -1), y)
        self.horizon = y.shape[1]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X.reshape(len(X), -1))

    def _save(self, folder: Path) -> None:
        (folder / "ridge.pkl").write_bytes(pickle.dumps(self.model_))

    def _load(self, folder: Path) -> None:
        self.model_ = pickle.loads((folder / "ridge.pkl").read_bytes())
        self.horizon = self.model_.coef_.reshape(-1, self.model_.n_features_in_).shape[0]
