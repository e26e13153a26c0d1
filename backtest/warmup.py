"""Compile vectorbt's numba kernels once per environment (``make install`` runs this).

vectorbt JIT-compiles its simulation and statistics kernels with ``numba`` on first use and caches the
machine code next to its own files (``cache=True``). Measured on the 2-core machine: a re-run of the
default config that only evaluates (every fold already done) took 55 s with an empty numba cache and 18 s
after this warm-up, which itself took 38 s. Running the same calls once on 60
synthetic bars at install time moves that cost out of every user's first run; results are unaffected
(the kernels are the same, only compiled earlier).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd


def compile_kernels() -> float:
    """Simulate two signal columns on synthetic daily bars and compute every statistic the reports use;
    returns the seconds it took."""
    from backtest.config import BacktestConfig
    from backtest.metrics import portfolio_stats
    from backtest.simulate import simulate, trades_table

    t0 = time.perf_counter()
    idx = pd.date_range("2020-01-01", periods=60, freq="D", tz="UTC")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.02, len(idx))))
    bars = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=idx)
    signals = pd.DataFrame({"a": np.arange(len(idx) - 1) % 3 == 0, "b": np.ones(len(idx) - 1, bool)}, index=idx[:-1])
    sim = simulate(signals, bars, BacktestConfig(), "1d")
    sim.portfolio.returns()  # type: ignore[attr-defined]
    for col in signals.columns:
        portfolio_stats(sim.portfolio, col, 365.0, sim.positions[col].iloc[1:])
    trades_table(sim)
    return time.perf_counter() - t0


if __name__ == "__main__":
    print(f"vectorbt kernels compiled ({compile_kernels():.0f} s, once per environment)")
