"""The monitor page in a real browser: ``walkforward paper serve`` on a replayed account, opened in headless
Chromium; the equity, position and drift state it shows equal the ledger's (and the drift monitor's)."""
from __future__ import annotations

import signal
from html.parser import HTMLParser

from backtest.paper.drift import drift_report
from backtest.paper.ledger import Ledger
from backtest.paper.readonly import read_snapshot
from tests.browser import dump_dom
from tests.emulator import ExchangeEmulator
from tests.paper.helpers import T0, bar_close, write_config
from tests.paper.monitor_helpers import crashing, monitor_config, replay
from tests.paper.test_paper_monitor import _serve


class Rows(HTMLParser):
    """The portfolio rows of the page: label -> {td class: (text, data-value, data-state)}; and the plotly divs."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, tuple[str, str | None, str | None]]] = {}
        self.plots = 0
        self._row: str | None = None
        self._cell: tuple[str, str | None, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "js-plotly-plot" in (a.get("class") or ""):
            self.plots += 1
        if tag == "tr" and "data-portfolio" in a:
            self._row = a["data-portfolio"]
            self.rows[self._row] = {}
        elif tag == "td" and self._row is not None:
            cls = (a.get("class") or "").split()
            self._cell = (cls[-1] if cls else "", a.get("data-value"), a.get("data-state"))
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            name, value, state = self._cell
            key = "drift" if state is not None else name
            self.rows[self._row][key] = ("".join(self._text), value, state)
            self._cell = None
        elif tag == "tr":
            self._row = None


def test_the_page_shows_the_ledgers_equity_position_and_drift_state(source, tmp_path, backtest_run):
    frame = crashing(source, T0 + 1)  # buy & hold falls far below its band; the model portfolios need not
    with ExchangeEmulator(frame, now=bar_close(frame, T0)) as emu:
        cfg = monitor_config(emu.url, tmp_path, drift={"run_dir": str(backtest_run)})
        trader, _ = replay(cfg, emu, frame, T0 + 12)
    path = write_config(cfg, tmp_path / "paper.toml")
    proc, url = _serve(path)
    try:
        dom = dump_dom(url + "/", budget_ms=3000)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)

    page = Rows()
    page.feed(dom)
    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        acct = ledger.account()
        equity = ledger.equity_frame(acct).iloc[-1]
        pos = ledger.frame("positions")
    pos = pos[pos["bar_time"] == pos["bar_time"].iloc[-1]].set_index("portfolio")
    report = {b.portfolio: b for b in drift_report(read_snapshot(trader.paths.ledger), cfg.paper.drift).bands}

    assert list(page.rows) == acct.labels
    for label, cells in page.rows.items():
        text, value, _ = cells["equity"]
        assert float(value) == equity[label] and text == f"{equity[label]:,.2f}"
        text, value, _ = cells["position"]
        assert float(value) == pos.loc[label, "position"] and float(text) == float(f"{pos.loc[label, 'position']:.8g}")
        text, _, state = cells["drift"]
        assert state == report[label].state and text == report[label].message
    assert page.rows["buy_and_hold"]["drift"][2] == "below"
    assert page.rows["buy_and_hold"]["position"][1] not in ("0", "0.0")  # in the market all the way down
    assert page.plots >= 2  # plotly (served from the wheel, offline) drew the equity chart and the bands
