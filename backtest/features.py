"""Features and targets, with every fitted transform fit on a fold's training rows only.

Time alignment (docs/design.md, "Time alignment"):

* ``feature_matrix`` row ``t`` uses bars ``<= t`` only (causal indicators);
* ``target_returns`` row ``t`` holds ``r[t+1..t+K]``, ``r[t+1] = ln(close[t+1] / close[t])``,
  NaN where not yet known;
* the input window of decision row ``t`` is feature rows ``t-lookback+1 .. t``.

Normalisation (``features.normalize``):

* ``window``: level inputs (open, high, low, close, volume) become ``p / p[0] - 1``
  within each window (safe: uses only the window itself); other inputs are
  standardised with mean/std of the training bars;
* ``minmax`` / ``standard``: scikit-learn ``MinMaxScaler`` / ``StandardScaler`` fit on
  the bars of the fold's training windows only, then applied unchanged to
  validation and test windows;
* ``none``: raw values.

Never fit on the whole series: that leaks the future range into the past.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from backtest.config import LEVEL_INPUTS, FeaturesConfig
from backtest.errors import DataError


def feature_matrix(bars: pd.DataFrame, inputs: list[str]) -> pd.DataFrame:
    """Per-bar inputs, causal: row ``t`` depends on bars ``<= t`` only (NaN during warm-up).

    ``log_return`` = ln(close[t]/close[t-1]); ``rsi`` = 14-bar Wilder RSI (0..100);
    ``macd`` = (EMA12 - EMA26) / close; ``macd_signal`` = 9-bar EMA of ``macd``;
    ``volatility`` = 20-bar std of log returns.
    """
    close = bars["close"]
    out = pd.DataFrame(index=bars.index)
    for name in inputs:
        if name in LEVEL_INPUTS:
            out[name] = bars[name]
        elif name == "log_return":
            out[name] = np.log(close).diff()
        elif name == "volatility":
            out[name] = np.log(close).diff().rolling(20).std()
        elif name == "rsi":
            delta = close.diff()
            gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
            loss = (-delta.clip(upper=0)).ewm(alpha=1 / 14, adjust=False, min_periods=14).mean()
            rs = gain / loss.replace(0.0, np.nan)
            out[name] = (100 - 100 / (1 + rs)).fillna(100.0).where(gain.notna())
        elif name in ("macd", "macd_signal"):
            macd = (close.ewm(span=12, adjust=False, min_periods=26).mean()
                    - close.ewm(span=26, adjust=False, min_periods=26).mean()) / close
            out[name] = macd if name == "macd" else macd.ewm(span=9, adjust=False, min_periods=9).mean()
        else:  # guarded by config validation
            raise ValueError(f"unknown input {name!r}")
    return out.astype("float64")


def target_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """Array ``(n_bars, horizon)``: column ``k-1`` of row ``t`` is ``r[t+k] = ln(close[t+k]/close[t+k-1])``; NaN past the end."""
    logc = np.log(np.asarray(close, dtype="float64"))
    r = np.full(len(logc), np.nan)
    r[:-1] = np.diff(logc)  # r[t] here means the return realised over bar t+1, stored at row t
    out = np.full((len(logc), horizon), np.nan)
    for k in range(horizon):
        out[: len(logc) - k, k] = r[k:]
    return out


def first_valid_row(features: pd.DataFrame, lookback: int) -> int:
    """The first decision row whose whole input window has defined features."""
    valid = features.notna().all(axis=1).to_numpy()
    if not valid.any():
        return len(valid)
    first = int(np.argmax(valid))
    if not valid[first:].all():
        bad = first + int(np.argmin(valid[first:]))
        raise DataError(f"input features are undefined at {features.index[bad].isoformat()}, after their warm-up")
    return first + lookback - 1


def windows(values: np.ndarray, rows: np.ndarray, lookback: int) -> np.ndarray:
    """Stack windows ``values[t-lookback+1 : t+1]`` for each decision row ``t`` -> ``(n, lookback, F)``."""
    if len(rows) == 0:
        return np.zeros((0, lookback, values.shape[1]), dtype="float32")
    idx = rows[:, None] + np.arange(-lookback + 1, 1)[None, :]
    return values[idx].astype("float32")


@dataclass
class FoldTransform:
    """Input and target transforms of one fold, fit on its training rows only.

    ``encode_y``/``decode_y`` map between log returns ``r[t+1..t+K]`` and the
    model's target space; decoding always yields predicted log returns, so
    every forecaster is compared in the same units.
    """

    cfg: FeaturesConfig
    columns: list[str]
    scaler: MinMaxScaler | StandardScaler | None = None
    other_scaler: StandardScaler | None = None
    y_scale: float = 1.0
    close_scaler: MinMaxScaler | StandardScaler | None = None

    @classmethod
    def fit(cls, cfg: FeaturesConfig, feats: np.ndarray, close: np.ndarray, train_rows: np.ndarray,
            y_train: np.ndarray, columns: list[str]) -> "FoldTransform":
        """Fit on the bars that the training windows cover (and the training targets) only."""
        lo, hi = int(train_rows.min()) - cfg.lookback + 1, int(train_rows.max()) + 1
        seen = feats[lo:hi]
        t = cls(cfg=cfg, columns=columns)
        if cfg.normalize in ("minmax", "standard"):
            make = MinMaxScaler if cfg.normalize == "minmax" else StandardScaler
            t.scaler = make().fit(seen)
            if cfg.target == "close":
                t.close_scaler = make().fit(close[lo:hi].reshape(-1, 1))
        elif cfg.normalize == "window":
            other = [i for i, c in enumerate(columns) if c not in LEVEL_INPUTS]
            if other:
                t.other_scaler = StandardScaler().fit(seen[:, other])
        if cfg.target == "return" and cfg.scale_target:
            s = float(np.nanstd(y_train))
            t.y_scale = s if s > 0 else 1.0
        return t

    def transform_X(self, feats: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Model inputs ``(n, lookback, F)`` for decision rows ``rows``."""
        X = windows(feats, rows, self.cfg.lookback).astype("float64")
        if self.scaler is not None:
            n, L, F = X.shape
            X = self.scaler.transform(X.reshape(-1, F)).reshape(n, L, F)
        elif self.cfg.normalize == "window":
            lvl = [i for i, c in enumerate(self.columns) if c in LEVEL_INPUTS]
            if lvl:
                first = X[:, :1, lvl]
                X[:, :, lvl] = X[:, :, lvl] / np.where(first == 0, np.nan, first) - 1.0
                X[:, :, lvl] = np.nan_to_num(X[:, :, lvl], nan=0.0, posinf=0.0, neginf=0.0)
            if self.other_scaler is not None:
                other = [i for i, c in enumerate(self.columns) if c not in LEVEL_INPUTS]
                n, L, _ = X.shape
                X[:, :, other] = self.other_scaler.transform(X[:, :, other].reshape(-1, len(other))).reshape(n, L, len(other))
        return X.astype("float32")

    def _anchor(self, close: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return close[rows - self.cfg.lookback + 1] if self.cfg.normalize == "window" else close[rows]

    def encode_y(self, y_returns: np.ndarray, close: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Targets in the model's space: scaled returns, or (``target = "close"``) the encoded close levels."""
        if self.cfg.target == "return":
            return y_returns / self.y_scale
        levels = close[rows][:, None] * np.exp(np.cumsum(y_returns, axis=1))
        return self._encode_levels(levels, close, rows)

    def _encode_levels(self, levels: np.ndarray, close: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.close_scaler is not None:
            return self.close_scaler.transform(levels.reshape(-1, 1)).reshape(levels.shape)
        if self.cfg.normalize == "none":
            return levels
        return levels / self._anchor(close, rows)[:, None] - 1.0

    def decode_y(self, z: np.ndarray, close: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Predicted log returns ``r̂[t+1..t+K]`` from model outputs ``z`` of decision rows ``rows``."""
        if self.cfg.target == "return":
            return z * self.y_scale
        if self.close_scaler is not None:
            levels = self.close_scaler.inverse_transform(z.reshape(-1, 1)).reshape(z.shape)
        elif self.cfg.normalize == "none":
            levels = z
        else:
            levels = (z + 1.0) * self._anchor(close, rows)[:, None]
        base = close[rows][:, None]
        levels = np.maximum(levels, base * 1e-6)  # a non-positive price forecast is clipped to -13.8 log return
        prev = np.concatenate([base, levels[:, :-1]], axis=1)
        return np.log(levels / prev)
