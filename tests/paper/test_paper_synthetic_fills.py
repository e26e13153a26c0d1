"""No paper fill at an invented price: an order whose fill bar is synthetic fills at the next real bar's open.

The emulator serves the bundled daily BTC/USDT slice (tests/paper/helpers.py) without bar T0 + 1
(2020-03-02); ``data.repair = "ffill"`` inserts it at the previous close. ``buy_and_hold`` (and every
portfolio whose first decision is long) decides to buy at the close of T0, so its fill is due at the open
of the synthetic bar: it must be made at the open of T0 + 2, the ledger must say which bars were synthetic,
the replay must still equal ``walkforward run`` on the same repaired bars, and ``paper report`` must agree.
"""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from backtest.data.validate import validate
from backtest.paper.engine import PaperTrader
from backtest.paper.ledger import MIGRATIONS, SCHEMA, SCHEMA_VERSION, Account, Ledger, Portfolio, ts
from backtest.paper.report import paper_frames, paper_metrics, write_paper_report
from tests.paper.helpers import T0, bar_close, make_config, no_sleep
from tests.paper.test_paper_replay import _compare

GAP = T0 + 1  # 2020-03-02: missing on the exchange, the fill bar of the first paper decision


def test_a_fill_due_on_a_synthetic_bar_fills_at_the_next_real_open(emu, source, tmp_path):
    emu.set_frame(source.drop(index=source.index[GAP]))
    cfg = make_config(emu.url, tmp_path, step=20, data={"repair": "ffill", "max_repair_fraction": 0.05},
                      walkforward={"executor": "sequential"})  # the backtest half in this process: faster here
    n = 6  # bars T0 .. T0 + 5
    trader = PaperTrader(cfg, fetch_sleep=no_sleep)
    processed = []
    for k in range(n):
        emu.now = bar_close(source, T0 + k)
        processed += trader.cycle(emu.now).processed
    assert processed == list(source.index[T0: T0 + n])

    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        acct = ledger.account()
        bars = ledger.frame("bars")
        history = ledger.frame("history_bars")
        fills = ledger.frame("fills")
        orders = ledger.frame("orders")
        assert ledger.check_invariants(acct) == []
    # the ledger records which bars were synthetic
    assert bars["synthetic"].tolist() == [0, 1, 0, 0, 0, 0] and (history["synthetic"] == 0).all()
    # buy & hold: decided at the close of T0, filled at the open of T0 + 2 (the real one), nothing at T0 + 1
    bh = fills[fills["portfolio"] == "buy_and_hold"]
    assert len(bh) == 1
    [fill] = bh.itertuples()
    assert ts(fill.decision_time) == source.index[T0] and ts(fill.bar_time) == source.index[T0 + 2]
    real_open = float(source["open"].iloc[T0 + 2])
    assert fill.price == real_open and fill.exec_price == pytest.approx(real_open * (1 + acct.slippage), rel=1e-15)
    assert not fills["bar_time"].map(ts).eq(source.index[GAP]).any()
    o = orders[orders["portfolio"] == "buy_and_hold"].iloc[0]
    assert o["status"] == "filled" and ts(o["fill_time"]) == source.index[T0 + 2]
    first_buys = set(fills.loc[fills["decision_time"].map(ts) == source.index[T0], "portfolio"])
    assert "buy_and_hold" in first_buys

    # the replay equals the backtest of the same repaired bars (signals, equity, fills = vectorbt's orders)
    repaired, report = validate(source.drop(index=source.index[GAP]).iloc[: T0 + n - 1], "1d", source="emulator",
                                repair="ffill", max_repair_fraction=0.05)
    assert list(repaired.index[report.synthetic.to_numpy()]) == [source.index[GAP]]
    fr, ev = _compare(trader, cfg, repaired, n, tmp_path / "runs", forecast_rtol=1e-5, synthetic=report.synthetic)
    assert ev.simulations[cfg.data.symbol].fills_moved == ev.metrics.run.fills_moved == len(first_buys)

    # paper report: the same simulation from the ledger alone, the moved fills counted and marked
    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        frames = paper_frames(ledger, acct)
    assert frames.synthetic.tolist() == [False] * (T0 + 1) + [True] + [False] * (n - 2)
    assert frames.fills_moved == len(first_buys)
    metrics, agreement = paper_metrics(acct, cfg, frames)
    assert agreement is not None and agreement < 1e-9
    page = write_paper_report(cfg, out=tmp_path / "report.html").read_text()
    assert f"fills moved to the next real open: {len(first_buys)}" in page
    assert "moved: the bar after the decision was synthetic" in page


def test_a_schema_1_ledger_is_migrated_with_its_old_bars_unrecorded(tmp_path):
    """A ledger written before schema 2 opens, gains the ``synthetic`` columns (NULL for the old rows: not
    recorded, counted as real, as that version traded them) and reads back; opening again changes nothing."""
    path = tmp_path / "old.sqlite"
    v1 = "\n".join(line for line in SCHEMA.splitlines() if "synthetic" not in line)
    with sqlite3.connect(path) as conn:
        conn.executescript(v1)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO history_bars VALUES ('a','BTC/USDT','1d','2020-01-01T00:00:00+00:00',0,1,1,1,1,1)")
    conn.close()
    assert SCHEMA_VERSION == 2 and 1 in MIGRATIONS
    acct = Account("a", "binance", "BTC/USDT", "1d", [Portfolio("buy_and_hold", None, "buy_and_hold", "buy_and_hold")],
                   [], "fp", {}, pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2020-01-02", tz="UTC"), 1, 0,
                   1000.0, 0.0, 0.0)
    for _ in range(2):
        with Ledger.open(path, create=False) as ledger:
            assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == 2
            assert ledger.conn.execute("SELECT synthetic FROM history_bars").fetchall() == [(None,)]
            assert "synthetic" in [r[1] for r in ledger.conn.execute("PRAGMA table_info(bars)")]
            assert ledger.window_synthetic(acct).tolist() == [False]
            assert np.isnan(ledger.frame("history_bars")["synthetic"].astype(float)).all()
