"""What the monitor shows, as JSON-ready dicts: pure functions of a ledger snapshot, the account's config and ``now``.

Units: money in the quote currency (``USDT`` for ``BTC/USDT``), positions in the base currency, returns as
fractions (0.05 = 5 %), times ISO 8601 UTC. Bars are labelled by their **open** time; "decided at" is the
bar whose close the decision saw, filled at the next bar's open. The next decision happens when the next
candle closes plus ``paper.delay_s``: ``last processed bar + 2 bars + delay`` (the bar after the last one
processed opens at ``last + 1 bar`` and closes at ``last + 2 bars``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import Config
from backtest.data.frame import timeframe_delta
from backtest.paper.drift import DriftReport
from backtest.paper.readonly import Snapshot


def _f(x: Any) -> float | None:
    """A JSON-safe float (NaN/inf -> None)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by None: strict JSON for the API."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _iso(text: str | pd.Timestamp | None) -> str | None:
    return None if text is None else pd.Timestamp(text).tz_convert("UTC").isoformat()


def buy_hold_label(snap: Snapshot) -> str | None:
    acct = snap.account
    return next((p.label for p in acct.portfolios if p.strategy_type == "buy_and_hold"), None) if acct else None


def account_view(snap: Snapshot, cfg: Config, drift: DriftReport | None = None) -> dict[str, Any]:
    """The account and, per portfolio: next-bar signal, pending order, position, cash, equity, return, drift state."""
    acct = snap.account
    if acct is None:
        return {"account": cfg.paper.account, "ledger": str(snap.path), "created": False}
    base, quote = (acct.symbol.split("/") + [""])[:2]
    quote = quote.split(":")[0]
    pos = {r.portfolio: (r.position, r.cash) for r in snap.positions.itertuples()}
    last = snap.bars["bar_time"].iloc[-1] if len(snap.bars) else None
    sig = snap.signals[snap.signals["bar_time"] == last] if last is not None else snap.signals.iloc[0:0]
    longs = {r.portfolio: bool(r.long) for r in sig.itertuples()}
    pending = {r.portfolio: r.side for r in snap.orders.itertuples()}
    eq = snap.equity.iloc[-1] if len(snap.equity) else pd.Series(dtype="float64")
    bh = buy_hold_label(snap)
    bh_ret = eq[bh] / acct.init_cash - 1 if bh in eq.index else np.nan
    bands = {b.portfolio: b for b in drift.bands} if drift else {}
    rows = []
    for p in acct.portfolios:
        position, cash = pos.get(p.label, (np.nan, np.nan))
        e = eq.get(p.label, np.nan)
        ret = e / acct.init_cash - 1
        b = bands.get(p.label)
        rows.append({
            "label": p.label, "model": p.model, "strategy": p.strategy, "type": p.strategy_type,
            "next_bar": "long" if longs.get(p.label) else "flat", "pending_order": pending.get(p.label),
            "position": _f(position), "cash": _f(cash), "equity": _f(e), "pnl": _f(e - acct.init_cash),
            "return": _f(ret), "vs_buy_hold": None if p.label == bh else _f(ret - bh_ret),
            "drift": None if b is None else {"state": b.state, "message": b.message,
                                              "since": b.since.isoformat() if b.since is not None else None},
        })
    bar = timeframe_delta(acct.timeframe)
    last_t = snap.last_bar
    return {
        "account": acct.account, "exchange": acct.exchange, "symbol": acct.symbol, "timeframe": acct.timeframe,
        "base": base, "quote": quote, "ledger": str(snap.path), "created": True,
        "init_cash": acct.init_cash, "fees": acct.fees, "slippage": acct.slippage, "seed": acct.seed,
        "first_bar": _iso(acct.first_bar), "last_bar": _iso(last_t), "bars": int(len(snap.bars)),
        "last_close": _f(snap.bars["close"].iloc[-1]) if len(snap.bars) else None,
        "next_decision": _iso(last_t + 2 * bar + pd.Timedelta(seconds=cfg.paper.delay_s)) if last_t is not None else None,
        "buy_and_hold": bh, "portfolios": rows,
    }


def equity_view(snap: Snapshot) -> dict[str, Any]:
    """Equity at each processed bar's close, per portfolio (quote currency); bar open times."""
    eq = snap.equity
    return {"time": [t.isoformat() for t in pd.DatetimeIndex(eq.index)],
            "portfolios": {c: [_f(x) for x in eq[c].to_numpy()] for c in eq.columns},
            "buy_and_hold": buy_hold_label(snap),
            "init_cash": snap.account.init_cash if snap.account else None}


def fills_view(snap: Snapshot, limit: int = 50) -> list[dict[str, Any]]:
    """The newest fills first: size (base), open price, execution price, fees and slippage cost (quote)."""
    out = []
    for r in snap.fills.iloc[::-1].head(limit).itertuples():
        out.append({"bar": _iso(r.bar_time), "decided_at": _iso(r.decision_time), "portfolio": r.portfolio,
                    "side": r.side, "size": _f(r.size), "price": _f(r.price), "exec_price": _f(r.exec_price),
                    "fees": _f(r.fees), "slippage_cost": _f(abs(r.exec_price - r.price) * r.size),
                    "cash_after": _f(r.cash_after), "position_after": _f(r.position_after)})
    return out


def forecasts_view(snap: Snapshot, limit: int = 20) -> list[dict[str, Any]]:
    """The newest bars first: each model's forecast r̂[t+1] (log return) made at the close of bar t, the
    close it implies, the fold that made it, and every portfolio's signal for bar t+1 decided there."""
    if snap.account is None or snap.bars.empty:
        return []
    times = list(snap.bars["bar_time"].iloc[::-1].head(limit))
    fc = snap.forecasts[snap.forecasts["bar_time"].isin(times)]
    sg = snap.signals[snap.signals["bar_time"].isin(times)]
    out = []
    for t in times:
        out.append({
            "bar": _iso(t),
            "forecasts": [{"model": r.model, "fold": int(r.fold), "y_pred": _f(r.y_pred), "close": _f(r.close),
                           "pred_close": _f(r.pred_close)} for r in fc[fc["bar_time"] == t].itertuples()],
            "signals": {r.portfolio: "long" if r.long else "flat" for r in sg[sg["bar_time"] == t].itertuples()},
        })
    return out


def health_view(snap: Snapshot | None, cfg: Config, now: pd.Timestamp, *, log_error: str | None,
                ledger_error: str | None, cache_newest: pd.Timestamp | None) -> dict[str, Any]:
    """Ledger and feed health: the newest processed bar and when it closed, the newest candle in the cache,
    how late the next bar is (seconds past ``next close + paper.delay_s``; 0 = on time), the last logged error."""
    bar = timeframe_delta(cfg.data.timeframe or "1d")
    last = snap.last_bar if snap is not None else None
    out: dict[str, Any] = {"now": now.isoformat(), "ledger_readable": ledger_error is None, "ledger_error": ledger_error,
                           "last_error": log_error, "last_bar": _iso(last), "last_candle_cached": _iso(cache_newest)}
    if last is None:
        out.update(late_s=None, stale=False, next_decision=None, last_processed_at=None)
        return out
    due = last + 2 * bar + pd.Timedelta(seconds=cfg.paper.delay_s)
    late = max(0.0, (now - due).total_seconds())
    out.update(
        last_bar_closed=_iso(last + bar), last_processed_at=_iso(snap.bars["processed_at"].iloc[-1]),
        next_decision=_iso(due), late_s=late, stale=late > cfg.paper.notify.stale_after_bars * bar.total_seconds(),
    )
    return out


def cache_newest(cfg: Config) -> pd.Timestamp | None:
    """Open time of the newest candle in the account's Parquet cache (read only), or None."""
    from backtest.data.cache import cache_path, default_cache_dir, read_cache
    from backtest.errors import DataError

    d = cfg.data
    try:
        frame = read_cache(cache_path(Path(d.cache_dir) if d.cache_dir else default_cache_dir(), d.exchange, d.symbol,
                                      d.timeframe or "1d"))
    except DataError:
        return None
    return None if frame is None or frame.empty else frame.index[-1]
