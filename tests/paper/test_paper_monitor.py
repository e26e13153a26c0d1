"""``paper serve``: the JSON API shows what the ledger holds, reads it without writing, keeps answering while a
``paper run`` is SIGKILLed inside bars (the ledger then equals an uncrashed one), and refuses bad input in one line."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest

from backtest.cli import main
from backtest.errors import LedgerError
from backtest.paper.engine import PaperTrader
from backtest.paper.ledger import Ledger
from backtest.paper.monitor import plotly_js
from backtest.paper.readonly import connect_readonly, read_snapshot
from tests.paper.helpers import DAY, ROOT, T0, bar_close, dump, make_config, no_sleep, spawn_cycle, write_config
from tests.paper.monitor_helpers import get_json, monitor_config, replay, serving


def _sha(path) -> str:  # noqa: ANN001
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_api_shows_what_the_ledger_holds(emu, source, tmp_path, backtest_run):
    cfg = monitor_config(emu.url, tmp_path, drift={"run_dir": str(backtest_run)})
    trader, _ = replay(cfg, emu, source, T0 + 5)
    now = bar_close(source, T0 + 5) + DAY + pd.Timedelta(hours=3)  # the next bar is 3 h past due
    before = _sha(trader.paths.ledger)
    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        acct = ledger.account()
        equity = ledger.equity_frame(acct)
        pos = ledger.frame("positions")
        fills = ledger.frame("fills")
        fc = ledger.frame("forecasts")
    last = pos["bar_time"].iloc[-1]
    with serving([cfg], clock=lambda: now) as url:
        assert get_json(f"{url}/api/accounts") == [{"account": "default", "symbol": "BTC/USDT", "timeframe": "1d",
                                                    "ledger": str(trader.paths.ledger)}]
        a = get_json(f"{url}/api/accounts/default")
        eq = get_json(f"{url}/api/accounts/default/equity")
        fl = get_json(f"{url}/api/accounts/default/fills")
        fo = get_json(f"{url}/api/accounts/default/forecasts")
        he = get_json(f"{url}/api/accounts/default/health")
        dr = get_json(f"{url}/api/accounts/default/drift")
        state = get_json(f"{url}/api/state")
        with pytest.raises(urllib.error.HTTPError) as missing:
            get_json(f"{url}/api/accounts/nope")
        js = urllib.request.urlopen(f"{url}/static/plotly.min.js", timeout=10).read()
        page = urllib.request.urlopen(f"{url}/", timeout=10).read().decode()
    assert missing.value.code == 404
    assert _sha(trader.paths.ledger) == before  # read, never written

    rows = {p["label"]: p for p in a["portfolios"]}
    assert list(rows) == acct.labels
    for r in pos[pos["bar_time"] == last].itertuples():
        assert rows[r.portfolio]["position"] == r.position and rows[r.portfolio]["cash"] == r.cash
        assert rows[r.portfolio]["equity"] == equity[r.portfolio].iloc[-1]
        assert rows[r.portfolio]["return"] == pytest.approx(equity[r.portfolio].iloc[-1] / acct.init_cash - 1)
    assert a["last_bar"] == source.index[T0 + 5].isoformat() and a["bars"] == 6
    assert a["next_decision"] == (source.index[T0 + 5] + 2 * DAY).isoformat()  # next close + paper.delay_s (0)

    assert eq["time"] == [t.isoformat() for t in equity.index] and eq["buy_and_hold"] == "buy_and_hold"
    for label in acct.labels:
        np.testing.assert_array_equal(eq["portfolios"][label], equity[label].to_numpy())
    assert len(fl) == len(fills) and {(f["portfolio"], f["bar"]) for f in fl} == {
        (r.portfolio, pd.Timestamp(r.bar_time).isoformat()) for r in fills.itertuples()}
    for f in fl:
        assert f["slippage_cost"] == pytest.approx(abs(f["exec_price"] - f["price"]) * f["size"])
    assert [r["bar"] for r in fo] == [t.isoformat() for t in source.index[T0: T0 + 6][::-1]]
    newest = {f["model"]: f["y_pred"] for f in fo[0]["forecasts"]}
    assert newest == {r.model: r.y_pred for r in fc[fc["bar_time"] == last].itertuples()}

    assert he["last_bar"] == a["last_bar"] and he["late_s"] == 3 * 3600 and he["stale"] is False
    assert he["ledger_readable"] is True and he["last_candle_cached"] == source.index[T0 + 5].isoformat()
    assert [b["portfolio"] for b in dr["bands"]] == acct.labels
    assert all(rows[b["portfolio"]]["drift"]["message"] == b["message"] for b in dr["bands"])
    assert state["accounts"][0]["account"] == a
    # offline: plotly.js from the wheel, no script or stylesheet from anywhere else
    assert js == plotly_js().read_bytes()
    assert "https://" not in page.split("initial-state")[0] and 'src="/static/plotly.min.js"' in page


def test_a_readonly_connection_cannot_write(emu, source, tmp_path):
    cfg = make_config(emu.url, tmp_path)
    trader, _ = replay(cfg, emu, source, T0 + 1)
    conn = connect_readonly(trader.paths.ledger)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM bars")
    conn.close()
    with pytest.raises(LedgerError, match="no paper ledger here"):
        read_snapshot(tmp_path / "missing.sqlite")


def _serve(cfg_path) -> tuple[subprocess.Popen, str]:  # noqa: ANN001
    """``walkforward paper serve CONFIG --port 0`` in a subprocess; returns it and the URL it printed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "backtest.cli", "paper", "serve", str(cfg_path), "--port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
    return proc, line.split(": ", 1)[1].split(" ")[0].rstrip("/")


def test_the_server_keeps_reading_while_paper_run_is_killed_and_the_ledger_equals_an_uncrashed_one(
        emu, source, tmp_path):
    last = T0 + 4
    ref = make_config(emu.url, tmp_path / "ref", step=3)
    replay(ref, emu, source, last)
    want = dump(ref.paper.ledger)

    cfg = make_config(emu.url, tmp_path / "acct", step=3)
    emu.now = bar_close(source, T0)
    PaperTrader(cfg, fetch_sleep=no_sleep).cycle(emu.now)
    path = write_config(cfg, tmp_path / "acct" / "paper.toml")
    proc, url = _serve(path)
    seen: list[tuple[int, str | None, bool]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                s = get_json(f"{url}/api/state")["accounts"][0]
                seen.append((200, s["account"].get("last_bar"), s["health"]["ledger_readable"]))
            except urllib.error.HTTPError as exc:
                seen.append((exc.code, None, False))
            stop.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        emu.now = bar_close(source, last)
        p = spawn_cycle(path, emu.now, {"WALKFORWARD_PAPER_CRASH_AT": "before_commit@3"})  # killed inside bar T0+3
        _, err = p.communicate(timeout=120)
        assert p.returncode == -signal.SIGKILL, err[-2000:]
        # the killed bar's rollback journal is still beside the ledger: the server leaves both files as they are
        # (rolling back would be a write) and shows the last committed bar
        journal = cfg.paper.ledger + "-journal"
        files = (_sha(cfg.paper.ledger), _sha(journal))
        during = get_json(f"{url}/api/state")["accounts"][0]
        assert during["account"]["last_bar"] == source.index[T0 + 2].isoformat()
        assert during["health"]["ledger_readable"] is True
        assert (_sha(cfg.paper.ledger), _sha(journal)) == files
        p = spawn_cycle(path, emu.now)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        n = len(seen)
        while len(seen) < n + 2:  # the server has read the finished ledger
            threading.Event().wait(0.05)
    finally:
        stop.set()
        poller.join(10)
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert dump(cfg.paper.ledger) == want
    assert {code for code, _, _ in seen} == {200} and len(seen) > 10
    shown = [b for _, b, _ in seen if b]
    assert shown == sorted(shown) and shown[-1] == source.index[last].isoformat()  # bars only ever advance


def test_serve_refuses_bad_input_in_one_line(tmp_path, capsys, emu):
    cfg = make_config(emu.url, tmp_path)
    path = write_config(cfg, tmp_path / "a.toml")
    assert main(["paper", "serve", str(path), str(path)]) == 2
    assert capsys.readouterr().err.strip() == ("walkforward: error: paper.account 'default' is given twice; each "
                                               "served account needs its own name")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["paper", "serve", str(path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"walkforward: error: paper serve: cannot listen on 127.0.0.1:{port} (") and "\n" not in err
    (tmp_path / "b.toml").write_text("[paper.serve]\nport = 70000\n")
    assert main(["paper", "serve", str(tmp_path / "b.toml")]) == 2
    assert "paper.serve.port: Input should be less than or equal to 65535" in capsys.readouterr().err
