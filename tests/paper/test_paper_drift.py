"""The drift monitor: the return band from the backtest's out-of-sample returns, the forecast-error test,
and an account whose live returns fall far below the backtest's raising the alarm (page data, status)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.config import DriftConfig
from backtest.paper.drift import (
    Band, check_band, check_forecasts, drift_report, read_backtest, return_band,
)
from backtest.paper.readonly import read_snapshot
from backtest.paper.status import status_text
from tests.emulator import ExchangeEmulator
from tests.paper.helpers import T0, bar_close
from tests.paper.monitor_helpers import crashing, monitor_config, replay


def test_band_covers_paths_of_the_same_process_at_its_level():
    """Paths drawn from the process the backtest came from end outside a 90% band about 10% of the time."""
    rng = np.random.default_rng(1)
    backtest = rng.normal(0.001, 0.03, 2000)
    n = 30
    band = return_band(backtest, n, DriftConfig(level=0.10, samples=2000, block_bars=2.0))
    assert isinstance(band, Band) and band.lower[0] == band.upper[0] == 0.0
    assert np.all(np.diff(band.upper[1:] - band.lower[1:]) > -0.01)  # the band widens with the horizon
    live = np.cumprod(1 + rng.normal(0.001, 0.03, (1000, n - 1)), axis=1)[:, -1] - 1
    outside = np.mean((live < band.lower[-1]) | (live > band.upper[-1]))
    assert 0.05 < outside < 0.16


def test_band_needs_enough_backtest_history():
    msg = return_band(np.full(50, 0.001), 20, DriftConfig(min_backtest_bars=100))
    assert isinstance(msg, str) and "too little backtest history for a band: 50 out-of-sample bars, 100 needed" in msg
    msg = return_band(np.full(150, 0.001), 200, DriftConfig(min_backtest_bars=100))
    assert isinstance(msg, str) and "199 needed" in msg and "paper period 200 bars" in msg


def test_below_the_band_since_the_first_bar_of_the_current_run_outside():
    times = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")
    band = Band(np.zeros(6) - 0.1, np.zeros(6), np.zeros(6) + 0.1, 0.05, 100, 2.0, 500)
    cum = np.array([0.0, -0.2, 0.0, -0.15, -0.3, -0.4])  # out at bar 1, back in at 2, out again from bar 3
    c = check_band("x", times, cum, band)
    assert c.state == "below" and c.since == times[3]
    assert c.message.startswith("below the band since 2024-01-04 (cumulative return -40.00% after 6 bars; 95% band "
                                "-10.00% .. +10.00% from 500 backtest bars)")
    assert check_band("x", times, np.zeros(6), band).message.startswith("inside the band (cumulative return +0.00%")
    assert check_band("x", times, np.full(6, 0.2), band).state == "above"


def test_forecast_test_flags_live_errors_far_worse_than_the_backtest():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 0.03, 600)
    bt = pd.DataFrame({"y_true": y, "y_pred": 0.3 * y + rng.normal(0, 0.02, 600)})
    y_live = rng.normal(0, 0.03, 30)
    cfg = DriftConfig()
    same = check_forecasts("m", pd.DataFrame({"y_true": y_live, "y_pred": 0.3 * y_live + rng.normal(0, 0.02, 30)}), bt, cfg)
    assert same.state == "in line" and same.p_worse > cfg.level / 2
    worse = check_forecasts("m", pd.DataFrame({"y_true": y_live, "y_pred": -2 * y_live}), bt, cfg)
    assert worse.state == "worse" and worse.p_worse < cfg.level / 2 and worse.live_ratio > 5
    assert worse.message.startswith("m forecasts worse than the backtest: MSE / persistence")
    few = check_forecasts("m", pd.DataFrame({"y_true": y_live[:3], "y_pred": y_live[:3]}), bt, cfg)
    assert few.state == "not enough data" and "3 live outcomes (5 needed)" in few.message


@pytest.fixture
def crashed_account(source, tmp_path, backtest_run):
    """A paper account (2020 bars) whose market falls 6% a bar from its first decision on, caught up 25 bars;
    the drift monitor points at the 2018 backtest of the same config."""
    frame = crashing(source, T0 + 1)
    with ExchangeEmulator(frame, now=bar_close(frame, T0)) as emu:
        cfg = monitor_config(emu.url, tmp_path, drift={"run_dir": str(backtest_run)})
        trader, res = replay(cfg, emu, frame, T0 + 25)
        assert len(res.processed) == 25
    return cfg, trader.paths.ledger


def test_live_returns_far_below_the_backtest_raise_the_drift_alarm(crashed_account, backtest_run):
    cfg, ledger = crashed_account
    snap = read_snapshot(ledger)
    report = drift_report(snap, cfg.paper.drift)
    bands = {b.portfolio: b for b in report.bands}
    assert set(bands) == set(snap.account.labels)
    bh = bands["buy_and_hold"]
    # the numbers the verdict rests on, recomputed here from the ledger and the run
    cum = snap.equity["buy_and_hold"].to_numpy() / snap.account.init_cash - 1
    assert bh.cum_return == pytest.approx(cum[-1]) and cum[-1] < -0.7
    bt = read_backtest(backtest_run, 0)
    band = return_band(bt.returns["buy_and_hold"].to_numpy(), len(cum), cfg.paper.drift)
    first_out = int(np.argmax(cum < band.lower))
    assert (cum[first_out:] < band.lower[first_out:]).all()
    assert bh.state == "below" and bh.since == snap.equity.index[first_out]
    assert bh.lower == pytest.approx(band.lower[-1]) and band.lower[-1] > -0.7
    assert any(a.startswith("buy_and_hold: below the band since") for a in report.alarms())
    assert bands["always_flat"].state == "inside"  # never in the market: return 0, inside its (zero) band
    assert not report.notes  # 2018 backtest, 2020 paper: no overlap

    text = status_text(cfg)
    assert f"drift (live against the backtest run {backtest_run}, 95% band of cumulative return):" in text
    assert f"  buy_and_hold: below the band since {bh.since:%Y-%m-%d} (cumulative return {cum[-1]:+.2%}" in text
    assert "  always_flat: inside the band" in text


def test_without_a_backtest_run_the_monitor_says_so(emu, source, tmp_path):
    cfg = monitor_config(emu.url, tmp_path)
    replay(cfg, emu, source, T0 + 2)
    assert "drift: no backtest to compare with: set paper.drift.run_dir" in status_text(cfg)
    cfg2 = monitor_config(emu.url, tmp_path, drift={"run_dir": str(tmp_path / "nope")})
    assert f"drift: drift monitor off: {tmp_path / 'nope'}: run directory not found" in status_text(cfg2)
