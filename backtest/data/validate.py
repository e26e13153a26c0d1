"""Validation and documented repair of OHLCV frames, run on every load.

Checks, in this order: unsorted rows, duplicate timestamps, missing bars for the
timeframe, NaN, non-positive prices, ``high < low`` or open/close outside
``[low, high]``, zero volume.

Default (``repair="none"``): the first failed check raises :class:`DataError`
with one line naming the source, the first offending timestamp and the count.
Identical duplicate rows are always dropped and counted (they carry no
information); conflicting duplicates are always an error.

``repair="ffill"`` (the tutorials' repair, documented in the README):

* unsorted rows are sorted;
* missing bars are inserted with open = high = low = close = previous close and
  volume 0;
* NaN or non-positive prices are replaced by the previous close (a NaN volume
  by 0);
* ``high``/``low`` are widened to contain open and close;
* zero volume is accepted.

Each repair is counted in :attr:`ValidationReport.repairs`. Rows that were
inserted or whose prices were replaced are **synthetic**: they are marked in
:attr:`ValidationReport.synthetic` (a boolean Series indexed like the bars),
and if more than ``max_repair_fraction`` of the bars would be synthetic
(``data.max_repair_fraction``, default 0.01 = 1%) the data is refused, so a
repair never silently invents a large share of the history. Strategies never
trade on a decision made at a synthetic bar
(:func:`strategies.signals.hold_on_synthetic`).

Hints name what the user can type in the command they ran: ``hint_style="cli"``
(``data show``/``data fetch``: ``--repair ffill``) or ``"config"`` (``walkforward
run``/``paper run``: ``--set data.repair=ffill``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from backtest.data.frame import COLUMNS, PRICE_COLUMNS, timeframe_delta
from backtest.errors import DataError

REPAIRS: tuple[str, ...] = ("none", "ffill")
HintStyle = Literal["cli", "config"]
_REPAIR_HINT: dict[str, str] = {"cli": "--repair ffill", "config": "--set data.repair=ffill"}


@dataclass
class ValidationReport:
    """What validation found and changed. Counts are numbers of rows."""

    source: str
    rows: int = 0
    duplicates_dropped: int = 0
    repairs: dict[str, int] = field(default_factory=dict)
    #: True for bars inserted (missing) or whose prices were replaced (NaN, non-positive); index = the bars.
    synthetic: pd.Series | None = None

    @property
    def synthetic_bars(self) -> int:
        """Number of synthetic bars (inserted or price-replaced by ``repair = "ffill"``)."""
        return 0 if self.synthetic is None else int(self.synthetic.sum())

    @property
    def rows_changed(self) -> int:
        """Rows inserted or modified by a repair (identical duplicates excluded)."""
        return sum(self.repairs.values())

    def describe(self) -> str:
        """One line for the user, e.g. ``"repair ffill: 3 gaps filled, 1 zero price replaced"``."""
        parts = [f"{n} {what}" for what, n in self.repairs.items() if n]
        if self.duplicates_dropped:
            parts.append(f"{self.duplicates_dropped} identical duplicate rows dropped")
        return "; ".join(parts) if parts else "no repairs needed"


def _fail(source: str, problem: str, where: pd.Index, hint: str = "") -> DataError:
    first = where[0]
    first_s = first.isoformat() if isinstance(first, pd.Timestamp) else str(first)
    tail = f"; {hint}" if hint else ""
    return DataError(f"{source}: {problem} at {first_s} ({len(where)} rows){tail}")


def validate(
    frame: pd.DataFrame, timeframe: str, *, source: str, repair: str = "none", max_repair_fraction: float = 0.01,
    hint_style: HintStyle = "cli",
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check ``frame`` against the OHLCV convention and return a clean copy and a report.

    ``frame`` must already have a UTC ``DatetimeIndex`` (bar open times) and the
    columns ``open high low close volume``. ``timeframe`` (e.g. ``"1d"``) sets the
    expected spacing for the gap check. ``source`` names the file or feed in
    error messages. Raises :class:`DataError` (one line) on the first failure
    that ``repair`` does not cover, or when more than ``max_repair_fraction`` of
    the bars would be synthetic. ``hint_style`` picks how hints are spelled
    (``"cli"``: ``--repair ffill``; ``"config"``: ``--set data.repair=ffill``).
    """
    use = _REPAIR_HINT[hint_style]
    if repair not in REPAIRS:
        raise DataError(f"{source}: repair {repair!r} is not known; allowed: {', '.join(REPAIRS)}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    if len(frame) == 0:
        raise DataError(f"{source}: no rows")
    fix = repair == "ffill"
    report = ValidationReport(source=source)
    df = frame.loc[:, list(COLUMNS)].astype("float64").copy()
    df.index = pd.DatetimeIndex(df.index, name="timestamp")

    # 1. order
    if not df.index.is_monotonic_increasing:
        pos = np.flatnonzero(np.diff(df.index.asi8) < 0) + 1
        if not fix:
            raise _fail(source, "rows are not sorted by time", df.index[pos], f"use {use} to sort them")
        report.repairs["rows sorted"] = len(pos)
        df = df.sort_index(kind="stable")

    # 2. duplicates: identical dropped and counted, conflicting is an error
    dup_mask = df.index.duplicated(keep=False)
    if dup_mask.any():
        dups = df[dup_mask]
        conflicting = dups.groupby(level=0).nunique(dropna=False).gt(1).any(axis=1)
        if conflicting.any():
            raise _fail(source, "conflicting duplicate timestamps", conflicting[conflicting].index)
        before = len(df)
        df = df[~df.index.duplicated(keep="first")]
        report.duplicates_dropped = before - len(df)

    # 3. missing bars
    step = timeframe_delta(timeframe)
    full = pd.date_range(df.index[0], df.index[-1], freq=step, tz="UTC", name="timestamp")
    if len(full) != len(df) or not full.equals(df.index):
        off_grid = df.index.difference(full)
        if len(off_grid):
            raise _fail(source, f"timestamps off the {timeframe} grid", off_grid)
        gaps = full.difference(df.index)
        if not fix:
            raise _fail(source, f"missing {timeframe} bars", gaps, f"use {use} to fill them from the previous close")
        df = df.reindex(full)
        report.repairs["missing bars filled"] = len(gaps)

    inserted_rows = pd.Series(~df.index.isin(frame.index), index=df.index)
    # 4. NaN and non-positive prices
    prices = df.loc[:, list(PRICE_COLUMNS)]
    bad_price = prices.isna().any(axis=1) | (prices <= 0).any(axis=1)
    bad_volume = df["volume"].isna() & ~df["volume"].isna().all()
    no_volume = bool(df["volume"].isna().all())  # a close-only file: volume unknown, not zero
    if (bad_price | bad_volume).any():
        inserted = df.index.isin(full.difference(frame.index)) if fix else np.zeros(len(df), bool)
        nan_rows = (prices.isna().any(axis=1) | bad_volume) & ~inserted
        nonpos_rows = (prices <= 0).any(axis=1)
        if not fix:
            if nan_rows.any():
                raise _fail(source, "NaN values", df.index[nan_rows.to_numpy()], f"use {use} to fill them")
            raise _fail(source, "non-positive prices", df.index[nonpos_rows.to_numpy()], f"use {use} to replace them")
        if nan_rows.any():
            report.repairs["NaN rows filled"] = int(nan_rows.sum())
        if nonpos_rows.any():
            report.repairs["non-positive prices replaced"] = int(nonpos_rows.sum())
        df = _ffill_prices(df, bad_price.to_numpy(), source)
        if not no_volume:
            df["volume"] = df["volume"].fillna(0.0)

    # 5. OHLC consistency
    hi = df[["open", "close"]].max(axis=1)
    lo = df[["open", "close"]].min(axis=1)
    inconsistent = (df["high"] < df["low"]) | (df["high"] < hi) | (df["low"] > lo)
    if inconsistent.any():
        if not fix:
            raise _fail(source, "high < low or open/close outside [low, high]", df.index[inconsistent.to_numpy()],
                        f"use {use} to widen high/low")
        df["high"] = df[["high", "low", "open", "close"]].max(axis=1)
        df["low"] = df[["high", "low", "open", "close"]].min(axis=1)
        report.repairs["high/low widened"] = int(inconsistent.sum())

    # 6. zero volume
    zero_vol = df["volume"] == 0
    if zero_vol.any():
        inserted_n = report.repairs.get("missing bars filled", 0)
        if not fix:
            raise _fail(source, "zero volume", df.index[zero_vol.to_numpy()], f"use {use} to accept it")
        accepted = int(zero_vol.sum()) - inserted_n
        if accepted > 0:
            report.repairs["zero-volume bars accepted"] = accepted

    synthetic = inserted_rows | pd.Series(bad_price.to_numpy(), index=df.index)
    report.synthetic = synthetic.rename("synthetic")
    n_syn = report.synthetic_bars
    if n_syn and n_syn > max_repair_fraction * len(df):
        share = n_syn / len(df)
        raise _fail(
            source, f"repair ffill would make {n_syn} of {len(df)} bars synthetic ({share:.1%}), above "
            f"data.max_repair_fraction = {max_repair_fraction:g} ({max_repair_fraction:.1%})", df.index[synthetic.to_numpy()],
            (f"fix the data, or allow it with --set data.max_repair_fraction={_ceil_share(share)}" if hint_style == "config"
             else f"fix the data, or allow it with --max-repair-fraction {_ceil_share(share)}"),
        )
    report.rows = len(df)
    return df, report


def _ceil_share(share: float) -> str:
    """The share rounded up to 3 decimals, as a value the user can type (0.0412 -> '0.042')."""
    return f"{np.ceil(share * 1000) / 1000:.3f}"


def _ffill_prices(df: pd.DataFrame, bad: np.ndarray, source: str) -> pd.DataFrame:
    """Set every price of the ``bad`` rows to the previous row's close (after repair)."""
    out = df.copy()
    close = out["close"].to_numpy().copy()
    cols = {c: out[c].to_numpy().copy() for c in PRICE_COLUMNS}
    for i in np.flatnonzero(bad):
        if i == 0:
            raise DataError(f"{source}: the first bar ({out.index[0].isoformat()}) has no valid price to fill from")
        for c in PRICE_COLUMNS:
            cols[c][i] = close[i - 1]
        close[i] = close[i - 1]
    for c in PRICE_COLUMNS:
        out[c] = cols[c]
    return out
