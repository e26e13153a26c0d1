"""Fill arithmetic of the paper account: exactly what vectorbt does in ``Portfolio.from_signals``.

The backtest (:func:`backtest.simulate.simulate`) runs ``from_signals`` with
``size = inf`` (all in / all out), ``direction = "longonly"``, ``price = open``
and signals shifted one bar. For such orders vectorbt's ``buy_nb``/``sell_nb``
reduce to the formulas below, written here in vectorbt's order of operations so
that the paper ledger reproduces the backtest's cash and positions to the last
bit (or within rounding):

Buy everything (a long entry at the open of bar t+1, decided at the close of bar t)::

    exec_price = open * (1 + slippage)
    spend      = cash / (1 + fees)          # value of the coins bought
    size       = spend / exec_price         # = cash / (open (1+slippage) (1+fees))
    fees_paid  = cash - spend               # = size * exec_price * fees
    cash       = 0

Sell everything (a long exit)::

    exec_price = open * (1 - slippage)
    proceeds   = size * exec_price
    fees_paid  = proceeds * fees
    cash       = cash + (proceeds - fees_paid)
    size       = 0

Units: ``fees`` is the fraction of the order value paid per fill (0.001 = 0.1%),
``slippage`` the fraction of the price lost per fill; prices and cash are in the
quote currency, sizes in the base currency. A portfolio is valued at each bar's
close: ``equity = cash + position * close``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fill:
    """One executed paper order."""

    side: str  # "buy" | "sell"
    size: float  # base currency, > 0
    price: float  # the bar's open (quote currency per unit)
    exec_price: float  # open adjusted by slippage
    fees: float  # quote currency paid
    cash_after: float  # quote currency
    position_after: float  # base currency


def buy_all(cash: float, open_price: float, fees: float, slippage: float) -> Fill | None:
    """Spend all ``cash`` at ``open_price``; ``None`` when there is no cash (vectorbt rejects the order)."""
    if cash <= 0:
        return None
    exec_price = open_price * (1 + slippage)
    spend = cash / (1 + fees)
    size = spend / exec_price
    return Fill("buy", size, open_price, exec_price, cash - spend, 0.0, size)


def sell_all(position: float, cash: float, open_price: float, fees: float, slippage: float) -> Fill | None:
    """Sell the whole ``position`` at ``open_price``; ``None`` when flat."""
    if position <= 0:
        return None
    exec_price = open_price * (1 - slippage)
    proceeds = position * exec_price
    fees_paid = proceeds * fees
    return Fill("sell", position, open_price, exec_price, fees_paid, cash + (proceeds - fees_paid), 0.0)


def value(cash: float, position: float, close: float) -> float:
    """Portfolio value at a bar's close, quote currency (vectorbt: ``cash + close * assets``)."""
    return cash + close * position
