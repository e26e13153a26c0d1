"""Tiny universes for the universe tests.

``bundled_universe`` = real bundled Binance daily candles of BTC/USDT, ETH/USDT and SOL/USDT from
2020-05-01 to 2021-02-01 (exclusive): 276 bars for BTC and ETH; SOL is listed on Binance on
2020-08-11, so it has 174 bars and enters a walk-forward with ``initial_train = 120`` on 2020-12-09,
about 100 bars after the other two.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from backtest.config import Config, DataConfig, parse_config
from backtest.data.universe import UniverseData, load_universe, universe_sha256
from backtest.data.load import frame_sha256

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
START, END = "2020-05-01", "2021-02-01"
TINY_NET = {"units": 4, "epochs": 2, "patience": 1, "batch_size": 64}


def bundled_universe() -> UniverseData:
    return load_universe(DataConfig(source="bundled", symbols=SYMBOLS, start=START, end=END))


def universe_cfg(models: dict[str, Any] | None = None, name: str = "u", **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        "data": {"source": "bundled", "symbols": SYMBOLS, "start": START, "end": END},
        "features": {"lookback": 8},
        "walkforward": {"initial_train": 120, "step": 40, "val_fraction": 0.1},
        "models": models or {"lin": {"type": "linear"}}, "strategies": {}, "run": {"name": name},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return parse_config(raw)


def with_bars(data: UniverseData, symbol: str, bars: pd.DataFrame) -> UniverseData:
    """``data`` with one symbol's bars replaced (hashes recomputed)."""
    new = dict(data.bars)
    new[symbol] = bars
    shas = {s: frame_sha256(b) for s, b in new.items()}
    return UniverseData(new, data.timeframe, data.reports, universe_sha256(shas), data.sources, shas)


def garbage_after(bars: pd.DataFrame, k: int, seed: int = 1) -> pd.DataFrame:
    """Bars after position ``k`` replaced by random valid-looking prices (same index)."""
    rng = np.random.default_rng(seed)
    out = bars.copy()
    n = len(bars) - k - 1
    close = np.exp(rng.uniform(2, 12, n))
    opn = close * rng.uniform(0.5, 1.5, n)
    out.iloc[k + 1:, out.columns.get_loc("close")] = close
    out.iloc[k + 1:, out.columns.get_loc("open")] = opn
    out.iloc[k + 1:, out.columns.get_loc("high")] = np.maximum(close, opn) * 1.1
    out.iloc[k + 1:, out.columns.get_loc("low")] = np.minimum(close, opn) * 0.9
    out.iloc[k + 1:, out.columns.get_loc("volume")] = rng.uniform(1, 1e6, n)
    return out
