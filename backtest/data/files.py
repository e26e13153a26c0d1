"""Read OHLCV files: ccxt-style CSV, Yahoo-style CSV, ``Date,Close`` CSV, Parquet.

Recognised CSV headers (case-insensitive):

* ccxt rows: ``timestamp,open,high,low,close,volume``; ``timestamp`` is an ISO
  date/time (UTC if naive) or a number since the Unix epoch: milliseconds (as
  ``fetch_ohlcv`` returns it) when every value is in ``[1e11, 1e14)`` (1973-03-03
  .. 5138-11-16), seconds when every value is in ``[1e8, 1e11)`` (1973-03-03 ..
  5138-11-16); any other numeric column (e.g. ``20240101``, microseconds, a mix)
  is refused in one line;
* Yahoo: ``Date,Open,High,Low,Close,Adj Close,Volume`` (``Close`` is used;
  for crypto ``Adj Close`` is the same number);
* close only: ``Date,Close`` (as in the tutorials). Open is taken as the previous
  close (the first bar's open as its own close), high/low as the larger/smaller
  of open and close, and volume is unknown (NaN). Say so when reporting results.

All return the frame convention of :mod:`backtest.data.frame`, not yet
validated: call :func:`backtest.data.validate.validate` next.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backtest.data.frame import COLUMNS
from backtest.errors import DataError

_TIME_NAMES = ("timestamp", "date", "datetime", "time", "open_time")
#: Numeric timestamps: milliseconds in [1e11, 1e14), seconds in [1e8, 1e11) since the Unix epoch (both 1973..5138).
_S_MIN, _MS_MIN, _MS_MAX = 1e8, 1e11, 1e14


def read_ohlcv_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet OHLCV file into the frame convention (unvalidated)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not a data file")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            raw = pd.read_parquet(p)
            if isinstance(raw.index, pd.DatetimeIndex):
                raw = raw.reset_index()
        else:
            raw = pd.read_csv(p, skipinitialspace=True)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:  # pyarrow errors are ValueError/OSError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: cannot be read as {'Parquet' if p.suffix.lower() in ('.parquet', '.pq') else 'CSV'} ({first})") from None
    return normalise_columns(raw, str(p))


def normalise_columns(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Map a raw table with one of the recognised headers to the frame convention."""
    cols = {str(c).strip().lower(): c for c in raw.columns}
    time_col = next((cols[n] for n in _TIME_NAMES if n in cols), None)
    if time_col is None:
        raise DataError(
            f"{source}: no time column; expected one of {', '.join(_TIME_NAMES)} "
            f"(found {', '.join(map(str, raw.columns)) or 'no columns'})"
        )
    if "close" not in cols:
        raise DataError(f"{source}: no close column (found {', '.join(map(str, raw.columns))})")
    if len(raw) == 0:
        raise DataError(f"{source}: no rows (only a header)")
    index = _parse_times(raw[time_col], source)
    out = pd.DataFrame(index=index)
    for name in COLUMNS:
        if name in cols:
            out[name] = _numeric(raw[cols[name]], source, name, index)
    present = [c for c in COLUMNS if c in out.columns]
    if present == ["close"] or set(present) == {"close", "volume"}:
        close = out["close"]
        prev = close.shift(1).fillna(close)
        out["open"] = prev
        out["high"] = np.maximum(prev, close)
        out["low"] = np.minimum(prev, close)
        if "volume" not in out.columns:
            out["volume"] = np.nan
    missing = [c for c in COLUMNS if c not in out.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; expected ccxt, Yahoo or Date,Close headers")
    return out.loc[:, list(COLUMNS)]


def _parse_times(col: pd.Series, source: str) -> pd.DatetimeIndex:
    if pd.api.types.is_datetime64_any_dtype(col):
        idx = pd.to_datetime(col, utc=True)
        return pd.DatetimeIndex(idx, name="timestamp").as_unit("ns")
    numeric = pd.to_numeric(col, errors="coerce")
    unit = None
    if numeric.notna().all() and len(col):
        ms = (numeric >= _MS_MIN) & (numeric < _MS_MAX)
        secs = (numeric >= _S_MIN) & (numeric < _MS_MIN)
        if ms.all():
            unit = "ms"
        elif secs.all():
            unit = "s"
        else:
            odd = ~(ms | secs)
            row = int(np.flatnonzero(odd.to_numpy())[0]) if odd.any() else int(np.flatnonzero(secs.to_numpy())[0])
            raise DataError(
                f"{source}: numeric timestamp {str(col.iloc[row])!r} at data row {row + 1} is not seconds (1e8..1e11) or "
                "milliseconds (1e11..1e14) since the Unix epoch, or the column mixes both; write ISO times or one unit")
    try:
        if unit is not None:
            idx = pd.to_datetime(numeric.astype("int64" if unit == "ms" else "float64"), unit=unit, utc=True)
        else:
            idx = pd.to_datetime(col, utc=True, errors="coerce", format="mixed")
    except (ValueError, OverflowError, TypeError):
        idx = pd.Series(pd.NaT, index=col.index)
    bad = pd.isna(idx)
    if bad.any():
        row = int(np.flatnonzero(np.asarray(bad))[0])
        raise DataError(
            f"{source}: unparseable timestamp {col.iloc[row]!r} at data row {row + 1} ({int(bad.sum())} rows)"
        )
    return pd.DatetimeIndex(idx, name="timestamp").as_unit("ns")


def _numeric(col: pd.Series, source: str, name: str, index: pd.DatetimeIndex) -> np.ndarray:
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() & col.notna() & (col.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{source}: non-numeric {name} {col.iloc[row]!r} at {index[row].isoformat()} ({int(bad.sum())} rows)"
        )
    return values.astype("float64").to_numpy()
