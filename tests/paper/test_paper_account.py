"""The account: catch-up of missed bars, refusal of an inconsistent config, --new-account, status and report."""
from __future__ import annotations

import pytest

from backtest.cli import main
from backtest.errors import LedgerError
from backtest.paper import engine
from backtest.paper.engine import PaperTrader
from backtest.paper.ledger import Ledger
from tests.paper.helpers import T0, bar_close, dump, invariants, make_config, no_sleep, write_config


def test_three_missed_bars_are_caught_up_in_order(emu, source, tmp_path):
    ref = make_config(emu.url, tmp_path / "ref", step=3)
    for k in range(6):
        emu.now = bar_close(source, T0 + k)
        PaperTrader(ref, fetch_sleep=no_sleep).cycle(emu.now)

    cfg = make_config(emu.url, tmp_path / "cu", step=3)
    trader = PaperTrader(cfg, fetch_sleep=no_sleep)
    emu.now = bar_close(source, T0)
    assert trader.cycle(emu.now).processed == [source.index[T0]]
    emu.now = bar_close(source, T0 + 3)  # three candles closed while nobody looked
    res = trader.cycle(emu.now)
    assert res.processed == list(source.index[T0 + 1: T0 + 4])
    assert [(m, k) for m, k, _ in res.trained] == [("linear", 1), ("persistence", 1)]  # the fold at T0+3
    for k in (4, 5):
        emu.now = bar_close(source, T0 + k)
        trader.cycle(emu.now)
    path = tmp_path / "cu" / "acct.sqlite"
    with Ledger.open(path, create=False) as ledger:
        bars = ledger.frame("bars")
    assert bars["idx"].tolist() == list(range(T0, T0 + 6))
    assert bars["processed_at"].is_monotonic_increasing  # written in bar order
    assert dump(path) == dump(tmp_path / "ref" / "acct.sqlite")  # same ledger as one bar per cycle
    assert invariants(path) == []


@pytest.mark.parametrize("change,needle", [
    ({"data": {"symbol": "ETH/USDT"}}, "symbol 'BTC/USDT' -> 'ETH/USDT'"),
    ({"data": {"timeframe": "1h"}}, "timeframe '1d' -> '1h'"),
    ({"strategies": {"long_flat": {"type": "long_flat"}}}, "strategy set"),
])
def test_a_config_change_is_refused_with_one_line(emu, source, tmp_path, change, needle):
    cfg = make_config(emu.url, tmp_path)
    PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)
    before = dump(tmp_path / "acct.sqlite")
    kw = {k: v for k, v in change.items() if k != "data"}
    other = make_config(emu.url, tmp_path, **kw, **({"data": change["data"]} if "data" in change else {}))
    emu.now = bar_close(source, T0 + 1)
    emu.clear_log()
    with pytest.raises(LedgerError) as err:
        PaperTrader(other, fetch_sleep=no_sleep).cycle(emu.now)
    msg = str(err.value)
    assert "\n" not in msg and needle in msg and "--new-account" in msg
    assert emu.klines_requests() == []  # refused before touching the exchange
    assert dump(tmp_path / "acct.sqlite") == before


def test_new_account_archives_the_old_ledger_and_starts_fresh(emu, source, tmp_path, monkeypatch, capsys):
    cfg = make_config(emu.url, tmp_path)
    for k in range(2):
        emu.now = bar_close(source, T0 + k)
        PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)
    old = dump(tmp_path / "acct.sqlite")
    other = make_config(emu.url, tmp_path, strategies={"long_flat": {"type": "long_flat"}})
    config = write_config(other, tmp_path / "other.toml")
    monkeypatch.setattr(engine, "utc_now", lambda: emu.now)
    emu.now = bar_close(source, T0 + 5)
    capsys.readouterr()
    assert main(["paper", "run", str(config), "--once"]) == 2  # refused through the CLI: one line, exit 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "strategy set" in err[0]
    assert main(["paper", "run", str(config), "--once", "--new-account"]) == 0
    archived = sorted(tmp_path.glob("acct.*.archived.sqlite"))
    assert len(archived) == 1 and dump(archived[0]) == old
    assert len(list(tmp_path.glob("acct.*.archived"))) == 1  # the old models went with it
    with Ledger.open(tmp_path / "acct.sqlite", create=False) as ledger:
        acct = ledger.account()
        bars = ledger.frame("bars")
    assert acct.first_bar == source.index[T0 + 5]  # a new account starts at the newest closed bar
    assert len(bars) == 1 and "hyst" not in " ".join(acct.labels)
    assert invariants(tmp_path / "acct.sqlite") == []


def test_status_and_report_from_the_ledger(emu, source, tmp_path, monkeypatch, capsys):
    cfg = make_config(emu.url, tmp_path, step=5,
                      strategies={"always_long": {"type": "long_flat", "threshold": -1.0}, "lf": {"type": "long_flat"}})
    config = write_config(cfg, tmp_path / "config.toml")
    monkeypatch.setattr(engine, "utc_now", lambda: emu.now)
    for k in range(12):
        emu.now = bar_close(source, T0 + k)
        assert main(["paper", "run", str(config), "--once"]) == 0
    capsys.readouterr()
    assert main(["paper", "status", str(config)]) == 0
    out = capsys.readouterr().out
    for text in ("paper account 'default'", "linear/always_long", "buy_and_hold", "benchmark", "pending orders",
                 "last fills", "linear: last trained", "fold 2", "filled at the open of bar t+1"):
        assert text in out, text
    report = tmp_path / "out" / "paper.html"
    assert main(["paper", "report", str(config), "--out", str(report)]) == 0
    page = report.read_text()
    assert "Paper account" in page and "Summary: every portfolio of BTC/USDT against buy &amp; hold" in page
    assert "0.00e+00 (largest relative difference" in page  # the ledger agrees with vectorbt exactly
    assert page.count("data:image/png;base64,") >= 4 and "http://" not in page and "https://" not in page


def test_status_without_a_ledger_is_one_line(tmp_path, emu, capsys):
    cfg = make_config(emu.url, tmp_path)
    config = write_config(cfg, tmp_path / "config.toml")
    assert main(["paper", "status", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no paper ledger" in err[0]
