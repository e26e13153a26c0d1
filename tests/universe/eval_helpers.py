"""Universe fixtures built from the real daily slices in ``tests/universe/data`` (see its README).

Forecasts are honest out-of-sample numbers in shape: a causal rule (``momentum``:
r̂[t+1] = the last log return r[t], known at the close of bar t) and the persistence
baseline (r̂ = 0); nothing is fitted on the test bars.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backtest.config import DataConfig
from backtest.data.load import load_data

DATA = Path(__file__).parent / "data"
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def universe_bars(symbols: tuple[str, ...] = SYMBOLS) -> dict[str, pd.DataFrame]:
    """Validated daily bars per symbol (different start dates, one common end)."""
    out = {}
    for s in symbols:
        path = DATA / f"{s.replace('/', '_')}_1d.csv"
        out[s] = load_data(DataConfig(source="file", path=str(path), timeframe="1d")).bars
    return out


def universe_predictions(bars: dict[str, pd.DataFrame], initial_train: int = 120, seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """``predictions.csv`` rows for every symbol: test bars start after ``initial_train`` bars of each symbol.

    ``timestamp`` = bar t, ``y_true`` = r[t+1], ``close`` = close[t]; the last bar has no target and is not a
    decision bar. Models: ``persistence`` (r̂ = 0) and ``momentum`` (r̂[t+1] = r[t], scaled by 1 + seed/10 so
    seeds differ).
    """
    rows = []
    for sym, b in bars.items():
        close = b["close"].to_numpy()
        r = np.log(close[1:] / close[:-1])  # r[t+1] at position t
        last = np.concatenate([[np.nan], r])  # r[t] at position t
        idx = np.arange(initial_train, len(b) - 1)
        for seed in seeds:
            for model, pred in (("persistence", np.zeros(len(idx))), ("momentum", last[idx] * (1 + seed / 10))):
                rows.append(pd.DataFrame({
                    "timestamp": b.index[idx], "symbol": sym, "model": model, "seed": seed,
                    "fold": (idx - initial_train) // 30, "y_true": r[idx], "y_pred": pred,
                    "close": close[idx], "pred_close": close[idx] * np.exp(pred),
                }))
    return pd.concat(rows, ignore_index=True)
