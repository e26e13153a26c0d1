"""``walkforward paper run`` with a bad exchange id, symbol or API key: exit status 2, one stderr line,
and no ledger, lock or log file (the paper folder is never created). Exchange calls go to the local emulator."""
from __future__ import annotations

import pytest

from backtest.cli import main
from backtest.paper import engine
from backtest.paper.sandbox import KEY_ENV, SECRET_ENV
from tests.paper.helpers import make_config, write_config


@pytest.mark.parametrize("data,paper,message", [
    ({"exchange": "binanse"}, {}, "exchange 'binanse' is not a ccxt exchange"),
    ({"symbol": "ETH/USDT"}, {}, "symbol 'ETH/USDT' is not a market of binance"),
    ({}, {"sandbox_orders": True}, f"paper.sandbox_orders \\(binance\\): set {KEY_ENV} and {SECRET_ENV}"),
])
def test_bad_exchange_symbol_or_key_exit_2_and_no_paper_files(emu, tmp_path, monkeypatch, capsys, data, paper, message):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setattr(engine, "utc_now", lambda: emu.now)
    folder = tmp_path / "paper"
    cfg = make_config(emu.url, tmp_path, ledger="paper/acct.sqlite", data=data, paper=paper)
    config = write_config(cfg, tmp_path / "config.toml")
    capsys.readouterr()
    assert main(["paper", "run", str(config), "--once"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("walkforward: error: ")
    import re

    assert re.search(message, err[0]), err[0]
    assert not folder.exists()  # no ledger, lock, log file or account folder
    assert emu.klines_requests() == []  # refused before any candle was asked for
