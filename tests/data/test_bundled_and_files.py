"""The bundled dataset, file formats, and the `data show` command."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pandas as pd
import pytest

from backtest.cli import main
from backtest.data.files import read_ohlcv_file
from backtest.data.load import bundled_path, load_source, summary
from backtest.errors import DataError

SHA = "393e577a9ac520df4c40f86e3f332d874582b12d7c6bdcddfd9214fbdcf57119"


def test_bundled_loads_and_validates(btc: pd.DataFrame) -> None:
    assert len(btc) == 2932
    assert btc.index[0] == pd.Timestamp("2017-08-17", tz="UTC")
    assert btc.index[-1] == pd.Timestamp("2025-08-26", tz="UTC")
    assert btc.index.name == "timestamp" and str(btc.index.tz) == "UTC"
    assert list(btc.columns) == ["open", "high", "low", "close", "volume"]
    assert all(str(t) == "float64" for t in btc.dtypes)
    assert hashlib.sha256(bundled_path().read_bytes()).hexdigest() == SHA
    assert (bundled_path().parent / "README.md").read_text().count("Binance") >= 1
    # spot checks against the public record (README of the dataset)
    assert btc.loc["2020-03-12", "close"].item() == 4800.00
    assert btc.loc["2021-11-10", "high"].item() == 69000.00


def test_data_show_default_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "show"]) == 0
    out = capsys.readouterr().out
    for text in ("2932", "2017-08-17", "2025-08-26", "1d", "gaps (missing bars)    0", "123,306.43"):
        assert text in out


def test_help_is_fast_and_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "backtest.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("data", "run", "compare", "sweep", "predict", "paper"):
        assert cmd in out
    mods = subprocess.run([sys.executable, "-c", "import backtest.cli, sys; print('tensorflow' in sys.modules, 'vectorbt' in sys.modules)"],
                          capture_output=True, text=True, check=True).stdout
    assert mods.strip() == "False False"


def _write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yahoo_and_close_only_and_ms_and_parquet(tmp_path, btc: pd.DataFrame) -> None:
    yahoo = _write(tmp_path, "y.csv", "Date,Open,High,Low,Close,Adj Close,Volume\n"
                   "2021-01-01,10,12,9,11,11,100\n2021-01-02,11,13,10,12,12,110\n2021-01-03,12,12.5,11,11.5,11.5,90\n")
    d = load_source(str(yahoo))
    assert d.timeframe == "1d" and d.bars["close"].tolist() == [11, 12, 11.5]
    close_only = _write(tmp_path, "c.csv", "Date,Close\n2021-01-01,100\n2021-01-02,110\n2021-01-03,99\n")
    c = load_source(str(close_only))
    assert c.bars["open"].tolist() == [100, 100, 110]  # open = previous close
    assert c.bars["high"].tolist() == [100, 110, 110] and c.bars["volume"].isna().all()
    ms = _write(tmp_path, "m.csv", "timestamp,open,high,low,close,volume\n"
                "1609459200000,1,2,0.5,1.5,3\n1609545600000,1.5,2,1,1.2,4\n")
    assert load_source(str(ms)).bars.index[1] == pd.Timestamp("2021-01-02", tz="UTC")
    pq = tmp_path / "b.parquet"
    btc.iloc[:50].to_parquet(pq)
    assert load_source(str(pq)).bars.equals(btc.iloc[:50])


@pytest.mark.parametrize("text,match", [
    ("foo,bar\n1,2\n", "no time column"),
    ("timestamp,open,high,low,close,volume\nnot-a-date,1,2,0.5,1.5,3\n", "unparseable timestamp 'not-a-date' at data row 1"),
    ("timestamp,open,high,low,close,volume\n2021-01-01,1,2,0.5,abc,3\n", "non-numeric close 'abc' at 2021-01-01"),
    ("timestamp,open,close\n2021-01-01,1,2\n", "missing column"),
    ("\x00\x01\x02", "cannot be read as CSV|no time column"),
])
def test_malformed_csv_is_one_line_error(tmp_path, text: str, match: str) -> None:
    p = _write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError, match=match) as err:
        read_ohlcv_file(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)


def test_cli_bad_file_exit_2_no_traceback(tmp_path) -> None:
    p = _write(tmp_path, "bad.csv", "timestamp,open,high,low,close,volume\n2021-01-01,1,2,0.5,abc,3\n")
    res = subprocess.run([sys.executable, "-m", "backtest.cli", "data", "show", str(p)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    assert "non-numeric close" in res.stderr


def test_summary_counts_filled_gaps(tmp_path) -> None:
    p = _write(tmp_path, "gap.csv", "timestamp,open,high,low,close,volume\n"
               "2021-01-01,1,2,0.5,1.5,3\n2021-01-04,1.5,2,1,1.2,4\n")
    s = summary(load_source(str(p), timeframe="1d", repair="ffill", max_repair_fraction=0.5))
    assert s["gaps"] == 2 and s["rows"] == 4
