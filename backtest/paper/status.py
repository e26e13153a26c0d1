"""``walkforward paper status``: the account in plain text, read from the ledger only (no network).

Per portfolio: the signal for the next bar, position (base currency), cash and
equity (quote currency, valued at the last processed close), PnL since the
start and the return against buy-and-hold (percentage points); the drift monitor's
verdict per portfolio and model (:mod:`backtest.paper.drift`); then the pending
orders, the last fills and when each model was last trained.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from backtest.config import Config
from backtest.errors import LedgerError
from backtest.paper.ledger import Account, Ledger, ts
from backtest.paper.paths import account_paths


def _day(text: str | pd.Timestamp) -> str:
    t = ts(text) if isinstance(text, str) else text
    return t.strftime("%Y-%m-%d") if t == t.normalize() else t.strftime("%Y-%m-%d %H:%M")


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [fmt(headers), *(fmt(r) for r in rows)]


def status_text(cfg: Config, *, ledger_path: str | os.PathLike[str] | None = None, fills: int = 10) -> str:
    """The status report of the account of ``cfg`` as text (see the module docstring)."""
    from backtest.paper.engine import PaperSetup

    paths = account_paths(cfg, ledger_path=ledger_path)
    with Ledger.open(paths.ledger, create=False) as ledger:
        acct = ledger.account()
        if acct is None:
            raise LedgerError(f"{paths.ledger}: no paper account yet; run 'walkforward paper run CONFIG' first")
        lines = _header(acct, paths.ledger, ledger)
        diffs = PaperSetup.from_config(cfg).differences(acct)
        if diffs:
            lines.append(f"note: the config differs from this account ({'; '.join(diffs)})")
        bars = ledger.frame("bars")
        if bars.empty:
            lines.append("no bar processed yet")
            return "\n".join(lines) + "\n"
        last = bars["bar_time"].iloc[-1]
        lines += [""] + _portfolios(acct, ledger, last)
        lines += [""] + drift_lines(cfg, paths.ledger)
        lines += [""] + _orders_and_fills(acct, ledger, last, fills)
        lines += [""] + _models(acct, ledger, cfg, bars)
    return "\n".join(lines) + "\n"


def _header(acct: Account, path: os.PathLike[str], ledger: Ledger) -> list[str]:
    quote = acct.symbol.split("/")[-1].split(":")[0]
    bars = ledger.frame("bars")
    span = (f"{len(bars)} bars processed, {_day(bars['bar_time'].iloc[0])} .. {_day(bars['bar_time'].iloc[-1])} "
            "(bar open times, UTC)" if len(bars) else "no bars processed")
    return [
        f"paper account {acct.account!r}: {acct.exchange} {acct.symbol} {acct.timeframe}  (ledger {path})",
        f"{span}; first decision at the close of {_day(acct.first_bar)} after {acct.history} bars of history",
        f"starting cash {acct.init_cash:,.2f} {quote} per portfolio; fees {acct.fees:.3%} of the order value per fill; "
        f"slippage {acct.slippage:.3%} of the price per fill",
        "orders decided at the close of bar t are filled at the open of bar t+1 (paper fills, no real order)",
    ]


def _portfolios(acct: Account, ledger: Ledger, last: str) -> list[str]:
    base, quote = (acct.symbol.split("/") + [""])[:2]
    quote = quote.split(":")[0]
    c = ledger.conn
    pos = {p: (x, cash) for p, x, cash in c.execute(
        "SELECT portfolio, position, cash FROM positions WHERE bar_time=?", (last,))}
    eq = {p: e for p, e in c.execute("SELECT portfolio, equity FROM equity WHERE bar_time=?", (last,))}
    sig = {p: bool(v) for p, v in c.execute("SELECT portfolio, long FROM signals WHERE bar_time=?", (last,))}
    bh = next((p.label for p in acct.portfolios if p.strategy_type == "buy_and_hold"), None)
    bh_ret = eq[bh] / acct.init_cash - 1 if bh in eq else np.nan
    rows = []
    for label in acct.labels:
        position, cash = pos.get(label, (np.nan, np.nan))
        e = eq.get(label, np.nan)
        ret = e / acct.init_cash - 1
        vs = "benchmark" if label == bh else f"{100 * (ret - bh_ret):+.2f} pp"
        rows.append([label, "long" if sig.get(label) else "flat", f"{position:.8g}", f"{cash:,.2f}", f"{e:,.2f}",
                     f"{e - acct.init_cash:+,.2f}", f"{ret:+.2%}", vs])
    head = [f"at the close of {_day(last)}:"]
    return head + _table(["portfolio", "next bar", f"position [{base}]", f"cash [{quote}]", f"equity [{quote}]",
                           f"PnL [{quote}]", "return", "vs buy & hold"], rows, {2, 3, 4, 5, 6, 7})


def _orders_and_fills(acct: Account, ledger: Ledger, last: str, n: int) -> list[str]:
    c = ledger.conn
    pending = c.execute("SELECT portfolio, side FROM orders WHERE status='pending' ORDER BY portfolio").fetchall()
    out = [f"pending orders (decided at the close of {_day(last)}, filled at the next open): "
           + (", ".join(f"{p} {s}" for p, s in pending) if pending else "none")]
    rows = c.execute("SELECT bar_time, portfolio, side, size, price, exec_price, fees FROM fills "
                     "ORDER BY bar_time DESC, portfolio LIMIT ?", (n,)).fetchall()
    out.append(f"last fills ({len(rows)} shown, newest first):" if rows else "no fills yet")
    for t, p, side, size, price, exec_price, fees in rows:
        out.append(f"  {_day(t)}  {p}  {side} {size:.8g} at the open {price:,.2f} (exec {exec_price:,.2f}), "
                   f"fees {fees:,.2f}")
    return out


def _models(acct: Account, ledger: Ledger, cfg: Config, bars: pd.DataFrame) -> list[str]:
    step = int(acct.identity.get("walkforward", {}).get("step", cfg.walkforward.step))
    latest = {}
    for t in ledger.trainings(acct):
        latest[t.model] = t
    out = ["models:"]
    last_idx = int(bars["idx"].iloc[-1])
    for m in acct.models:
        t = latest.get(m)
        if t is None:
            out.append(f"  {m}: not trained yet")
            continue
        nxt = t.test_start + step
        when = "with the next bar" if nxt == last_idx + 1 else f"in {nxt - last_idx} bars"
        out.append(f"  {m}: last trained for the bar of {_day(t.bar_time)} (fold {t.fold}, {t.n_train} training rows "
                   f"{_day(t.first_train_bar)} .. {_day(t.last_train_bar)}, {t.n_val} validation); "
                   f"next retrain {when}")
    return out


def drift_lines(cfg: Config, ledger_path: os.PathLike[str]) -> list[str]:
    """The drift monitor's lines: per portfolio "inside the band" / "below the band since <bar>" with the
    numbers, per model the forecast test, and any note (no run configured, overlap, too little history)."""
    from backtest.paper.drift import drift_report
    from backtest.paper.readonly import read_snapshot

    report = drift_report(read_snapshot(ledger_path), cfg.paper.drift)
    d = cfg.paper.drift
    if not report.bands and not report.forecasts:
        return [f"drift: {'; '.join(report.notes)}"]
    out = [f"drift (live against the backtest run {d.run_dir}, {1 - d.level:.0%} band of cumulative return):"]
    out += [f"  {b.portfolio}: {b.message}" for b in report.bands]
    out += [f"  {f.message}" for f in report.forecasts]
    out += [f"  note: {n}" for n in report.notes]
    return out
