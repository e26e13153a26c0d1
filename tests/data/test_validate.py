"""Every bad-input case of validation: its one-line message, or its documented repair count."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.data.validate import validate
from backtest.errors import DataError


def frame(rows: list[tuple], start: str = "2021-01-01") -> pd.DataFrame:
    """Daily bars from (open, high, low, close, volume) tuples; a tuple starting with a date string sets its time."""
    idx, vals = [], []
    t = pd.Timestamp(start, tz="UTC")
    for r in rows:
        if isinstance(r[0], str):
            t = pd.Timestamp(r[0], tz="UTC")
            r = r[1:]
        idx.append(t)
        vals.append(r)
        t += pd.Timedelta(days=1)
    return pd.DataFrame(vals, index=pd.DatetimeIndex(idx, name="timestamp"),
                        columns=["open", "high", "low", "close", "volume"], dtype="float64")


GOOD = (10.0, 12.0, 9.0, 11.0, 5.0)


def test_clean_frame_passes() -> None:
    df, rep = validate(frame([GOOD] * 5), "1d", source="x.csv")
    assert len(df) == 5 and rep.rows_changed == 0 and rep.duplicates_dropped == 0


CASES = [
    # (rows, message, repair key, repaired count)
    ([GOOD, ("2021-01-05", *GOOD), ("2021-01-03", *GOOD), ("2021-01-04", *GOOD)], "rows are not sorted by time at 2021-01-03", "rows sorted", 1),
    ([GOOD, GOOD, ("2021-01-05", *GOOD)], "missing 1d bars at 2021-01-03T00:00:00\\+00:00 \\(2 rows\\)", "missing bars filled", 2),
    ([GOOD, (10.0, 12.0, 9.0, np.nan, 5.0), GOOD], "NaN values at 2021-01-02", "NaN rows filled", 1),
    ([GOOD, (10.0, 12.0, 9.0, 0.0, 5.0), GOOD, (10.0, 12.0, 9.0, -1.0, 5.0)], "non-positive prices at 2021-01-02T00:00:00\\+00:00 \\(2 rows\\)", "non-positive prices replaced", 2),
    ([GOOD, (10.0, 8.0, 9.0, 8.5, 5.0), GOOD], "high < low or open/close outside \\[low, high\\] at 2021-01-02", "high/low widened", 1),
    ([GOOD, (10.0, 12.0, 9.0, 13.0, 5.0), GOOD], "high < low or open/close outside", "high/low widened", 1),
    ([GOOD, (10.0, 12.0, 9.0, 11.0, 0.0), GOOD], "zero volume at 2021-01-02", "zero-volume bars accepted", 1),
]


@pytest.mark.parametrize("rows,message,key,count", CASES)
def test_bad_input_is_one_line_error(rows, message, key, count) -> None:
    with pytest.raises(DataError, match=message) as err:
        validate(frame(rows), "1d", source="prices.csv")
    assert str(err.value).startswith("prices.csv: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("rows,message,key,count", CASES)
def test_ffill_repair_reports_count(rows, message, key, count) -> None:
    df, rep = validate(frame(rows), "1d", source="prices.csv", repair="ffill", max_repair_fraction=1.0)
    assert rep.repairs[key] == count
    # inserted and price-replaced bars are synthetic (never traded on); sorting, widening, zero volume are not
    synthetic_kinds = ("missing bars filled", "NaN rows filled", "non-positive prices replaced")
    assert rep.synthetic is not None and rep.synthetic.index.equals(df.index) and rep.synthetic.dtype == bool
    assert rep.synthetic_bars == sum(rep.repairs.get(k, 0) for k in synthetic_kinds)  # (case 0 also has a gap)
    assert rep.synthetic_bars >= (count if key in synthetic_kinds else 0)
    assert not rep.synthetic[frame(rows).index.intersection(df.index)].any() or key in synthetic_kinds
    validate(df, "1d", source="again", repair="ffill", max_repair_fraction=1.0)  # the repaired frame is valid
    assert df.index.is_monotonic_increasing and df.index.is_unique
    assert (df[["open", "high", "low", "close"]] > 0).all().all()


def test_ffill_fills_from_previous_close() -> None:
    df, _ = validate(frame([GOOD, GOOD, ("2021-01-04", *GOOD)]), "1d", source="x", repair="ffill", max_repair_fraction=1.0)
    gap = df.loc[pd.Timestamp("2021-01-03", tz="UTC")]
    assert gap[["open", "high", "low", "close"]].tolist() == [11.0] * 4 and gap["volume"] == 0


def test_identical_duplicates_dropped_and_counted() -> None:
    df, rep = validate(frame([GOOD, ("2021-01-02", *GOOD), ("2021-01-02", *GOOD), ("2021-01-02", *GOOD)]), "1d", source="x")
    assert len(df) == 2 and rep.duplicates_dropped == 2


def test_conflicting_duplicates_are_an_error_even_with_repair() -> None:
    rows = [GOOD, ("2021-01-02", *GOOD), ("2021-01-02", 10.0, 12.0, 9.0, 10.5, 5.0)]
    for repair in ("none", "ffill"):
        with pytest.raises(DataError, match="conflicting duplicate timestamps at 2021-01-02"):
            validate(frame(rows), "1d", source="x", repair=repair)


def test_off_grid_timestamp_and_unknown_repair() -> None:
    df = frame([GOOD, GOOD])
    df.index = pd.DatetimeIndex([df.index[0], df.index[1] + pd.Timedelta(hours=3)], name="timestamp")
    with pytest.raises(DataError, match="off the 1d grid"):
        validate(df, "1d", source="x", repair="ffill", max_repair_fraction=1.0)
    with pytest.raises(DataError, match="repair 'bfill' is not known; allowed: none, ffill"):
        validate(frame([GOOD]), "1d", source="x", repair="bfill")
