"""Webhook notifications: a fill reaches a local receiver as the ledger has it, failed POSTs are retried with
backoff, a hung receiver never holds up a cycle, no API key is ever sent, stale-feed and drift alarms once."""
from __future__ import annotations

import argparse
import threading

import pandas as pd
import pytest

from backtest.cli import main
from backtest.config import NotifyConfig
from backtest.paper.alerts import CycleAlerts, notifier_for
from backtest.paper.cli import paper_run
from backtest.paper.logs import get_logger
from backtest.paper.notify import Notifier
from backtest.paper.paths import account_paths
from backtest.paper.readonly import read_snapshot
from backtest.paper.sandbox import KEY_ENV
from tests.emulator import ExchangeEmulator
from tests.paper.helpers import DAY, FAKE_KEY, T0, bar_close, write_config
from tests.paper.monitor_helpers import Receiver, crashing, monitor_config, replay


def _run_once(cfg_path) -> int:  # noqa: ANN001
    return paper_run(argparse.Namespace(config=str(cfg_path), set=[], once=True, new_account=False))


def test_a_fill_reaches_the_webhook_as_the_ledger_has_it(emu, source, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    with Receiver() as rx:
        cfg = monitor_config(emu.url, tmp_path, notify={"webhooks": [rx.url], "backoff_s": 0.0})
        path = write_config(cfg, tmp_path / "paper.toml")
        monkeypatch.setattr("backtest.paper.engine.utc_now", lambda: emu.now)  # the trader's clock: the emulator's
        emu.now = bar_close(source, T0)
        assert _run_once(path) == 0  # the account's first decision: orders, no fill yet
        emu.now = bar_close(source, T0 + 1)
        assert _run_once(path) == 0  # fills at the open of T0+1
        snap = read_snapshot(cfg.paper.ledger)
        fills = snap.fills
        assert len(fills) >= 1
        bodies = rx.wait_for(len(fills))
    sent = [b for b in bodies if b["event"] == "fill"]
    assert len(sent) == len(fills)
    for body, row in zip(sorted(sent, key=lambda b: b["portfolio"]), fills.sort_values("portfolio").itertuples()):
        assert body["account"] == "default" and body["symbol"] == "BTC/USDT" and body["timeframe"] == "1d"
        assert (body["portfolio"], body["side"]) == (row.portfolio, row.side)
        assert pd.Timestamp(body["bar"]) == pd.Timestamp(row.bar_time) == source.index[T0 + 1]
        assert pd.Timestamp(body["decided_at"]) == source.index[T0]
        assert body["size"] == row.size and body["exec_price"] == row.exec_price and body["fees"] == row.fees
    assert not any(FAKE_KEY.encode() in raw for raw in rx.raw)


def test_failed_posts_are_retried_with_backoff_and_an_error_line_is_sent_without_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    waits: list[float] = []
    with Receiver(statuses=[500, 503]) as rx:
        n = Notifier(NotifyConfig(webhooks=[rx.url], retries=3, backoff_s=0.5), {"account": "a"}, sleep=waits.append)
        n.send("error", message=f"exchange said: bad key {FAKE_KEY}")
        n.close()
        assert rx.tries == 3 and waits == [0.5, 1.0] and n.delivered == 1
        [body] = rx.bodies
    assert body["event"] == "error" and body["account"] == "a"
    assert FAKE_KEY not in body["message"] and "***" in body["message"]


def test_an_undeliverable_webhook_is_dropped_with_one_warning(caplog):
    with Receiver(statuses=[500] * 3) as rx:
        n = Notifier(NotifyConfig(webhooks=[rx.url], retries=2, backoff_s=0.0), sleep=lambda s: None)
        with caplog.at_level("WARNING", logger=get_logger().name):
            n.send("fill", portfolio="x")
            n.close()
    assert rx.tries == 3 and n.failed == 1 and rx.bodies == []
    [line] = [r.getMessage() for r in caplog.records if "webhook" in r.getMessage()]
    assert line == f"webhook {rx.url.split('/hook')[0]}: message not delivered after 3 tries (HTTP 500)"
    assert "SECRET-TOKEN" not in line  # the URL's path (a token) is never logged


def test_a_hung_webhook_never_holds_up_the_cycle(emu, source, tmp_path):
    hold = threading.Event()
    with Receiver(hold=hold) as rx:
        cfg = monitor_config(emu.url, tmp_path, notify={"webhooks": [rx.url], "timeout_s": 30.0})
        notifier = notifier_for(cfg)
        alerts = CycleAlerts(cfg, account_paths(cfg), notifier)
        trader, res = replay(cfg, emu, source, T0 + 3)
        alerts.after_cycle(emu.now, res.processed)  # fills of three bars queued; the receiver answers nothing yet
        assert not hold.is_set() and rx.bodies == []  # the cycle and the alerts returned while the POST hangs
        hold.set()
        notifier.close()
        assert len(rx.bodies) == len(read_snapshot(cfg.paper.ledger).fills) > 0


def test_stale_feed_and_drift_alarm_are_sent_once(source, tmp_path, backtest_run):
    frame = crashing(source, T0 + 1)
    with Receiver() as rx, ExchangeEmulator(frame, now=bar_close(frame, T0)) as emu:
        cfg = monitor_config(emu.url, tmp_path, drift={"run_dir": str(backtest_run)},
                             notify={"webhooks": [rx.url], "events": ["stale", "drift"], "stale_after_bars": 1.0})
        notifier = notifier_for(cfg)
        alerts = CycleAlerts(cfg, account_paths(cfg), notifier)
        trader, res = replay(cfg, emu, frame, T0 + 25)
        alerts.after_cycle(emu.now, res.processed)  # on time, far below the band
        alerts.after_cycle(emu.now + 3 * DAY, [])  # the next candle is 3 days late: stale, drift still below
        alerts.after_cycle(emu.now + 4 * DAY, [])  # still stale: nothing new
        notifier.close()
    events = [b["event"] for b in rx.bodies]
    assert events.count("stale") == 1 and "fill" not in events
    drift = [b for b in rx.bodies if b["event"] == "drift"]
    assert [d["portfolio"] for d in drift if d["kind"] == "return band"].count("buy_and_hold") == 1
    bh = next(d for d in drift if d.get("portfolio") == "buy_and_hold")
    assert bh["state"] == "below" and bh["cum_return"] < bh["lower"]
    assert bh["message"].startswith("buy_and_hold: below the band since")
    stale = next(b for b in rx.bodies if b["event"] == "stale")
    assert pd.Timestamp(stale["last_bar"]) == frame.index[T0 + 25] and stale["late_s"] == pytest.approx(2 * 86400)


def test_a_webhook_that_is_not_a_url_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text('[paper.notify]\nwebhooks = ["hooks.example/abc"]\n')
    assert main(["paper", "status", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"walkforward: error: {tmp_path / 'bad.toml'}: paper.notify.webhooks: webhook 'hooks.example/abc' "
                   "is not an http:// or https:// URL (got ['hooks.example/abc'])")
    (tmp_path / "typo.toml").write_text('[paper.notify]\nwebhook = ["http://x"]\n')
    assert main(["paper", "status", str(tmp_path / "typo.toml")]) == 2
    assert "unknown key 'paper.notify.webhook' (did you mean 'webhooks'?)" in capsys.readouterr().err
