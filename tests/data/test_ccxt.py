"""ccxt download, pagination, retries and the Parquet cache, against a local Binance emulator.

No test touches the network: every exchange call goes to ``tests.emulator`` on 127.0.0.1.
Back-off sleeps are recorded, not slept.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from backtest.data import cache as cache_mod
from backtest.data.cache import cache_path, default_cache_dir, read_cache, write_cache
from backtest.data.ccxt_source import (
    fetch_ohlcv_frame,
    make_exchange,
    override_base_url,
    rows_to_frame,
    update_cache,
)
from backtest.errors import ConfigError, DataError, ExchangeError
from tests.emulator import ExchangeEmulator

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "backtest" / "data" / "bundled" / "BTC_USDT_1d.csv"
DAY = pd.Timedelta(days=1)
SINCE = pd.Timestamp("2017-01-01", tz="UTC")
MS = pd.Timedelta(milliseconds=1)


def _ms(ts: pd.Timestamp) -> int:
    return int((ts - pd.Timestamp(0, tz="UTC")) // MS)


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    """The 2,932 bundled daily BTC/USDT bars in the frame convention."""
    frame = pd.read_csv(BUNDLED, index_col="timestamp", parse_dates=["timestamp"])
    frame.index = pd.DatetimeIndex(frame.index).tz_localize("UTC").rename("timestamp")
    return frame.astype("float64")


@pytest.fixture
def emu(source: pd.DataFrame) -> Iterator[ExchangeEmulator]:
    """An emulator with every bundled bar complete, 500 bars per page."""
    with ExchangeEmulator(source, now=source.index[-1] + DAY, max_limit=500, timeout_sleep_s=2.0) as e:
        yield e


class Sleeps(list):
    """Records the back-off sleeps instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _update(emu: ExchangeEmulator, cache_dir: Path, sleeps: Sleeps | None = None, **kw):
    return update_cache(
        "binance", "BTC/USDT", "1d", cache_dir=cache_dir, now=emu.now, base_url=emu.url,
        timeout_ms=500, sleep=sleeps if sleeps is not None else Sleeps(), **kw,
    )


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_freq=False)
    assert str(got.index.tz) == "UTC" and got.index.name == "timestamp"
    assert got.index.is_unique and got.index.is_monotonic_increasing
    assert list(got.dtypes) == ["float64"] * 5


def _seed_cache(emu: ExchangeEmulator, source: pd.DataFrame, cache_dir: Path, bars: int) -> Path:
    """A cache holding the first ``bars`` bars, as downloaded at the close of bar ``bars - 1``."""
    emu.now = source.index[bars]
    frame, new = _update(emu, cache_dir)
    assert new == bars
    emu.now = source.index[-1] + DAY
    emu.clear_log()
    return cache_path(cache_dir, "binance", "BTC/USDT", "1d")


# ------------------------------------------------------------------ pagination
def test_many_pages_download_equals_source(emu, source, tmp_path):
    frame, new = _update(emu, tmp_path, since=SINCE)
    _assert_same(frame, source)
    assert new == len(source) == 2932
    starts = [int(p["startTime"]) for p in emu.klines_requests()]
    assert len(starts) == 6  # ceil(2932 / 500) pages, no extra request after the last bar
    assert starts[0] == _ms(SINCE)
    assert starts[1:] == [_ms(source.index[500 * k]) for k in range(1, 6)]
    _assert_same(read_cache(cache_path(tmp_path, "binance", "BTC/USDT", "1d")), source)


def test_fetch_respects_until_and_page_limit(emu, source):
    ex = emu.make_exchange()
    until = source.index[1234]
    frame = fetch_ohlcv_frame(ex, "BTC/USDT", "1d", since=source.index[100], until=until,
                              now=emu.now, sleep=Sleeps(), limit=200)
    _assert_same(frame, source.iloc[100:1234])
    reqs = emu.klines_requests()
    assert {p["limit"] for p in reqs} == {"200"}
    assert len(reqs) == 6  # 1134 bars / 200 per page


def test_overlapping_pages_are_deduplicated(source, tmp_path):
    with ExchangeEmulator(source, now=source.index[-1] + DAY, max_limit=500, overlap=7) as emu:
        frame, new = _update(emu, tmp_path)
        starts = [int(p["startTime"]) for p in emu.klines_requests()]
    _assert_same(frame, source)
    assert new == len(source)
    # each page after the first re-sent the 7 bars before its startTime
    assert len(starts) == 6 and starts[1] == _ms(source.index[500])


def test_rows_to_frame_keeps_the_last_copy_of_a_repeated_candle():
    t0, t1 = 1_600_000_000_000, 1_600_086_400_000
    rows = [[t0, 1, 2, 0.5, 1.5, 10], [t1, 1.5, 3, 1, 2, 20], [t1, 1.5, 3, 1, 2.5, 25], [t0, 1, 2, 0.5, 1.6, 11]]
    frame = rows_to_frame(rows)
    assert list(frame["close"]) == [1.6, 2.5]
    assert list(frame["volume"]) == [11.0, 25.0]
    assert frame.index.is_unique and str(frame.index.tz) == "UTC"


def test_open_last_candle_is_dropped_then_completed(emu, source, tmp_path):
    emu.now = source.index[-1] + pd.Timedelta(hours=12)  # the last bar is half-way through
    status, served = emu.klines({"symbol": "BTCUSDT", "interval": "1d",
                                 "startTime": str(_ms(source.index[-2])), "limit": "10"})
    assert status == 200 and [k[0] for k in served] == [_ms(source.index[-2]), _ms(source.index[-1])]
    assert float(served[-1][4]) != source["close"].iloc[-1]  # the forming candle's close is not final

    frame, new = _update(emu, tmp_path)
    _assert_same(frame, source.iloc[:-1])
    assert new == len(source) - 1

    emu.now = source.index[-1] + DAY  # the bar closes
    frame, new = _update(emu, tmp_path)
    assert new == 1
    _assert_same(frame, source)


# ------------------------------------------------------------------ incremental cache
def test_incremental_update_asks_only_for_new_bars(emu, source, tmp_path):
    _seed_cache(emu, source, tmp_path, bars=2000)
    frame, new = _update(emu, tmp_path)
    assert new == len(source) - 2000
    _assert_same(frame, source)
    first = emu.klines_requests()[0]
    assert int(first["startTime"]) == _ms(source.index[1999] + DAY)
    assert len(emu.klines_requests()) == 2  # 932 bars at 500 a page

    emu.clear_log()
    frame, new = _update(emu, tmp_path)  # nothing new has closed: no request at all
    assert new == 0 and emu.requests == []
    _assert_same(frame, source)


def test_update_cache_restricts_to_since_until(emu, source, tmp_path):
    since, until = source.index[10], source.index[20]
    frame, new = _update(emu, tmp_path, since=since, until=until)
    _assert_same(frame, source.iloc[10:20])
    assert new == 10
    frame, new = _update(emu, tmp_path, since=source.index[5], until=until)  # head backfill only
    assert new == 5
    assert int(emu.klines_requests()[-1]["startTime"]) == _ms(source.index[5])
    _assert_same(frame, source.iloc[5:20])


# ------------------------------------------------------------------ retries and failures
def test_429_then_success(emu, source, tmp_path):
    emu.add_faults("429")
    sleeps = Sleeps()
    frame, _ = _update(emu, tmp_path, sleeps, backoff_base=1.0)
    _assert_same(frame, source)
    assert sleeps == [1.0]
    assert len(emu.klines_requests()) == 7  # the refused page was asked again


def test_timeout_then_success(emu, source, tmp_path):
    emu.add_faults("timeout", "timeout")
    sleeps = Sleeps()
    frame, _ = _update(emu, tmp_path, sleeps, backoff_base=0.5)
    _assert_same(frame, source)
    assert sleeps == [0.5, 1.0]


def test_5xx_that_never_recovers_leaves_cache_unchanged(emu, source, tmp_path):
    path = _seed_cache(emu, source, tmp_path, bars=1000)
    before = path.read_bytes()
    emu.always_status = 500
    sleeps = Sleeps()
    with pytest.raises(ExchangeError) as err:
        _update(emu, tmp_path, sleeps, max_retries=5, backoff_base=1.0)
    msg = str(err.value)
    assert "\n" not in msg
    assert "binance" in msg and "BTC/USDT" in msg and "6 tries" in msg and "ExchangeNotAvailable" in msg
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert len(emu.klines_requests()) == 6
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_failure_on_a_later_page_writes_nothing(emu, source, tmp_path):
    # the third page fails for good: the first two pages must not reach the cache
    calls = {"n": 0}
    original = emu.klines

    def failing(params):
        calls["n"] += 1
        return (503, {"code": -1, "msg": "down"}) if calls["n"] >= 3 else original(params)

    emu.klines = failing
    with pytest.raises(ExchangeError):
        _update(emu, tmp_path, max_retries=1)
    assert not cache_path(tmp_path, "binance", "BTC/USDT", "1d").exists()


@pytest.mark.parametrize("fault", ["garbage", "badshape"])
def test_garbage_answer_is_an_exchange_error_and_cache_unchanged(emu, source, tmp_path, fault):
    path = _seed_cache(emu, source, tmp_path, bars=1500)
    before = path.read_bytes()
    emu.add_faults(fault)
    with pytest.raises(ExchangeError) as err:
        _update(emu, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "binance BTC/USDT 1d" in msg and "BadResponse" in msg
    assert path.read_bytes() == before
    assert len(emu.klines_requests()) == 1  # garbage is not retried


def test_unknown_exchange_id_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a ccxt exchange"):
        make_exchange("notanexchange")
    with pytest.raises(ConfigError, match="not a ccxt exchange"):
        update_cache("notanexchange", "BTC/USDT", "1d", cache_dir=tmp_path,
                     now=pd.Timestamp("2024-01-01", tz="UTC"))


def test_unknown_symbol_and_timeframe_are_config_errors(emu):
    ex = emu.make_exchange()
    with pytest.raises(ConfigError, match="'DOGE/EUR' is not a market"):
        fetch_ohlcv_frame(ex, "DOGE/EUR", "1d", since=SINCE, until=None, now=emu.now, sleep=Sleeps())
    with pytest.raises(ConfigError, match="timeframe"):
        fetch_ohlcv_frame(ex, "BTC/USDT", "7m", since=SINCE, until=None, now=emu.now, sleep=Sleeps())
    assert emu.klines_requests() == []


def test_base_url_rewrites_every_binance_api_url():
    real = make_exchange("binance").urls["api"]
    ex = make_exchange("binance", base_url="http://127.0.0.1:9/")
    api = ex.urls["api"]
    assert api["public"] == "http://127.0.0.1:9/api/v3"
    assert api["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
    assert set(api) == set(real) and all(v.startswith("http://127.0.0.1:9/") for v in api.values())
    assert override_base_url({"a": ["https://x.io/p?q=1", 5]}, "https://h:1/pre") == {"a": ["https://h:1/pre/p?q=1", 5]}
    with pytest.raises(ConfigError, match="base_url"):
        make_exchange("binance", base_url="127.0.0.1:9")


def test_progress_bar_goes_to_stderr(emu, source, capsys):
    fetch_ohlcv_frame(emu.make_exchange(), "BTC/USDT", "1d", since=source.index[-100], until=None,
                      now=emu.now, sleep=Sleeps(), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "bar" in err


# ------------------------------------------------------------------ the cache file
def test_cache_path_is_safe_and_default_dir_is_per_user(tmp_path):
    assert cache_path(tmp_path, "binance", "BTC/USDT", "1d") == tmp_path / "binance" / "BTC-USDT_1d.parquet"
    assert cache_path(tmp_path, "binance", "BTC/USDT:USDT", "4h").name == "BTC-USDT-USDT_4h.parquet"
    assert cache_path(tmp_path, "kraken", "../../etc/x", "1d").parent == tmp_path / "kraken"
    with pytest.raises(ConfigError):
        cache_path(tmp_path, "../evil", "BTC/USDT", "1d")
    assert default_cache_dir().parts[-2:] == ("walkforward", "candles")


def test_cache_round_trip_and_absent_file(source, tmp_path):
    path = tmp_path / "x" / "BTC-USDT_1d.parquet"
    assert read_cache(path) is None
    write_cache(path, source)
    _assert_same(read_cache(path), source)


def test_corrupt_cache_is_a_data_error(source, tmp_path):
    path = cache_path(tmp_path, "binance", "BTC/USDT", "1d")
    write_cache(path, source)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # torn by something other than us
    with pytest.raises(DataError) as err:
        read_cache(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    with pytest.raises(DataError):  # and update_cache refuses it before any download
        update_cache("binance", "BTC/USDT", "1d", cache_dir=tmp_path, now=source.index[-1] + DAY,
                     base_url="http://127.0.0.1:9")
    path.write_text("timestamp,open\n1,2\n")
    with pytest.raises(DataError, match="unreadable"):
        read_cache(path)


def test_write_failing_half_way_keeps_previous_cache(source, tmp_path, monkeypatch):
    path = tmp_path / "BTC-USDT_1d.parquet"
    write_cache(path, source.iloc[:100])
    before = path.read_bytes()

    def torn(frame: pd.DataFrame, target: Path) -> None:
        target.write_bytes(b"PAR1" + b"\0" * 1000)  # partial bytes, then the writer dies
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod, "_write_parquet", torn)
    with pytest.raises(OSError):
        write_cache(path, source)
    assert path.read_bytes() == before
    _assert_same(read_cache(path), source.iloc[:100])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_write_killed_half_way_keeps_previous_cache(source, tmp_path):
    """A writer SIGKILLed in the middle of the Parquet file leaves the old cache intact."""
    path = tmp_path / "BTC-USDT_1d.parquet"
    write_cache(path, source.iloc[:100])
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import sys, time
        import pandas as pd
        from backtest.data import cache
        real = cache._write_parquet
        def slow(frame, target):
            real(frame, target)
            data = target.read_bytes()
            target.write_bytes(data[: len(data) // 2])  # half the file is on disk
            print("half", flush=True)
            time.sleep(60)
        cache._write_parquet = slow
        idx = pd.date_range("2017-01-01", periods=500, freq="D", tz="UTC", name="timestamp")
        frame = pd.DataFrame(1.0, index=idx, columns=["open", "high", "low", "close", "volume"])
        cache.write_cache({str(path)!r}, frame)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    _assert_same(read_cache(path), source.iloc[:100])
