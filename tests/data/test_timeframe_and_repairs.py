"""Issue 8 (data): a file's timeframe is inferred or checked, ffill repairs are capped and marked synthetic,
hints name what the user types, numeric timestamps in seconds, header-only files.

Data files are written per test: hourly or 2-hourly bars from 2021-01-01 (UTC), a few hundred rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.cli import main
from backtest.config import DataConfig
from backtest.data.frame import periods_per_year
from backtest.data.load import load_data, load_source
from backtest.errors import DataError


def bars_csv(path: Path, n: int, freq: str, *, drop: tuple[int, ...] = (), nan_close: tuple[int, ...] = (),
             unit: str | None = None) -> Path:
    """``n`` bars every ``freq`` from 2021-01-01, rows ``drop`` left out, close of rows ``nan_close`` empty;
    ``unit`` = "s"/"ms" writes the timestamp as a number since the epoch instead of ISO text."""
    idx = pd.date_range("2021-01-01", periods=n, freq=freq, tz="UTC")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, n)))
    df = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0}, index=idx)
    df.loc[idx[list(nan_close)], "close"] = np.nan
    df = df.drop(idx[list(drop)])
    epoch = pd.Timestamp(0, tz="UTC")
    ts = (df.index - epoch) // pd.Timedelta(1, unit=unit) if unit else df.index.strftime("%Y-%m-%dT%H:%M:%S")
    df.insert(0, "timestamp", ts)
    df.to_csv(path, index=False)
    return path


def test_two_hour_file_run_with_1h_is_refused_naming_both(tmp_path) -> None:
    p = bars_csv(tmp_path / "prices.csv", 120, "2h")
    with pytest.raises(DataError, match=f"^data.timeframe = '1h' but {p} has 2h bars; set data.timeframe = '2h'") as err:
        load_data(DataConfig(source="file", path=str(p), timeframe="1h", repair="ffill"))
    assert "\n" not in str(err.value)
    data = load_data(DataConfig(source="file", path=str(p)))  # unset: inferred from the file
    assert data.timeframe == "2h" and periods_per_year(data.timeframe) == 4380 and data.synthetic_bars == 0
    assert load_data(DataConfig(source="file", path=str(p), timeframe="2h")).timeframe == "2h"
    assert load_data(DataConfig(source="bundled")).timeframe == "1d"


def test_data_show_names_its_own_flags(tmp_path, capsys) -> None:
    p = bars_csv(tmp_path / "prices.csv", 120, "2h")
    assert main(["data", "show", str(p), "--timeframe", "1h"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--timeframe 1h but {p} has 2h bars; use --timeframe 2h" in err[0]
    gap = bars_csv(tmp_path / "gap.csv", 300, "1h", drop=(100,))
    assert main(["data", "show", str(gap)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing 1h bars" in err[0] and "use --repair ffill" in err[0]
    assert main(["data", "show", str(gap), "--repair", "ffill"]) == 0
    assert "synthetic bars         1" in capsys.readouterr().out


def test_run_hint_is_a_set_override(tmp_path) -> None:
    gap = bars_csv(tmp_path / "gap.csv", 300, "1h", drop=(100,))
    with pytest.raises(DataError, match="missing 1h bars at 2021-01-05T04:00:00\\+00:00 \\(1 rows\\); use --set data.repair=ffill"):
        load_data(DataConfig(source="file", path=str(gap)))  # what walkforward run / paper run call


def test_ffill_is_capped_and_marks_synthetic_bars(tmp_path) -> None:
    p = bars_csv(tmp_path / "gaps.csv", 200, "1h", drop=(50, 51, 52), nan_close=(120,))  # 4 of 200 = 2%
    cfg = DataConfig(source="file", path=str(p), repair="ffill")
    with pytest.raises(DataError, match="repair ffill would make 4 of 200 bars synthetic \\(2.0%\\), above "
                                        "data.max_repair_fraction = 0.01 \\(1.0%\\)") as err:
        load_data(cfg)
    assert "--set data.max_repair_fraction=0.020" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="allow it with --max-repair-fraction 0.020"):
        load_source(str(p), repair="ffill")
    data = load_data(cfg.model_copy(update={"max_repair_fraction": 0.05}))
    idx = pd.date_range("2021-01-01", periods=200, freq="1h", tz="UTC")
    assert data.synthetic.index.equals(data.bars.index) and data.synthetic.dtype == bool
    assert list(data.synthetic[data.synthetic].index) == [idx[50], idx[51], idx[52], idx[120]]
    assert data.synthetic_bars == 4 and data.report.repairs["missing bars filled"] == 3


@pytest.mark.parametrize("unit", ["s", "ms"])
def test_numeric_timestamps_in_seconds_or_milliseconds(tmp_path, unit) -> None:
    p = bars_csv(tmp_path / "num.csv", 50, "1h", unit=unit)
    data = load_source(str(p))
    assert data.bars.index[0] == pd.Timestamp("2021-01-01", tz="UTC") and data.timeframe == "1h"
    # every bar, not just the first: the same frame as the file written with ISO timestamps
    iso = load_source(str(bars_csv(tmp_path / "iso.csv", 50, "1h")))
    assert data.bars.index.equals(pd.date_range("2021-01-01", periods=50, freq="1h", tz="UTC"))
    pd.testing.assert_frame_equal(data.bars, iso.bars, check_freq=False)


@pytest.mark.parametrize("text,match", [
    ("timestamp,close\n20210101,1\n20210102,2\n", "numeric timestamp '20210101' at data row 1 is not seconds \\(1e8..1e11\\) or milliseconds"),
    ("timestamp,close\n1609459200,1\n1609462800000,2\n", "numeric timestamp '1609459200' at data row 1 .* mixes both"),
    ("timestamp,open,high,low,close,volume\n", "no rows \\(only a header\\)"),
])
def test_bad_numeric_timestamps_and_header_only(tmp_path, text, match) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_source(str(p))
    assert str(err.value).startswith(f"{p}: ") and "\n" not in str(err.value)
