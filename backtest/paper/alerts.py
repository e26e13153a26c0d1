"""After each ``paper run`` cycle: which fill, stale-feed and drift events to send (:mod:`backtest.paper.notify`).

:class:`CycleAlerts` reads the ledger through a read-only snapshot once the cycle is over (so a message
describes committed records only), and sends

* ``fill`` -- every fill of the bars the cycle processed;
* ``stale`` -- once when the next candle becomes later than ``paper.notify.stale_after_bars`` bars past
  its expected time (close + ``paper.delay_s``), again only after the feed has recovered;
* ``drift`` -- once when a portfolio falls below its backtest band or a model's forecasts become worse
  than the backtest's (:func:`backtest.paper.drift.drift_report`), again only after it has recovered.

Whatever goes wrong here is one warning in the log: an alert never fails or holds up a cycle. The
memory of what was sent is this process's (a restarted ``paper run`` re-announces a standing alarm once).
"""
from __future__ import annotations

import logging

import pandas as pd

from backtest.config import Config
from backtest.paper.logs import get_logger
from backtest.paper.notify import Notifier
from backtest.paper.paths import AccountPaths


class CycleAlerts:
    """Turns the ledger after a cycle into notifier events (see the module docstring)."""

    def __init__(self, cfg: Config, paths: AccountPaths, notifier: Notifier,
                 logger: logging.Logger | None = None) -> None:
        self.cfg, self.paths, self.notifier = cfg, paths, notifier
        self.log = logger or get_logger()
        self._stale = False
        self._drift: dict[str, str] = {}  # portfolio or model -> the alarm's state when it was sent

    def after_cycle(self, now: pd.Timestamp, processed: list[pd.Timestamp]) -> None:
        """Send this cycle's events (``processed``: the bars it wrote, open times); never raises."""
        if not self.notifier.enabled:
            return
        try:
            self._after_cycle(now, processed)
        except Exception as exc:  # noqa: BLE001 - alerts must never fail a cycle
            self.log.warning("notifications after the cycle skipped: %s: %s", type(exc).__name__, exc)

    def _after_cycle(self, now: pd.Timestamp, processed: list[pd.Timestamp]) -> None:
        from backtest.errors import LedgerError
        from backtest.paper.drift import drift_report
        from backtest.paper.readonly import read_snapshot
        from backtest.paper.views import fills_view, health_view

        try:
            snap = read_snapshot(self.paths.ledger)
        except LedgerError:
            return  # no ledger yet (a failed first cycle): nothing to report but the error, sent by the log
        if snap.account is None:
            return
        done = {pd.Timestamp(t).isoformat() for t in processed}
        for fill in reversed(fills_view(snap, limit=len(snap.fills))):
            if fill["bar"] in done:
                self.notifier.send("fill", **fill)

        health = health_view(snap, self.cfg, now, log_error=None, ledger_error=None, cache_newest=None)
        if health["stale"] and not self._stale:
            self.notifier.send("stale", last_bar=health["last_bar"], next_decision=health["next_decision"],
                               late_s=health["late_s"],
                               message=f"stale feed: the bar after {health['last_bar']} was due at "
                                       f"{health['next_decision']} and is {health['late_s'] / 60:.0f} min late")
        self._stale = bool(health["stale"])

        if not self.cfg.paper.drift.run_dir:
            return
        report = drift_report(snap, self.cfg.paper.drift)
        for b in report.bands:
            if b.state == "below":
                if self._drift.get(b.portfolio) != "below":
                    self.notifier.send("drift", kind="return band", portfolio=b.portfolio, state=b.state,
                                       since=b.since.isoformat() if b.since is not None else None,
                                       cum_return=b.cum_return, lower=b.lower, upper=b.upper, bars=b.bars,
                                       message=f"{b.portfolio}: {b.message}")
                self._drift[b.portfolio] = "below"
            else:
                self._drift.pop(b.portfolio, None)
        for f in report.forecasts:
            key = f"model:{f.model}"
            if f.state == "worse":
                if self._drift.get(key) != "worse":
                    self.notifier.send("drift", kind="forecast test", model=f.model, state=f.state,
                                       live_ratio=f.live_ratio, p_worse=f.p_worse, outcomes=f.outcomes,
                                       message=f.message)
                self._drift[key] = "worse"
            else:
                self._drift.pop(key, None)


def notifier_for(cfg: Config, logger: logging.Logger | None = None) -> Notifier:
    """The account's notifier (no webhooks configured = disabled: every ``send`` is a no-op)."""
    d = cfg.data
    return Notifier(cfg.paper.notify, {"account": cfg.paper.account, "exchange": d.exchange, "symbol": d.symbol,
                                       "timeframe": d.timeframe}, logger=logger)
