"""Simulation with vectorbt: every signal column is one portfolio in a single ``Portfolio.from_signals`` call.

Execution (DESIGN.md): the signal decided after bar ``t`` closes is filled at
the **open of bar t+1** and held through that bar. :func:`execution_positions`
is the one place where signals are shifted by a bar.

No fill at an invented price: a bar that ``data.repair = "ffill"`` inserted or
price-replaced (*synthetic*, :attr:`backtest.data.load.LoadedData.synthetic`)
has an open that never traded (the previous close). :func:`defer_synthetic_fills`
keeps the position of the bar before on every synthetic bar, so an order that
would fill at a synthetic bar's open fills at the **open of the next real bar**
instead (and an order due on the last simulation bar, if that bar is synthetic,
is not filled at all). :attr:`Simulation.fills_moved` counts those orders.

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
    positions: pd.DataFrame  # bool, True where long during the bar (after the shift and the synthetic-bar deferral)
    fills_moved: int = 0  # orders that would have filled at a synthetic bar's open, moved to the next real bar's open
    fills_moved_by: pd.Series | None = None  # the same count per signal column (int)


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


def defer_synthetic_fills(held: pd.DataFrame, synthetic: pd.Series | None) -> tuple[pd.DataFrame, pd.Series]:
    """Positions with no fill on a synthetic bar, and per column the number of fills moved.

    ``held``: bool positions per simulation bar (after :func:`execution_positions`; a change
    from bar ``t-1`` to bar ``t`` is an order filled at the open of ``t``). ``synthetic``: bool
    Series indexed by bar (True = inserted or price-replaced by the repair); bars missing from
    it count as real. On a synthetic bar every column keeps the previous bar's position (flat
    before the first bar), so the position wanted there is taken at the open of the next real
    bar. Returns ``(deferred positions, fills moved per column)``; a moved fill is a change of
    ``held`` on a synthetic bar. Example: held ``F, T(synthetic), T`` becomes ``F, F, T`` --
    the buy fills at the third bar's open -- and one fill is counted as moved. Pure.
    """
    zero = pd.Series(0, index=held.columns, dtype=int)
    if synthetic is None or held.empty:
        return held, zero
    fake = synthetic.reindex(held.index, fill_value=False).astype(bool).to_numpy()
    if not fake.any():
        return held, zero
    h = held.to_numpy(bool)
    prev = np.vstack([np.zeros((1, h.shape[1]), bool), h[:-1]])
    moved = ((h != prev) & fake[:, None]).sum(axis=0)
    deferred = held.astype(float).mask(np.broadcast_to(fake[:, None], h.shape)).ffill().fillna(0.0).astype(bool)
    return deferred, pd.Series(moved, index=held.columns, dtype=int)


def simulate(signals: pd.DataFrame, bars: pd.DataFrame, costs: BacktestConfig, timeframe: str,
             synthetic: pd.Series | None = None) -> Simulation:
    """Run all signal columns as portfolios in one vectorbt call; fills at the next real bar's open.

    ``synthetic``: the repair's mask of ``bars`` (True = synthetic bar; None = all real): no
    order fills at a synthetic bar's open, it waits for the next real bar's
    (:func:`defer_synthetic_fills`); the count is :attr:`Simulation.fills_moved`.
    """
    import vectorbt as vbt

    held, moved = defer_synthetic_fills(execution_positions(signals, bars), synthetic)
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
    return Simulation(pf, equity, held, int(moved.sum()), moved)


def trades_table(sim: Simulation) -> pd.DataFrame:
    """Closed and open trades of every portfolio: entry/exit time (bar open, UTC), prices, size, fees, PnL."""
    recs = sim.portfolio.trades.records_readable  # type: ignore[attr-defined]
    cols = {"Column": "portfolio", "Size": "size", "Entry Timestamp": "entry_time", "Avg Entry Price": "entry_price",
            "Entry Fees": "entry_fees", "Exit Timestamp": "exit_time", "Avg Exit Price": "exit_price",
            "Exit Fees": "exit_fees", "PnL": "pnl", "Return": "return", "Status": "status"}
    return recs.rename(columns=cols)[[c for c in cols.values() if c in recs.rename(columns=cols).columns]]
