"""Shared pieces of the paper-trading tests: bundled data slice, configs, emulator clock.

Sizes are tiny on purpose: 400 daily bars from 2020-01-01, lookback 10, 60 bars of
history before the first paper decision, fast sklearn/persistence models.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import Config, parse_config
from backtest.paper.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "backtest" / "data" / "bundled" / "BTC_USDT_1d.csv"
DAY = pd.Timedelta(days=1)
START = "2020-01-01"
N_BARS = 400
T0 = 60  # bars of history before the first paper decision (paper.history = walkforward.initial_train)
FAKE_KEY = "FAKEKEY-Zx81kq0v9mWalkforward"
FAKE_SECRET = "FAKESECRET-q7Lp2mN4rT6"


def load_source() -> pd.DataFrame:
    frame = pd.read_csv(BUNDLED, index_col="timestamp", parse_dates=["timestamp"])
    frame.index = pd.DatetimeIndex(frame.index).tz_localize("UTC").rename("timestamp")
    return frame.astype("float64").loc[START:].iloc[:N_BARS]


def raw_config(url: str, folder: Path, *, step: int = 20, history: int = T0, models: dict[str, Any] | None = None,
               strategies: dict[str, Any] | None = None, ledger: str = "acct.sqlite", **sections: dict[str, Any]) -> dict:
    """A TOML-shaped config for the emulator at ``url``; ledger and cache under ``folder``."""
    raw: dict[str, Any] = {
        "data": {"source": "ccxt", "exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1d", "base_url": url,
                 "cache_dir": str(folder / "cache"), "timeout_ms": 400, "max_retries": 0},
        "features": {"lookback": 10, "inputs": ["close"]},
        "walkforward": {"initial_train": history, "step": step},
        "models": models if models is not None else {"linear": {"type": "linear"}},
        "strategies": strategies if strategies is not None else {
            "long_flat": {"type": "long_flat"},
            "hyst": {"type": "long_flat", "entry_threshold": 0.002, "exit_threshold": -0.002},
            "ens": {"type": "ensemble"},
        },
        "backtest": {"fees": 0.001, "slippage": 0.0005, "init_cash": 10_000.0, "bootstrap_samples": 100},
        "run": {"name": "paper-test", "seeds": [0]},
        "paper": {"ledger": str(folder / ledger), "delay_s": 0.0},
    }
    for name, body in sections.items():
        raw.setdefault(name, {}).update(body)
    return raw


def make_config(url: str, folder: Path, **kw: Any) -> Config:
    return parse_config(raw_config(url, folder, **kw), "test config")


def write_config(cfg: Config, path: Path) -> Path:
    path.write_text(cfg.to_toml(), encoding="utf-8")
    return path


def no_sleep(seconds: float) -> None:
    pass


def bar_close(source: pd.DataFrame, i: int) -> pd.Timestamp:
    """The moment bar ``i`` closes (its open + 1 day): the emulator's clock after it."""
    return source.index[i] + DAY


def dump(path: Path) -> dict:
    with Ledger.open(path, create=False) as ledger:
        return ledger.dump(results_only=True)


def invariants(path: Path) -> list[str]:
    with Ledger.open(path, create=False) as ledger:
        return ledger.check_invariants(ledger.account())


CYCLE_SCRIPT = """
import sys
from backtest.config import load_config
from backtest.paper.engine import run_cycle
run_cycle(load_config(sys.argv[1]), now=sys.argv[2], fetch_sleep=lambda s: None)
"""


def spawn_cycle(config_path: Path, now: pd.Timestamp, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A paper cycle in a fresh Python process (for SIGKILL crash tests)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", CYCLE_SCRIPT, str(config_path), now.isoformat()], cwd=ROOT,
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
