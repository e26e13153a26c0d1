"""Paper trading on live ccxt candles, with a crash-safe SQLite ledger that agrees with the backtest.

Time alignment (the same contract as the backtest, docs/design.md "Time alignment"):

* a bar is labelled by its **open** time (UTC) and is processed only once it has
  closed (``open + 1 bar <= now``);
* the order decided after bar ``t`` closes is **filled at the open of bar t+1**
  (and the portfolio is valued at the close of ``t+1``);
* the model that decides at bar ``t`` was trained, on the walk-forward schedule
  of ``walkforward run``, only on rows whose targets were known before the first
  bar of its fold (a gap of ``horizon`` rows).

Units: ``backtest.fees`` is the fraction of the order value paid per fill
(0.001 = 0.1 %), ``backtest.slippage`` the fraction of the price lost per fill
(buys at ``open * (1 + slippage)``, sells at ``open * (1 - slippage)``); cash,
equity and PnL are in the quote currency (USDT for BTC/USDT), positions in the
base currency (BTC).

What paper trading can promise:

* every closed bar is processed at most once and in order, missed bars are caught
  up, and a crash at any point leaves each bar's records all there or all absent;
* replayed over history it reproduces ``walkforward run`` (same folds, seeds and
  vectorbt fill rules) to floating-point rounding;
* it never sends a real order (``paper.sandbox_orders`` talks to an exchange
  *sandbox* only, and refuses when it cannot confirm the sandbox).

What it cannot promise: that a live fill would happen at the bar's open price
(real orders meet spreads, partial fills, latency, minimum sizes and outages),
that the exchange never revises a candle after it was processed, or that past
paper profits say anything about future ones.

Modules: :mod:`.fills` (fill arithmetic), :mod:`.ledger` (SQLite), :mod:`.engine`
(the cycle and the loop), :mod:`.sandbox` (sandbox orders and secrets),
:mod:`.logs`, :mod:`.status`, :mod:`.report`, :mod:`.cli`; watching an account:
:mod:`.readonly` (read-only ledger snapshots), :mod:`.drift` (live against the
backtest), :mod:`.views` (what the monitor shows), :mod:`.monitor` (``paper serve``:
page and JSON API, page files in ``static/``), :mod:`.notify` (webhooks) and
:mod:`.alerts` (which events a cycle sends).
"""
from __future__ import annotations

__all__ = ["PaperTrader", "CycleResult", "run_cycle", "run_loop", "Ledger", "account_paths"]


def __getattr__(name: str):  # lazy: importing the package stays cheap
    if name in ("PaperTrader", "CycleResult", "run_cycle", "run_loop"):
        from backtest.paper import engine

        return getattr(engine, name)
    if name == "Ledger":
        from backtest.paper.ledger import Ledger

        return Ledger
    if name == "account_paths":
        from backtest.paper.paths import account_paths

        return account_paths
    raise AttributeError(name)
