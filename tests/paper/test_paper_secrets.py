"""Sandbox orders are refused unless the sandbox is confirmed; API keys never reach the ledger, log or report."""
from __future__ import annotations

from pathlib import Path

import ccxt
import pytest

from backtest.cli import main
from backtest.errors import ConfigError
from backtest.paper import engine
from backtest.paper.engine import PaperTrader
from backtest.paper.ledger import Ledger
from backtest.paper.logs import get_logger
from backtest.paper.sandbox import KEY_ENV, SECRET_ENV, open_sandbox, redact
from tests.paper.helpers import FAKE_KEY, FAKE_SECRET, T0, bar_close, make_config, no_sleep, write_config


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(SECRET_ENV, FAKE_SECRET)


def _refused(cfg, emu) -> str:
    emu.clear_log()
    with pytest.raises(ConfigError) as err:
        PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)
    msg = str(err.value)
    assert "\n" not in msg and "paper.sandbox_orders" in msg
    assert FAKE_KEY not in msg and FAKE_SECRET not in msg
    assert emu.klines_requests() == []  # refused before any bar is fetched or processed
    assert not Path(cfg.paper.ledger).exists()  # ... and before the ledger is created
    return msg


def test_sandbox_refused_without_keys(emu, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    cfg = make_config(emu.url, tmp_path, paper={"sandbox_orders": True})
    assert KEY_ENV in _refused(cfg, emu)


def test_sandbox_refused_when_the_exchange_has_no_sandbox(emu, tmp_path, keys):
    cfg = make_config(emu.url, tmp_path, data={"exchange": "kraken"}, paper={"sandbox_orders": True})
    assert "no sandbox (testnet) URL" in _refused(cfg, emu)


def test_sandbox_refused_when_urls_still_point_at_the_live_host(emu, tmp_path, keys, monkeypatch):
    cfg = make_config(emu.url, tmp_path, paper={"sandbox_orders": True})
    with monkeypatch.context() as m:
        m.setattr(ccxt.binance, "set_sandbox_mode", lambda self, enabled: None)  # a no-op sandbox switch
        # through the cycle (base_url = the emulator): the switch did not take effect
        assert "sandbox mode not confirmed" in _refused(cfg, emu)
        # without base_url: urls['api'] are still the production ones
        cfg.data.base_url = None
        with pytest.raises(ConfigError, match="still point at the live host api.binance.com"):
            open_sandbox(cfg.data)
    # a base_url that is a live host is refused as well (sandbox URLs rewritten back to production)
    cfg.data.base_url = "https://api.binance.com"
    with pytest.raises(ConfigError, match="still point at the live host"):
        open_sandbox(cfg.data)


def test_sandbox_confirmed_on_a_testnet_host(tmp_path, keys):
    from backtest.config import DataConfig

    ex = open_sandbox(DataConfig(source="ccxt", exchange="binance", timeframe="1d"))
    assert ex.isSandboxModeEnabled and "testnet" in ex.urls["api"]["public"]
    assert ex.apiKey == FAKE_KEY  # handed to ccxt, nowhere else


def test_api_keys_never_reach_the_ledger_log_or_report(emu, source, tmp_path, monkeypatch, capsys, keys):
    strategies = {"always_long": {"type": "long_flat", "threshold": -1.0}, "never": {"type": "long_flat",
                                                                                        "threshold": 1.0}}
    cfg = make_config(emu.url, tmp_path, step=5, strategies=strategies, paper={"sandbox_orders": True})
    config = write_config(cfg, tmp_path / "config.toml")
    monkeypatch.setattr(engine, "utc_now", lambda: emu.now)
    for k in range(4):
        emu.now = bar_close(source, T0 + k)
        assert main(["paper", "run", str(config), "--once"]) == 0
    assert main(["paper", "status", str(config)]) == 0
    assert main(["paper", "report", str(config)]) == 0
    get_logger().error("an exchange message quoting %s and %s", FAKE_KEY, FAKE_SECRET)  # redacted on the way out
    out = capsys.readouterr()

    ledger = tmp_path / "acct.sqlite"
    with Ledger.open(ledger, create=False) as led:
        sent = led.frame("sandbox_orders")
    # the keyed sandbox client was used: the first model portfolio's buy went to the (emulated) sandbox,
    # which has no order endpoint, so it failed and was recorded
    assert len(sent) == 1 and sent["portfolio"].iloc[0] == "linear/always_long" and sent["status"].iloc[0] == "failed"
    log = (tmp_path / "acct.log").read_text()
    assert "sandbox order linear/always_long buy" in log and "***" in log
    files = [ledger, tmp_path / "acct.log", tmp_path / "acct" / "report.html", config,
             *[p for p in (tmp_path / "acct").rglob("*") if p.is_file()],
             *[p for p in (tmp_path / "cache").rglob("*") if p.is_file()]]
    for f in files:
        data = f.read_bytes()
        assert FAKE_KEY.encode() not in data and FAKE_SECRET.encode() not in data, f
    for stream in (out.out, out.err):
        assert FAKE_KEY not in stream and FAKE_SECRET not in stream
    assert redact(f"x{FAKE_KEY}y{FAKE_SECRET}z") == "x***y***z"
