"""Webhook notifications of the paper trader (``[paper.notify]``): a JSON POST per event to every URL.

Events (``event`` key of the JSON body; every body also names ``account``, ``exchange``, ``symbol``
and ``timeframe``): ``fill`` (a paper fill: bar, decision bar, side, size, prices, fees), ``error``
(a line the paper logger wrote at level ERROR), ``stale`` (the next candle is late by more than
``paper.notify.stale_after_bars``), ``drift`` (a portfolio fell below its backtest band, or a
model's forecasts became worse than the backtest's; :mod:`backtest.paper.drift`).

Delivery never blocks or fails a cycle: :meth:`Notifier.send` only puts the event on a queue; one
background thread POSTs it (``paper.notify.timeout_s`` per try) and re-sends a failed POST
``paper.notify.retries`` times, waiting ``backoff_s``, ``2 * backoff_s``, ... between tries. A
message that still fails is dropped with one warning in the log (the URL is logged by host only:
webhook URLs often carry a token). Bodies never carry an API key: they are built from ledger
numbers only, and passed through :func:`backtest.paper.sandbox.redact` before they are sent.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from backtest.config import NotifyConfig
from backtest.paper.logs import get_logger

_STOP = object()


def url_host(url: str) -> str:
    """``scheme://host[:port]`` of a webhook URL (its path and query may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class Notifier:
    """Queues events and POSTs them to ``cfg.webhooks`` from one daemon thread.

    Args:
        cfg: the ``[paper.notify]`` section.
        context: keys added to every body (account, exchange, symbol, timeframe).
        sleep: the wait between re-sends (injectable; the default can be cut short by :meth:`close`).
    """

    def __init__(self, cfg: NotifyConfig, context: dict[str, Any] | None = None, *,
                 sleep: Callable[[float], Any] | None = None, logger: logging.Logger | None = None) -> None:
        self.cfg = cfg
        self.context = dict(context or {})
        self.log = logger or get_logger()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.webhooks)

    def send(self, event: str, **body: Any) -> None:
        """Queue ``event`` with ``body`` for every webhook; returns at once, never raises."""
        if not self.enabled or event not in self.cfg.events:
            return
        from backtest.paper.views import json_safe

        try:
            payload = json.dumps(json_safe({"event": event, **self.context, **body}), default=str, allow_nan=False)
        except (TypeError, ValueError) as exc:
            self.log.warning("webhook %s event not sent: body is not JSON (%s)", event, exc)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="walkforward-notify", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.log.warning("webhook %s event dropped: 1000 messages are waiting (webhooks unreachable?)", event)

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (at most ``timeout`` seconds; default one full retry cycle), then stop."""
        if self._thread is None:
            return
        if timeout is None:
            c = self.cfg
            timeout = (c.retries + 1) * c.timeout_s + c.backoff_s * (2 ** c.retries) + 1.0
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._stop.set()  # cut a back-off wait short
        self._thread.join(1.0)
        self._thread = None

    # ----------------------------------------------------------------- delivery
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            for url in self.cfg.webhooks:
                self._deliver(url, item)

    def _deliver(self, url: str, payload: str) -> bool:
        from backtest.paper.sandbox import redact

        data = redact(payload).encode("utf-8")
        reason = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                if self._stop.is_set():
                    break
                self._sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, method="POST", headers={
                "Content-Type": "application/json", "User-Agent": "walkforward-paper"})
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    if 200 <= resp.status < 300:
                        self.delivered += 1
                        return True
                    reason = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = type(exc).__name__ + (f": {getattr(exc, 'reason', '')}" if getattr(exc, "reason", "") else "")
        self.failed += 1
        self.log.warning("webhook %s: message not delivered after %d tries (%s)", url_host(url),
                         self.cfg.retries + 1, reason)
        return False


class ErrorForwarder(logging.Handler):
    """Sends every ERROR line of the paper logger as an ``error`` event (the message as the log shows it,
    secrets already redacted by the log's formatter rules)."""

    def __init__(self, notifier: Notifier) -> None:
        super().__init__(level=logging.ERROR)
        self.notifier = notifier

    def emit(self, record: logging.LogRecord) -> None:
        from backtest.paper.sandbox import redact

        try:
            self.notifier.send("error", level=record.levelname, message=redact(record.getMessage()),
                               logged_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)))
        except Exception:  # noqa: BLE001 - a notification never breaks logging
            self.handleError(record)
