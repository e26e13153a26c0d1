"""Fixtures of the paper-trading tests: the bundled-data slice and a local exchange emulator.

No test touches the network: every exchange call goes to ``tests.emulator`` on 127.0.0.1.
"""
from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from backtest.paper.logs import configure_logging
from tests.emulator import ExchangeEmulator
from tests.paper.helpers import T0, bar_close, load_source


@pytest.fixture(scope="session")
def source() -> pd.DataFrame:
    """400 daily BTC/USDT bars from 2020-01-01 (bundled data)."""
    return load_source()


@pytest.fixture
def emu(source: pd.DataFrame) -> Iterator[ExchangeEmulator]:
    """An emulator whose clock is at the close of bar ``T0`` (the first paper decision)."""
    with ExchangeEmulator(source, now=bar_close(source, T0), timeout_sleep_s=1.0) as e:
        yield e


@pytest.fixture(autouse=True)
def _quiet_paper_logger() -> Iterator[None]:
    """No log file from a previous test leaks into the next one."""
    yield
    configure_logging(None, stderr=False)


@pytest.fixture(scope="session")
def backtest_run(tmp_path_factory) -> "Path":
    """A finished run directory of the paper tests' config (linear + persistence, 3 strategies) on
    bundled daily bars 2018-01-01 .. 2019-02-04 (400 bars, 340 out of sample): forecasts, metrics and
    equity as ``walkforward run`` writes them (the HTML report left out: the drift monitor does not read it)."""
    from tests.paper.monitor_helpers import make_backtest_run

    return make_backtest_run(tmp_path_factory.mktemp("backtest"))
