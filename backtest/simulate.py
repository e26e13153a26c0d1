"""Simulation with vectorbt: every signal column is one portfolio in a single ``Portfolio.from_signals`` call.

Execution (DESIGN.md): the signal decided after bar ``t`` closes is filled at
the **open of bar t+1** and held through that bar. :func:`execution_positions`
is the one place where signals are shifted by a bar.

Costs: ``fees`` is the fraction of the order value paid per fill (0.001 = 0.1%),
``slippage`` the fraction of the price lost per fill (0.0005 = 0.05%: buys fill
at ``open * 1.0005``, sells at ``open * 0.9995``). Portfolios are valued at each
bar's close, in the quote currency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest.config import BacktestConfig
from backtest.data.frame import vbt_freq


@dataclass
class Simulation:
    """The vectorbt portfolio and its frames, over bars ``first decision bar .. last decision bar + 1``."""

    portfolio: object  # vectorbt.Portfolio
    equity: pd.DataFrame  # value at each bar's close, quote currency, one column per portfolio
    positions: pd.DataFrame  # bool, True where long during the bar (after the shift)


def execution_positions(signals: pd.DataFrame, bars: pd.DataFrame) -> pd.DataFrame:
    """Shift decisions to the bars they are executed and held in: ``held[t+1] = signal[t]``.

    ``signals`` is indexed by decision bars; the result is indexed by the
    simulation bars (first decision bar through one bar after the last), and is
    ``False`` on the first bar, when no decision has been executed yet.
    """
    start = bars.index.get_loc(signals.index[0])
    stop = bars.index.get_loc(signals.index[-1]) + 2
    if stop > len(bars):
        raise ValueError("the bar after the last decision bar is missing: cannot execute the last signal")
    sim_index = bars.index[start:stop]
    aligned = signals.reindex(sim_index).astype("boolean").fillna(False).astype(bool)
    return aligned.shift(1, fill_value=False)  # THE shift: decided at close of t, held during t+1


def simulate(signals: pd.DataFrame, bars: pd.DataFrame, costs: BacktestConfig, timeframe: str) -> Simulation:
    """Run all signal columns as portfolios in one vectorbt call; fills at the next bar's open."""
    import vectorbt as vbt

    held = execution_positions(signals, bars)
    sim_bars = bars.loc[held.index]
    n = held.shape[1]
    open_ = pd.DataFrame(np.repeat(sim_bars["open"].to_numpy()[:, None], n, axis=1), index=held.index, columns=held.columns)
    close = pd.DataFrame(np.repeat(sim_bars["close"].to_numpy()[:, None], n, axis=1), index=held.index, columns=held.columns)
    pf = vbt.Portfolio.from_signals(
        close=close,
        entries=held,
        exits=~held,
        price=open_,
        fees=costs.fees,
        slippage=costs.slippage,
        init_cash=costs.init_cash,
        freq=vbt_freq(timeframe),
    )
    equity = pf.value()
    equity.index.name = "timestamp"
    return Simulation(pf, equity, held)


def trades_table(sim: Simulation) -> pd.DataFrame:
    """Closed and open trades of every portfolio: entry/exit time (bar open, UTC), prices, size, fees, PnL."""
    recs = sim.portfolio.trades.records_readable  # type: ignore[attr-defined]
    cols = {"Column": "portfolio", "Size": "size", "Entry Timestamp": "entry_time", "Avg Entry Price": "entry_price",
            "Entry Fees": "entry_fees", "Exit Timestamp": "exit_time", "Avg Exit Price": "exit_price",
            "Exit Fees": "exit_fees", "PnL": "pnl", "Return": "return", "Status": "status"}
    return recs.rename(columns=cols)[[c for c in cols.values() if c in recs.rename(columns=cols).columns]]
