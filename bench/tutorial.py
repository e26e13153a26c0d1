"""Arm (a) of the benchmark: the walk-forward loop as a tutorial writes it. Nothing from the project is
imported (only the bundled CSV is read): a new ``keras.Sequential`` per fold, ``fit``, ``predict``.

Folds as the engine plans them: decision row t (bar t's close known) sees the last 30 log returns
``ln(close[t-29..t] / close[t-30..t-1])`` and targets r[t+1]; test blocks of 30 rows from row 760; a fold
testing from row T trains on rows 30 .. T-2 (every target known before T); the last row is n-2.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CSV = Path(__file__).resolve().parent.parent / "backtest" / "data" / "bundled" / "BTC_USDT_1d.csv"
LOOKBACK, INITIAL, STEP, EPOCHS, BATCH = 30, 760, 30, 20, 32


def walk_forward(max_folds: int | None = None) -> tuple[np.ndarray, np.ndarray, list[int], str]:
    """Realised r[t+1], forecasts, training rows per fold, and the first test bar's timestamp."""
    import keras

    df = pd.read_csv(CSV)
    close = df["close"].to_numpy(dtype="float64")
    r = np.full(len(close), np.nan)
    r[1:] = np.log(close[1:] / close[:-1])
    target = np.append(r[1:], np.nan)  # target[t] = r[t+1]
    X = np.stack([r[t - LOOKBACK + 1:t + 1] for t in range(LOOKBACK, len(r))])[..., None].astype("float32")
    rows = np.arange(LOOKBACK, len(r))  # X[i] is decision row rows[i]
    last = len(close) - 2
    ys, preds, n_train, T, k = [], [], [], INITIAL, 0
    while T <= last and (max_folds is None or k < max_folds):
        stop = min(T + STEP, last + 1)
        tr = (rows >= LOOKBACK) & (rows <= T - 2)
        te = (rows >= T) & (rows < stop)
        keras.utils.set_random_seed(k)
        model = keras.Sequential([keras.Input((LOOKBACK, 1)), keras.layers.LSTM(64), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        model.fit(X[tr], target[rows[tr]].astype("float32"), epochs=EPOCHS, batch_size=BATCH, verbose=0)
        preds.append(model.predict(X[te], verbose=0)[:, 0])
        ys.append(target[rows[te]])
        n_train.append(int(tr.sum()))
        T, k = stop, k + 1
    return np.concatenate(ys), np.concatenate(preds).astype("float64"), n_train, str(df.iloc[INITIAL, 0])
