"""No fill at an invented price in the universe portfolio: a symbol's order due at the open of its synthetic
(repaired) bar waits for that symbol's next real bar.

Data: two hand-made daily symbols over six bars from 2024-01-01; bar 2 (case 1) or bar 3 (case 2) of ``A`` is
synthetic as ``data.repair = "ffill"`` makes it (open = high = low = close = the previous close, volume 0).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.config import BacktestConfig
from backtest.universe.portfolio import simulate_universe
from tests.universe.test_universe_portfolio import hand_equity

COSTS = BacktestConfig(fees=0.001, slippage=0.0005, init_cash=1000.0)
IDX = pd.date_range("2024-01-01", periods=6, freq="1D", tz="UTC", name="timestamp")


def _bars(opens: list[float], closes: list[float]) -> pd.DataFrame:
    o, c = np.array(opens, float), np.array(closes, float)
    return pd.DataFrame({"open": o, "high": np.maximum(o, c) + 1, "low": np.minimum(o, c) - 1, "close": c,
                         "volume": 1.0}, index=IDX)


def _repaired(bars: pd.DataFrame, i: int) -> tuple[pd.DataFrame, pd.Series]:
    """Bar ``i`` replaced by the repair's inserted candle; the mask."""
    out = bars.copy()
    prev = float(out["close"].iloc[i - 1])
    out.iloc[i] = [prev, prev, prev, prev, 0.0]
    return out, pd.Series(np.arange(len(out)) == i, index=out.index)


def _orders(sim, label: str) -> pd.DataFrame:
    rec = sim.portfolio.orders.records_readable
    rec = rec[[c[0] == label for c in rec["Column"]]]
    return rec.assign(symbol=[c[1] for c in rec["Column"]], t=pd.to_datetime(rec["Timestamp"], utc=True))


def _signals(a: list[bool], b: list[bool]) -> dict[str, pd.DataFrame]:
    return {"rule": pd.DataFrame({"A": a, "B": b}, index=IDX[:5])}


def test_a_symbols_entry_on_its_synthetic_bar_fills_at_its_next_real_open() -> None:
    """B is held from bar 1; A's long decided at the close of bar 1 would fill at A's invented open of bar 2.
    It fills at A's open of bar 3 (with slippage), where the rebalance to 1/2 + 1/2 happens; one fill moved."""
    a, syn_a = _repaired(_bars([10, 11, 12, 13, 14, 15], [11, 12, 13, 14, 15, 16]), 2)
    b = _bars([50, 51, 49, 52, 53, 54], [51, 49, 52, 53, 54, 55])
    bars, signals = {"A": a, "B": b}, _signals([False, True, True, True, True], [True] * 5)
    sim = simulate_universe(signals, bars, COSTS, "1d", synthetic={"A": syn_a})
    o = _orders(sim, "rule")
    buy_a = o[o["symbol"] == "A"]
    assert list(buy_a["t"]) == [IDX[3]] and buy_a["Side"].tolist() == ["Buy"]
    assert buy_a["Price"].item() == pytest.approx(13 * (1 + COSTS.slippage), rel=1e-12)
    assert sim.fills_moved == 1 and sim.fills_moved_by["rule"] == 1
    assert sim.positions["rule"]["A"].tolist() == [False, False, False, True, True, True]
    np.testing.assert_allclose(sim.equity["rule"].to_numpy(), hand_equity(sim.positions["rule"], bars, COSTS),
                               rtol=1e-9)
    # without the mask A buys at the synthetic open (12 = close of bar 1): the case is not vacuous
    naive = _orders(simulate_universe(signals, bars, COSTS, "1d"), "rule")
    assert naive.loc[naive["symbol"] == "A", "t"].tolist() == [IDX[2]]
    assert naive.loc[naive["symbol"] == "A", "Price"].item() == pytest.approx(12 * (1 + COSTS.slippage), rel=1e-12)


def test_a_rebalance_on_a_symbols_synthetic_bar_is_redone_at_its_next_real_bar() -> None:
    """A is held from bar 1 (all the cash); B enters at bar 3, a synthetic bar of A. A gets no order at its
    invented open; B gets its 1/2 target (no cash is left, so nothing fills); at bar 4, A's next real bar, the
    whole rebalance is done: A sold down to 1/2 at its real open, B bought with the proceeds."""
    a, syn_a = _repaired(_bars([10, 11, 12, 13, 14, 15], [11, 12, 13, 14, 15, 16]), 3)
    b = _bars([50, 51, 49, 52, 53, 54], [51, 49, 52, 53, 54, 55])
    bars, signals = {"A": a, "B": b}, _signals([True] * 5, [False, False, True, True, True])
    sim = simulate_universe(signals, bars, COSTS, "1d", synthetic={"A": syn_a})
    w = sim.weights["rule"]
    assert np.isnan(w.loc[IDX[3], "A"]) and w.loc[IDX[3], "B"] == 0.5
    assert w.loc[IDX[4]].tolist() == [0.5, 0.5]
    o = _orders(sim, "rule")
    assert o.loc[o["symbol"] == "A", "t"].tolist() == [IDX[1], IDX[4]]
    sell = o[(o["symbol"] == "A") & (o["t"] == IDX[4])]
    assert sell["Side"].item() == "Sell" and sell["Price"].item() == pytest.approx(14 * (1 - COSTS.slippage), rel=1e-12)
    assert o.loc[o["symbol"] == "B", "t"].tolist() == [IDX[4]]
    assert sim.fills_moved == 1
    # by hand: all cash into A at open[1]; at bar 4 value V = size * 14, sell half of A, buy B with the proceeds
    f, sl = COSTS.fees, COSTS.slippage
    size = 1000.0 / (11 * (1 + sl) * (1 + f))
    cash = size / 2 * 14 * (1 - sl) * (1 - f)
    size_b = cash / (53 * (1 + sl) * (1 + f))  # the 1/2 target costs more than the cash: cut to the cash left
    want = [1000.0, size * 12, size * 13, size * 13, size / 2 * 15 + size_b * 54, size / 2 * 16 + size_b * 55]
    np.testing.assert_allclose(sim.equity["rule"].to_numpy(), want, rtol=1e-9)
    naive = _orders(simulate_universe(signals, bars, COSTS, "1d"), "rule")
    assert naive.loc[naive["symbol"] == "A", "t"].tolist() == [IDX[1], IDX[3]]
