"""The one OHLCV frame convention, and timeframes.

Every data source returns the same frame:

* index: a UTC ``DatetimeIndex`` named ``timestamp``, the bar's **open** time,
  sorted and unique;
* columns: ``open high low close volume``, all float64; prices in the quote
  currency (USDT for BTC/USDT), volume in the base currency (BTC).

Bar ``t`` is complete, and its close known, only at ``t + 1 bar``.
"""
from __future__ import annotations

import re

import pandas as pd

from backtest.errors import ConfigError

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

_TF = re.compile(r"^(\d+)([mhdwM])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: Seconds in a year for annualisation: 365 days, because crypto trades 24/7.
SECONDS_PER_YEAR = 365 * 86400


def timeframe_seconds(timeframe: str) -> int:
    """Length of one bar in seconds, for a ccxt timeframe string such as ``"1h"`` or ``"1d"``.

    Months (``"1M"``) are not fixed-length and are refused: gaps could not be counted.
    """
    m = _TF.match(timeframe or "")
    if not m or m.group(2) == "M" or int(m.group(1)) <= 0:
        raise ConfigError(
            f"timeframe {timeframe!r} is not supported; use a ccxt timeframe such as 1m, 5m, 1h, 4h, 1d or 1w"
        )
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    """One bar as a ``pd.Timedelta``."""
    return pd.Timedelta(seconds=timeframe_seconds(timeframe))


def periods_per_year(timeframe: str) -> float:
    """Bars per year for annualisation: 365 for ``1d``, 8,760 for ``1h`` (never guessed from data)."""
    return SECONDS_PER_YEAR / timeframe_seconds(timeframe)


def vbt_freq(timeframe: str) -> str:
    """The bar length as a pandas frequency string that vectorbt accepts, e.g. ``"1D"``, ``"3600s"``."""
    secs = timeframe_seconds(timeframe)
    return "1D" if secs == 86400 else f"{secs}s"


def infer_timeframe(index: pd.DatetimeIndex) -> str:
    """The most common spacing of ``index`` as a timeframe string (``"1d"``, ``"4h"``, ``"15m"``).

    Used only to describe a file whose timeframe the user did not state.
    """
    if len(index) < 2:
        return "1d"
    secs = int(pd.Series(index[1:] - index[:-1]).mode().iloc[0].total_seconds())
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0 and secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs // 60, 1)}m"
