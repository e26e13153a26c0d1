"""Shared fixtures. Data files used here:

* the bundled Binance BTC/USDT daily candles (2017-08-17 .. 2025-08-26, 2,932 bars);
* small CSVs written by the tests themselves (daily bars, a few days each).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pandas as pd
import pytest

from backtest.config import DataConfig
from backtest.data.load import load_data


@pytest.fixture(scope="session")
def btc() -> pd.DataFrame:
    """The bundled daily BTC/USDT frame (validated)."""
    return load_data(DataConfig()).bars
