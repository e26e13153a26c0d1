"""The universe portfolio: one cash-shared, equal-weight long/flat portfolio over many symbols, in one vectorbt call.

Time alignment (DESIGN.md, as in :mod:`backtest.simulate`): the signal of symbol
``s`` decided after bar ``t`` closes is executed at the **open of bar t+1** and
held through that bar; :func:`universe_positions` is the one place where the
universe signals are shifted by a bar (it calls
:func:`backtest.simulate.execution_positions`).

Rebalancing rule (exact; the hand-computation test mirrors it to 1e-9):

* Let ``L(t)`` be the set of symbols held during bar ``t`` (long decided at ``t-1``).
* **Only on a bar where ``L(t)`` differs from ``L(t-1)``** the portfolio is
  rebalanced at that bar's open: every symbol in ``L(t)`` gets the target
  weight ``1 / |L(t)|`` of the portfolio value, every other symbol ``0``.
  The portfolio value used for the targets is ``cash + sum(position * open)``,
  taken once before any fill of that bar. Symbols that stay long are resized
  to the new equal weight too (these fills pay fees and slippage as well).
* On bars where the long set is unchanged nothing is traded: weights drift
  with prices until the next change.
* Fills: sells first, then buys, ordered by the size of the order value
  (vectorbt's ``call_seq="auto"``), so sells fund buys. A buy fills at
  ``open * (1 + slippage)``, a sell at ``open * (1 - slippage)``; ``fees`` is
  the fraction of each fill's value. Because the targets add up to the whole
  value while buys pay slippage and fees, the last buy of a rebalance is cut
  to the cash that is left (vectorbt's partial fill): never any leverage.
* Cash is shared by the symbols of one portfolio; it earns nothing.

No fill at an invented price (as in :mod:`backtest.simulate`): on a symbol's
*synthetic* bar (inserted or price-replaced by ``data.repair = "ffill"``; its
open never traded) that symbol gets **no order**, and the order waits for the
symbol's next real bar (:func:`defer_universe_fills`):

* the symbol keeps the position it had on the bar before (its long/flat state
  is carried over the synthetic bars), so a change of its own position first
  counts in ``L(t)`` at its next real bar, where the usual rebalance happens;
* when a rebalance bar (another symbol's change) is synthetic for a symbol
  that has an order in it, that symbol gets no order and keeps its drifted
  position, the others get their usual targets (``1 / |L(t)|``, ``L(t)``
  counting the waiting symbol as held if it is), and the whole rebalance is
  done again at the waiting symbol's next real bar (every symbol real there
  back to ``1 / |L|`` of that bar's value); meanwhile targets that add up to
  more than the value are cut at the last buy as above -- never leverage -- and
  value the waiting symbol does not take stays in cash.

:attr:`UniverseSimulation.fills_moved` counts the orders that the schedule
without this rule would fill at the open of a symbol's synthetic bar.

Baselines added to every simulation:

* ``buy_and_hold``: equal-weight buy & hold of the universe: long every symbol
  that has started (has a decision bar at or before ``t``), so by the rule above
  it rebalances to equal weight at the next open whenever a symbol enters, and
  never otherwise.
* ``buy_and_hold[<symbol>]``: all the portfolio's cash in one symbol from the
  open after its first decision bar to the end (its own cash, not shared).

Prices: each symbol's open and close are taken from its own bars. Before a
symbol's first bar it is never held; its prices there are back-filled only so
that vectorbt can value a zero position. A symbol must have bars up to the
universe's last execution bar (symbols may start late, not end early).
Portfolios are valued at each bar's close, in the quote currency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest.config import BacktestConfig
from backtest.data.frame import timeframe_delta, vbt_freq
from backtest.errors import DataError
from backtest.simulate import execution_positions

#: Label of the equal-weight universe buy & hold baseline.
UNIVERSE_BH = "buy_and_hold"


def symbol_bh_label(symbol: str) -> str:
    """Label of the per-symbol buy & hold baseline inside a universe simulation, e.g. ``buy_and_hold[ETH/USDT]``."""
    return f"{UNIVERSE_BH}[{symbol}]"


@dataclass
class UniverseSimulation:
    """One vectorbt portfolio with a group per label, and its frames over the universe's simulation bars.

    ``portfolio`` columns are a MultiIndex ``(portfolio, symbol)`` grouped by
    ``portfolio``; ``equity`` has one column per group (value at each bar's
    close, quote currency); ``positions[label]`` is a bool frame (bars x symbols),
    True where the symbol is held during the bar (after the shift); ``weights``
    the target weights of every rebalance bar (NaN on bars without orders);
    ``fills_moved`` the orders moved off synthetic bars (all labels), ``fills_moved_by``
    the same count per label.
    """

    portfolio: object  # vectorbt.Portfolio
    equity: pd.DataFrame
    positions: dict[str, pd.DataFrame]
    weights: dict[str, pd.DataFrame]
    labels: list[str]
    symbols: list[str]
    fills_moved: int = 0
    fills_moved_by: dict[str, int] | None = None


def universe_prices(bars: dict[str, pd.DataFrame], index: pd.DatetimeIndex) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Open and close of every symbol on ``index`` (bars x symbols).

    Raises :class:`DataError` naming the symbol when its bars stop before the
    end of ``index`` or miss a bar inside its own span.
    """
    opens, closes = {}, {}
    for sym, b in bars.items():
        sub = b.reindex(index)
        own = sub.index >= b.index[0]
        missing = sub.loc[own, ["open", "close"]].isna().any(axis=1)
        if missing.any():
            first = missing[missing].index[0]
            if b.index[-1] < index[-1]:
                raise DataError(f"{sym}: bars end at {b.index[-1].isoformat()}, before the universe's last execution "
                                f"bar {index[-1].isoformat()}; cut every symbol to a common end ([data] end)")
            raise DataError(f"{sym}: no bar at {first.isoformat()} inside its data span; repair or refetch it")
        opens[sym] = sub["open"].bfill()
        closes[sym] = sub["close"].bfill()
    return pd.DataFrame(opens, index=index), pd.DataFrame(closes, index=index)


def universe_positions(signals: pd.DataFrame, sim_index: pd.DatetimeIndex) -> pd.DataFrame:
    """Shift decisions to the bars they are held in (``held[t+1] = signal[t]``), on the universe's simulation bars."""
    calendar = pd.DataFrame(index=sim_index)
    return execution_positions(signals, calendar).reindex(columns=signals.columns)


def rebalance_weights(held: pd.DataFrame) -> pd.DataFrame:
    """Target weights per bar: ``1/n_long`` for held symbols and 0 for the others on bars where the
    long set changes (the first bar counts as changed from "nothing held"); NaN (no order) elsewhere."""
    h = held.to_numpy(bool)
    prev = np.vstack([np.zeros((1, h.shape[1]), bool), h[:-1]])
    changed = (h != prev).any(axis=1)
    n = h.sum(axis=1)
    w = np.where(h, 1.0 / np.maximum(n, 1)[:, None], 0.0)
    w[~changed] = np.nan
    return pd.DataFrame(w, index=held.index, columns=held.columns)


def synthetic_frame(synthetic: dict[str, pd.Series] | None, index: pd.DatetimeIndex, symbols: list[str]) -> pd.DataFrame:
    """Bool frame (bars x symbols) on ``index``: True where the bar of that symbol is synthetic; symbols or bars
    missing from ``synthetic`` count as real."""
    synthetic = synthetic or {}
    cols = {s: (synthetic[s].reindex(index, fill_value=False).astype(bool).to_numpy() if synthetic.get(s) is not None
                else np.zeros(len(index), bool)) for s in symbols}
    return pd.DataFrame(cols, index=index, columns=symbols)


def _orders(held: pd.DataFrame, weights: pd.DataFrame) -> np.ndarray:
    """Where a weight row places an order on a symbol: a target (not NaN) that is long, or that sells a held symbol."""
    h = held.to_numpy(bool)
    prev = np.vstack([np.zeros((1, h.shape[1]), bool), h[:-1]])
    w = weights.to_numpy(float)
    return ~np.isnan(w) & ((w > 0) | prev)


def defer_universe_fills(held: pd.DataFrame, syn: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Positions and target weights with no order on a symbol's synthetic bar, and the number of orders moved.

    ``held``: bool (bars x symbols) after :func:`universe_positions`; ``syn``: bool frame of the same
    shape (:func:`synthetic_frame`). Each symbol keeps, on its synthetic bars, the position of the bar
    before (flat before the first bar); the weights are :func:`rebalance_weights` of those positions, with
    no order (NaN) on a symbol's synthetic bar; a rebalance in which a symbol missed its order that way is
    done again in full at that symbol's next real bar (targets ``1 / |L|`` if held, else 0) unless that bar
    is a rebalance bar already. An order due after the last bar is dropped. The count is the number of
    orders that :func:`rebalance_weights` of ``held`` (no deferral) places on synthetic cells.
    """
    fake = syn.reindex(index=held.index, columns=held.columns, fill_value=False).to_numpy(bool)
    weights0 = rebalance_weights(held)
    if not fake.any():
        return held, weights0, 0
    moved = int((_orders(held, weights0) & fake).sum())
    deferred = held.astype(float).mask(fake).ffill().fillna(0.0).astype(bool)
    h = deferred.to_numpy(bool)
    prev = np.vstack([np.zeros((1, h.shape[1]), bool), h[:-1]])
    n_long = h.sum(axis=1)
    w = rebalance_weights(deferred).to_numpy(float).copy()
    for i in np.nonzero(fake.any(axis=1))[0]:  # in time order: a redone rebalance may meet another synthetic bar
        missed = ~np.isnan(w[i]) & ((w[i] > 0) | prev[i]) & fake[i]
        for j in np.nonzero(missed)[0]:
            w[i, j] = np.nan
            real = np.nonzero(~fake[i + 1:, j])[0]
            k = i + 1 + real[0] if len(real) else None
            if k is not None and np.isnan(w[k]).all():
                w[k] = np.where(h[k], 1.0 / max(n_long[k], 1), 0.0)
    return deferred, pd.DataFrame(w, index=held.index, columns=held.columns), moved


def simulate_universe(
    signals: dict[str, pd.DataFrame],
    bars: dict[str, pd.DataFrame],
    costs: BacktestConfig,
    timeframe: str,
    *,
    active: pd.DataFrame | None = None,
    synthetic: dict[str, pd.Series] | None = None,
) -> UniverseSimulation:
    """Every label's universe portfolio, plus the buy & hold baselines, in one ``Portfolio.from_orders`` call.

    ``signals``: label -> bool frame indexed by decision bars (the union over
    symbols), columns = symbols, False where a symbol has no forecast.
    ``active``: bool frame of the same shape, True where a symbol has a forecast
    (default: the union of the signal frames' index where the symbol has a bar);
    it defines when a symbol has started, for the buy & hold baselines.
    A label equal to ``"buy_and_hold"`` is replaced by the equal-weight baseline.
    ``synthetic``: per symbol, its repair mask (True = synthetic bar; missing = all real): no order of a
    symbol fills at its synthetic bar's open (:func:`defer_universe_fills`, module docstring).
    """
    import vectorbt as vbt

    if not signals:
        raise ValueError("simulate_universe: no signal frames")
    symbols = list(bars)
    first = next(iter(signals.values()))
    dindex = pd.DatetimeIndex(first.index)
    for label, frame in signals.items():
        if not frame.index.equals(dindex) or list(frame.columns) != symbols:
            raise ValueError(f"simulate_universe: signals[{label!r}] must share the decision index and the symbols {symbols}")
    if active is None:
        active = pd.DataFrame({s: dindex.isin(bars[s].index) for s in symbols}, index=dindex)
    active = active.reindex(index=dindex, columns=symbols).fillna(False).astype(bool)
    started = active.cummax()
    sim_index = dindex.append(pd.DatetimeIndex([dindex[-1] + timeframe_delta(timeframe)])).rename("timestamp")
    opens, closes = universe_prices(bars, sim_index)

    frames: dict[str, pd.DataFrame] = {lab: f for lab, f in signals.items() if lab != UNIVERSE_BH}
    frames[UNIVERSE_BH] = started
    for s in symbols:
        frames[symbol_bh_label(s)] = started[[s]]
    labels = list(frames)
    syn = synthetic_frame(synthetic, sim_index, symbols)
    held, weights, moved = {}, {}, {}
    for lab, f in frames.items():
        held[lab], weights[lab], moved[lab] = defer_universe_fills(universe_positions(f.astype(bool), sim_index),
                                                                   syn[list(f.columns)])
    cols = pd.MultiIndex.from_tuples([(lab, s) for lab in labels for s in frames[lab].columns], names=["portfolio", "symbol"])
    size = pd.concat([weights[lab] for lab in labels], axis=1)
    size.columns = cols
    open_ = opens[[c[1] for c in cols]]
    open_.columns = cols
    close = closes[[c[1] for c in cols]]
    close.columns = cols
    pf = vbt.Portfolio.from_orders(
        close=close,
        size=size,
        size_type="targetpercent",
        direction="longonly",
        price=open_,
        val_price=open_,
        fees=costs.fees,
        slippage=costs.slippage,
        init_cash=costs.init_cash,
        cash_sharing=True,
        group_by="portfolio",
        call_seq="auto",
        freq=vbt_freq(timeframe),
    )
    equity = pf.value()
    equity.columns = list(equity.columns)
    equity.index.name = "timestamp"
    return UniverseSimulation(pf, equity[labels], held, weights, labels, symbols, sum(moved.values()), moved)

