"""Exchange faults (timeouts, 5xx, garbage JSON) give one logged error line, exit status 2, and leave the
ledger unchanged byte for byte; the next cycle recovers. Also the loop: retry after a fault, stop cleanly
on SIGTERM (between bars, or in the middle of one: the bar's transaction is finished first)."""
from __future__ import annotations

import os
import signal

import pytest

from backtest.cli import main
from backtest.paper import engine
from backtest.paper.engine import PaperTrader, run_loop
from backtest.paper.logs import configure_logging
from tests.paper.helpers import T0, bar_close, dump, invariants, make_config, no_sleep, write_config


@pytest.mark.parametrize("fault", ["timeout", "500", "garbage", "badshape"])
def test_exchange_fault_leaves_the_ledger_unchanged_and_the_next_cycle_recovers(
        emu, source, tmp_path, monkeypatch, capsys, fault):
    cfg = make_config(emu.url, tmp_path)
    config = write_config(cfg, tmp_path / "config.toml")
    monkeypatch.setattr(engine, "utc_now", lambda: emu.now)  # the CLI reads the (emulated) clock
    assert main(["paper", "run", str(config), "--once"]) == 0
    ledger, log = tmp_path / "acct.sqlite", tmp_path / "acct.log"
    before_bytes, before = ledger.read_bytes(), dump(ledger)
    capsys.readouterr()

    emu.now = bar_close(source, T0 + 1)
    emu.add_faults(fault)
    assert main(["paper", "run", str(config), "--once"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert "ERROR" in err[0] and "binance BTC/USDT 1d" in err[0] and "fetch_ohlcv" in err[0]
    assert ledger.read_bytes() == before_bytes
    assert dump(ledger) == before
    logged = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert len(logged) == 1 and "fetch_ohlcv" in logged[0]

    assert main(["paper", "run", str(config), "--once"]) == 0  # the exchange is back
    after = dump(ledger)
    assert [r[3] for r in after["bars"]] == [source.index[T0].isoformat(), source.index[T0 + 1].isoformat()]
    assert invariants(ledger) == []


def test_loop_retries_after_a_fault_and_stops_on_sigterm(emu, source, tmp_path):
    cfg = make_config(emu.url, tmp_path)
    configure_logging(tmp_path / "acct.log", stderr=False)
    trader = PaperTrader(cfg, fetch_sleep=no_sleep)
    waits: list[float] = []

    def wait(seconds: float) -> None:  # the loop's sleep: move the emulated clock instead
        waits.append(seconds)
        if len(waits) == 1:  # next candle closes, but the exchange answers 500
            emu.now = emu.now + pd_day()
            emu.add_faults("500")
        elif len(waits) == 3:
            emu.now = emu.now + pd_day()
        elif len(waits) == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    old = signal.getsignal(signal.SIGTERM)
    assert run_loop(trader, clock=lambda: emu.now, wait=wait) == 0
    assert signal.getsignal(signal.SIGTERM) is old  # handlers restored
    assert waits[0] == 86400.0  # until the next candle closes (+ paper.delay_s = 0)
    assert waits[1] == 15.0  # retry sooner after a failure
    bars = [r[3] for r in dump(tmp_path / "acct.sqlite")["bars"]]
    assert bars == [source.index[T0 + k].isoformat() for k in range(3)]
    log = (tmp_path / "acct.log").read_text()
    assert "retrying next cycle" in log and "SIGTERM" in log and "stopped" in log
    assert invariants(tmp_path / "acct.sqlite") == []


def test_sigterm_in_the_middle_of_a_bar_finishes_that_bar_then_stops(emu, source, tmp_path, monkeypatch):
    from backtest.paper import ledger as ledger_mod

    cfg = make_config(emu.url, tmp_path)
    PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)  # bar T0
    fired = []

    def crash_point(name: str) -> None:
        if name == "before_commit" and not fired:
            fired.append(name)
            os.kill(os.getpid(), signal.SIGTERM)  # arrives inside bar T0+1's transaction

    monkeypatch.setattr(ledger_mod, "crash_point", crash_point)
    emu.now = bar_close(source, T0 + 3)  # three bars to catch up
    trader = PaperTrader(cfg, fetch_sleep=no_sleep)
    assert run_loop(trader, clock=lambda: emu.now, wait=lambda s: pytest.fail("must not sleep")) == 0
    assert fired
    bars = [r[3] for r in dump(tmp_path / "acct.sqlite")["bars"]]
    assert bars == [source.index[T0].isoformat(), source.index[T0 + 1].isoformat()]
    assert invariants(tmp_path / "acct.sqlite") == []


def pd_day():
    from tests.paper.helpers import DAY

    return DAY
