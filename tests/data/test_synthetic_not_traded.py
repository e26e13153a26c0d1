"""A bar filled by ``repair = "ffill"`` is never traded on as if real: a signal decided on it is not executed.

Data: 260 daily bars from 2021-01-01 written to a CSV with bar 230 missing (a gap inside the test period),
loaded with ``repair = "ffill"`` (1 synthetic bar of 260 = 0.4%, under the 1% cap).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from backtest.config import parse_config
from backtest.evaluate import evaluate
from backtest.run import run_forecasts
from strategies.signals import hold_on_synthetic

GAP = 230


def test_hold_on_synthetic_keeps_the_previous_signal() -> None:
    idx = pd.date_range("2021-01-01", periods=5, freq="1D", tz="UTC")
    sig = pd.DataFrame({"a": [False, False, True, True, False], "b": [True, True, False, True, True]}, index=idx)
    fake = pd.Series([False, False, True, False, True], index=idx)
    out = hold_on_synthetic(sig, fake)
    assert out["a"].tolist() == [False, False, False, True, True]
    assert out["b"].tolist() == [True, True, True, True, True]
    assert sig["a"].tolist() == [False, False, True, True, False]  # pure: input unchanged
    first = hold_on_synthetic(sig, pd.Series([True, False, False, False, False], index=idx))
    assert first["b"].tolist() == [False, True, False, True, True]  # a synthetic first bar stays flat
    assert hold_on_synthetic(sig, None) is sig


def test_signal_on_a_filled_bar_places_no_order(tmp_path) -> None:
    idx = pd.date_range("2021-01-01", periods=260, freq="1D", tz="UTC")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.02, len(idx))))
    df = pd.DataFrame({"timestamp": idx.strftime("%Y-%m-%d"), "open": close, "high": close * 1.01,
                       "low": close * 0.99, "close": close, "volume": 1.0}).drop(index=GAP)
    path = tmp_path / "gap.csv"
    df.to_csv(path, index=False)
    cfg = parse_config({
        "data": {"source": "file", "path": str(path), "repair": "ffill"},
        "features": {"lookback": 10, "inputs": ["close"]},
        "walkforward": {"initial_train": 200, "step": 30, "max_folds": 2},
        "models": {"lin": {"type": "linear"}},
        "strategies": {"lf": {"type": "long_flat", "threshold": 0.0}},
        "backtest": {"bootstrap_samples": 100},
        "run": {"name": "gap"},
    })
    fr = run_forecasts(cfg, tmp_path / "runs")
    t_fill = idx[GAP]
    syn = fr.data.synthetic[fr.data.symbols[0]]
    assert int(syn.sum()) == 1 and bool(syn[t_fill])
    meta = json.loads((fr.run_dir / "meta.json").read_text())
    assert meta["data"]["synthetic_bars"] == 1
    # A forecast that is long everywhere except on the filled bar, where it would flip to flat.
    preds = fr.predictions.copy()
    mine = preds["model"] == "lin"
    preds.loc[mine, "y_pred"] = np.where(preds.loc[mine, "timestamp"] == t_fill, -0.01, 0.01)
    label = "lin/lf"
    naive = evaluate(cfg, preds, fr.data.bars, fr.data.timeframe)  # without the mask: trades on the fake bar
    sym = fr.data.symbols[0]
    held = evaluate(cfg, preds, fr.data.bars, fr.data.timeframe, synthetic=fr.data.synthetic)
    exits = naive.trades[naive.trades["portfolio"] == label]["exit_time"]
    assert (pd.to_datetime(exits, utc=True) == idx[GAP + 1]).any()  # sold at the open after the filled bar
    assert not naive.signals[sym].loc[t_fill, label] and held.signals[sym].loc[t_fill, label]
    # the run block says so: one bar repaired, one decision held, no fill moved (no order was due on it)
    assert (held.metrics.run.synthetic_bars, held.metrics.run.signals_held, held.metrics.run.fills_moved) == (1, 1, 0)
    assert (naive.metrics.run.synthetic_bars, naive.metrics.run.signals_held) == (0, 0)
    trades = held.trades[held.trades["portfolio"] == label]
    assert len(trades) == 1 and (trades["status"] == "Open").all()  # bought once, held through the gap
    assert not (pd.to_datetime(held.trades["entry_time"], utc=True) == idx[GAP + 1]).any()
    assert not (pd.to_datetime(held.trades["exit_time"], utc=True) == idx[GAP + 1]).any()
