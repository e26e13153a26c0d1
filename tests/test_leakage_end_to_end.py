"""The leakage guard end to end: forecasts -> signals (every strategy type) -> vectorbt simulation.

Data: the bundled daily BTC/USDT bars 0..284 (2017-08-17 .. 2018-05-28), two folds with test
blocks [200, 240) and [240, 283); bars after k = 260 are replaced by garbage. Nothing decided at or
before bar k, and no equity value at or before k's close, may change.
"""
from __future__ import annotations

import pandas as pd

from backtest.config import parse_config

from backtest.simulate import simulate
from strategies.build import build_signals
from backtest.run import run_forecasts
from tests.test_walkforward import as_data, garbage_after

STRATEGIES = {
    "lf": {"type": "long_flat", "threshold": 0.0},
    "hyst": {"type": "long_flat", "entry_threshold": 0.002, "exit_threshold": -0.002},
    "ens_mean": {"type": "ensemble", "method": "mean", "threshold": 0.0},
    "ens_vote": {"type": "ensemble", "method": "vote", "threshold": 0.0, "models": ["lin", "lin2"]},
    "sma": {"type": "sma_cross", "fast": 5, "slow": 20},
    "buy_and_hold": {"type": "buy_and_hold"},
    "always_flat": {"type": "always_flat"},
}


def _chain(cfg, bars: pd.DataFrame, tmp_path, tag: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    preds = run_forecasts(cfg, tmp_path / tag, data=as_data(bars)).predictions
    signals, _ = build_signals(cfg, preds, bars)
    sim = simulate(signals, bars, cfg.backtest, "1d")
    return signals, sim.equity


def test_no_signal_or_equity_before_k_depends_on_later_bars(btc: pd.DataFrame, tmp_path) -> None:
    bars = btc.iloc[:285]
    k = 260
    cfg = parse_config({"walkforward": {"initial_train": 200, "step": 40, "val_fraction": 0.1},
                        "features": {"lookback": 8, "inputs": ["close", "volume", "rsi"]},
                        "models": {"lin": {"type": "linear"}, "lin2": {"type": "linear", "alpha": 100.0}},
                        "strategies": STRATEGIES, "run": {"name": "t"}})
    sig_a, eq_a = _chain(cfg, bars, tmp_path, "real")
    sig_b, eq_b = _chain(cfg, garbage_after(bars, k), tmp_path, "garbage")
    cut = bars.index[k]
    assert set(sig_a.columns) >= {"lin/lf", "lin/hyst", "ens_mean", "ens_vote", "sma", "buy_and_hold", "always_flat"}
    assert sig_a.loc[:cut].any().sum() >= 4  # the strategies do trade before k: the comparison is not of empties
    pd.testing.assert_frame_equal(sig_a.loc[:cut], sig_b.loc[:cut])
    pd.testing.assert_frame_equal(eq_a.loc[:cut], eq_b.loc[:cut])
    # and the garbage does reach what comes after k (the test would see a leak)
    assert not eq_a.loc[cut:].iloc[2:].equals(eq_b.loc[cut:].iloc[2:])
