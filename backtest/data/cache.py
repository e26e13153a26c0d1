"""The Parquet candle cache: one file per exchange, symbol and timeframe.

A cache file holds a frame in the project convention (UTC ``DatetimeIndex``
named ``timestamp`` = bar **open** time, float64 ``open high low close volume``,
sorted and unique), complete bars only. Files are written atomically (temporary
file in the same folder, then ``os.replace``): a reader, or the next run after a
kill, sees the previous complete file or the new complete file, never a torn one.

Layout: ``<cache_dir>/<exchange>/<BASE-QUOTE>_<timeframe>.parquet``, e.g.
``~/.cache/walkforward/candles/binance/BTC-USDT_1d.parquet``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from platformdirs import user_cache_dir

from backtest.atomic import atomic_write
from backtest.data.frame import COLUMNS
from backtest.errors import ConfigError, DataError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXCHANGE_ID = re.compile(r"^[a-z0-9_]+$")


def default_cache_dir() -> Path:
    """The per-user candle cache folder, e.g. ``~/.cache/walkforward/candles`` on Linux."""
    return Path(user_cache_dir("walkforward")) / "candles"


def cache_path(cache_dir: str | os.PathLike[str], exchange: str, symbol: str, timeframe: str) -> Path:
    """The cache file of one market and timeframe, with a file-system-safe name.

    ``cache_path(d, "binance", "BTC/USDT", "1d")`` is ``d/binance/BTC-USDT_1d.parquet``;
    any character other than letters, digits, ``.``, ``_`` and ``-`` in the symbol or
    timeframe becomes ``-`` (``"BTC/USDT:USDT"`` -> ``BTC-USDT-USDT``).
    """
    if not _EXCHANGE_ID.match(exchange or ""):
        raise ConfigError(f"exchange {exchange!r} is not a ccxt exchange id (lower-case letters, digits, _)")
    sym = _UNSAFE.sub("-", symbol or "").strip("-.")
    tf = _UNSAFE.sub("-", timeframe or "").strip("-.")
    if not sym or not tf:
        raise ConfigError(f"cannot name a cache file for symbol {symbol!r} and timeframe {timeframe!r}")
    return Path(cache_dir) / exchange / f"{sym}_{tf}.parquet"


def read_cache(path: str | os.PathLike[str]) -> pd.DataFrame | None:
    """The cached frame at ``path``, or ``None`` if there is no such file.

    Raises:
        DataError: the file exists but is not a readable candle cache (one line naming it).
    """
    p = Path(path)
    if not p.exists():
        return None
    try:
        frame = pq.read_table(p).to_pandas()
    except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as exc:
        detail = " ".join(str(exc).split())[:120]
        raise DataError(
            f"candle cache {p} is unreadable ({type(exc).__name__}: {detail}); delete it to download again"
        ) from None
    return _conform(frame, p)


def _conform(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``frame`` checked and coerced to the convention, or a one-line DataError naming ``path``."""
    bad = f"candle cache {path} is not a candle frame"
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{bad} (missing columns {', '.join(missing)}); delete it to download again")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"{bad} (index is not timestamps); delete it to download again")
    index = frame.index.tz_localize("UTC") if frame.index.tz is None else frame.index.tz_convert("UTC")
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise DataError(f"{bad} (timestamps not sorted and unique); delete it to download again")
    try:
        values = frame[list(COLUMNS)].to_numpy(dtype="float64")
    except (TypeError, ValueError):
        raise DataError(f"{bad} (non-numeric prices); delete it to download again") from None
    return pd.DataFrame(values, index=index.rename("timestamp"), columns=list(COLUMNS))


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` (index kept) to the Parquet file ``path``."""
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=True), path)


def write_cache(path: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """Atomically replace the cache file ``path`` with ``frame`` (frame convention).

    The frame is written to a temporary file beside ``path`` and renamed onto it, so a
    write killed half-way leaves the previous cache readable and intact.
    """
    out = frame[list(COLUMNS)].astype("float64")
    out.index = pd.DatetimeIndex(out.index).rename("timestamp")
    return atomic_write(path, lambda tmp: _write_parquet(out, tmp))
