"""Signals: the desired position for bar ``t+1``, decided at the close of bar ``t``.

Every function returns a boolean Series indexed by decision bar ``t``
(``True`` = be long during bar ``t+1``, ``False`` = be flat). The shift to
execution (fill at the open of ``t+1``) happens in exactly one place:
:func:`backtest.simulate.execution_positions`.

Forecasts are predicted log returns ``r̂[t+1]`` (for multi-step models, the
rule uses the sum ``r̂[t+1] + ... + r̂[t+K]``, the expected log return over the
next K bars).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def round_trip_cost(fees: float, slippage: float) -> float:
    """Log return lost to one entry plus one exit: ``-ln((1-f)(1-s) / ((1+f)(1+s)))``.

    With fees 0.001 and slippage 0.0005 per side this is 0.0030 (0.30%): the
    default ``long_flat`` threshold, so a trade must expect to beat what it pays.
    """
    return -math.log((1 - fees) * (1 - slippage) / ((1 + fees) * (1 + slippage)))


def long_flat(
    forecast: pd.Series,
    threshold: float,
    entry_threshold: float | None = None,
    exit_threshold: float | None = None,
) -> pd.Series:
    """Long for bar ``t+1`` when ``forecast[t] > threshold``, else flat.

    With hysteresis (``entry_threshold`` and ``exit_threshold``, entry >= exit):
    enter when the forecast exceeds ``entry_threshold``, leave when it falls below
    ``exit_threshold``, otherwise keep the previous position. Units: log return.
    """
    if entry_threshold is None and exit_threshold is None:
        return (forecast > threshold).rename(forecast.name)
    enter = threshold if entry_threshold is None else entry_threshold
    leave = threshold if exit_threshold is None else exit_threshold
    if leave > enter:
        raise ValueError(f"exit_threshold ({leave}) must not exceed entry_threshold ({enter})")
    state = pd.Series(np.where(forecast > enter, 1.0, np.where(forecast < leave, 0.0, np.nan)), index=forecast.index)
    return state.ffill().fillna(0.0).astype(bool).rename(forecast.name)


def ensemble_forecast(forecasts: pd.DataFrame) -> pd.Series:
    """Mean forecast of the columns (one per model), per decision bar."""
    return forecasts.mean(axis=1)


def ensemble_vote(signals: pd.DataFrame) -> pd.Series:
    """Long when a strict majority of the models' signals are long."""
    return signals.sum(axis=1) * 2 > signals.shape[1]


def buy_and_hold(index: pd.Index) -> pd.Series:
    """Always long: bought at the open after the first decision bar, held to the end."""
    return pd.Series(True, index=index)


def always_flat(index: pd.Index) -> pd.Series:
    """Never invested: the 'do nothing' baseline (equity stays at the initial cash)."""
    return pd.Series(False, index=index)


def sma_cross(close: pd.Series, fast: int, slow: int, index: pd.Index) -> pd.Series:
    """Long for bar ``t+1`` while the ``fast``-bar SMA of close is above the ``slow``-bar SMA at bar ``t``.

    ``close`` is the full bar history (the moving averages use closes ``<= t``,
    so history before the first test bar warms them up); the result is
    restricted to ``index``. Uses vectorbt's MA indicator.
    """
    import vectorbt as vbt

    fast_ma = vbt.MA.run(close, window=fast).ma
    slow_ma = vbt.MA.run(close, window=slow).ma
    return (fast_ma > slow_ma).reindex(index).fillna(False).astype(bool)


def hold_on_synthetic(signals: pd.DataFrame, synthetic: pd.Series | None) -> pd.DataFrame:
    """Signals with no decision taken on a synthetic bar: on such a decision bar ``t`` each column keeps
    its previous bar's signal, so no order is placed at the open of ``t+1``.

    ``signals``: boolean columns indexed by decision bar ``t`` (``True`` = long during ``t+1``).
    ``synthetic``: boolean Series indexed by bar (True = inserted or price-replaced by
    ``repair = "ffill"``, see :mod:`backtest.data.validate`); bars not in it count as real.
    A synthetic first decision bar keeps the position before the test period: flat. Pure: the
    inputs are not changed. Example: signals ``F, F, T(synthetic), T`` become ``F, F, F, T`` --
    the long entry waits for the first real close.
    """
    if synthetic is None or not bool(synthetic.any()) or signals.empty:
        return signals
    fake = synthetic.reindex(signals.index, fill_value=False).astype(bool).to_numpy()
    if not fake.any():
        return signals
    held = signals.astype(float).mask(np.broadcast_to(fake[:, None], signals.shape))
    return held.ffill().fillna(0.0).astype(bool)
