"""Shared fixtures. Data files used here:

* the bundled Binance BTC/USDT daily candles (2017-08-17 .. 2025-08-26, 2,932 bars);
* small CSVs written by the tests themselves (daily bars, a few days each).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Ray test clusters stay on 127.0.0.1: with this, Ray takes the loopback address as the node address instead of
# the machine's interface address (read when ray is first imported, so it is set before any test imports it).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pandas as pd
import pytest

from backtest.config import DataConfig
from backtest.data.load import load_data


@pytest.fixture(scope="session")
def btc() -> pd.DataFrame:
    """The bundled daily BTC/USDT frame (validated)."""
    return load_data(DataConfig()).bars


#: A tiny real run (bundled daily BTC/USDT 2020-01-01 .. 2021-02-04, ~400 bars; 200 initial training bars,
#: 50-bar steps): linear, persistence and a 4-unit LSTM (2 epochs); a long/flat strategy with threshold 0
#: so it trades, a vote ensemble, and the three baselines.
TINY_RUN_TOML = """
[data]
start = "2020-01-01"
end = "2021-02-05"
[features]
lookback = 8
[walkforward]
initial_train = 200
step = 50
[models.lstm]
type = "lstm"
units = 4
epochs = 2
patience = 1
[models.linear]
type = "linear"
[models.persistence]
type = "persistence"
[strategies.lf]
type = "long_flat"
threshold = 0.0
[strategies.ens]
type = "ensemble"
method = "vote"
threshold = 0.0
[backtest]
bootstrap_samples = 200
[run]
name = "tiny_real"
"""


@pytest.fixture(scope="session")
def tiny_real_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished run directory made once per session by the real pipeline (metrics.json, equity.csv, ...)."""
    from backtest.config import load_config
    from backtest.pipeline import run_all

    base = tmp_path_factory.mktemp("tiny_real")
    conf = base / "tiny.toml"
    conf.write_text(TINY_RUN_TOML)
    return run_all(load_config(conf, []), base / "runs")
