"""The universe portfolio against a hand computation of equal-weight, cash-shared long/flat with fees and slippage.

Data: the three real daily slices of ``tests/universe/data`` (BTC from 2020-06-01, ETH from 2020-07-01,
SOL from its listing day 2020-08-11; all to 2021-03-31). Decisions start after 60 bars of each symbol,
so SOL enters the universe about two months after BTC.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.config import BacktestConfig
from backtest.errors import DataError
from backtest.universe.portfolio import UNIVERSE_BH, simulate_universe, symbol_bh_label
from tests.universe.eval_helpers import universe_bars

COSTS = BacktestConfig(fees=0.001, slippage=0.0005, init_cash=10_000.0)


def _signals(bars: dict[str, pd.DataFrame], warmup: int = 60) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """A causal rule per symbol (long for t+1 when close[t] > close[t-3]) and the mask of decision bars."""
    cols, act = {}, {}
    for s, b in bars.items():
        dec = b.index[warmup:-1]
        cols[s] = (b["close"] > b["close"].shift(3)).reindex(dec)
        act[s] = pd.Series(True, index=dec)
    index = pd.DatetimeIndex(sorted(set().union(*(c.index for c in cols.values()))), name="timestamp")
    sig = pd.DataFrame(cols).reindex(index).fillna(False).astype(bool)
    active = pd.DataFrame(act).reindex(index).fillna(False).astype(bool)
    return {"rule": sig, "alt": ~sig & active}, active


def hand_equity(held: pd.DataFrame, bars: dict[str, pd.DataFrame], costs: BacktestConfig,
                cuts: list | None = None) -> pd.Series:
    """Equal weight among the held symbols, rebalanced at the open only when the held set changes; sells first.

    Written from the rule in the module docstring, without vectorbt: value V = cash + sum(pos * open) before the
    bar's fills; target amount of symbol s = w_s * V / open_s; fills ordered by order value (most negative first);
    buys at open*(1+slippage), sells at open*(1-slippage), fees on each fill's value; a buy is cut to the cash left.
    """
    f, sl = costs.fees, costs.slippage
    cuts = [] if cuts is None else cuts  # bars where a buy was cut to the cash left
    cash, pos, prev = costs.init_cash, {s: 0.0 for s in held.columns}, frozenset()
    out = []
    for t, row in held.iterrows():
        longs = frozenset(s for s in held.columns if row[s])
        if longs != prev:
            opens = {s: float(bars[s]["open"].get(t, np.nan)) for s in held.columns}
            value = cash + sum(pos[s] * opens[s] for s in held.columns if pos[s] != 0)
            w = {s: (1.0 / len(longs) if s in longs else 0.0) for s in held.columns}
            orders = sorted(held.columns, key=lambda s: w[s] * value - pos[s] * (opens[s] if pos[s] else 0.0))
            for s in orders:
                if w[s] == 0.0 and pos[s] == 0.0:
                    continue
                delta = w[s] * value / opens[s] - pos[s]
                if delta < 0:
                    cash += -delta * opens[s] * (1 - sl) * (1 - f)
                elif delta > 0:
                    price = opens[s] * (1 + sl)
                    if delta * price * (1 + f) > cash:
                        delta = cash / ((1 + f) * price)
                        cuts.append(t)
                    cash -= delta * price * (1 + f)
                pos[s] += delta
            prev = longs
        out.append(cash + sum(pos[s] * float(bars[s]["close"][t]) for s in held.columns if pos[s] != 0))
    return pd.Series(out, index=held.index)


@pytest.fixture(scope="module")
def case():
    bars = universe_bars()
    signals, active = _signals(bars)
    sim = simulate_universe(signals, bars, COSTS, "1d", active=active)
    return bars, signals, active, sim


def test_universe_portfolio_equals_hand_computation(case) -> None:
    bars, signals, active, sim = case
    for label in ("rule", "alt", UNIVERSE_BH):
        held = sim.positions[label]
        cuts: list = []
        expected = hand_equity(held, bars, COSTS, cuts)
        assert cuts  # the partial-fill branch is exercised
        got = sim.equity[label]
        assert np.allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0.0), label
        # the rule really trades: many rebalances, every one paying fees
        assert sim.portfolio[label].orders.count() > (50 if label != UNIVERSE_BH else 2)
    # held = signal of the previous decision bar, nothing on the first simulation bar
    assert not sim.positions["rule"].iloc[0].any()
    pd.testing.assert_frame_equal(sim.positions["rule"].iloc[1:].reset_index(drop=True),
                                  signals["rule"].reset_index(drop=True), check_names=False)


def test_buy_and_hold_baselines(case) -> None:
    bars, signals, active, sim = case
    # equal-weight buy & hold rebalances exactly when a symbol enters: three rebalance bars for three symbols
    w = sim.weights[UNIVERSE_BH]
    rebal = w.index[w.notna().any(axis=1)]
    firsts = sorted(active[s].idxmax() for s in active.columns)
    assert list(rebal) == [sim.equity.index[sim.equity.index.get_loc(t) + 1] for t in firsts]
    assert np.allclose(w.loc[rebal[-1]].to_numpy(), 1 / 3)
    # per-symbol buy & hold: all cash into that symbol at the open after its first decision bar, held to the end
    # (its equality with the single-symbol simulation is checked in test_universe_evaluate.py)
    for s in bars:
        label = symbol_bh_label(s)
        held = sim.positions[label]
        assert list(held.columns) == [s] and held[s].sum() == active[s].sum()
        expected = hand_equity(held, bars, COSTS)
        assert np.allclose(sim.equity[label].to_numpy(), expected.to_numpy(), rtol=1e-9, atol=0.0)
        assert (sim.equity[label].loc[: active[s].idxmax()] == COSTS.init_cash).all()


def test_symbol_ending_early_fails_naming_it(case) -> None:
    bars, signals, active, _ = case
    short = dict(bars, **{"ETH/USDT": bars["ETH/USDT"].iloc[:-10]})
    with pytest.raises(DataError, match=r"^ETH/USDT: bars end at 2021-03-21.*common end"):
        simulate_universe(signals, short, COSTS, "1d", active=active)
