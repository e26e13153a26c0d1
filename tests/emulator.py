"""A local Binance-spot REST emulator for tests: no network, real ccxt on the client side.

:class:`ExchangeEmulator` serves one OHLCV frame (the project's frame convention:
UTC ``DatetimeIndex`` named ``timestamp`` = bar **open** time, float64
``open high low close volume``) on ``http://127.0.0.1:<random port>`` in the
Binance spot REST format, enough for ``ccxt.binance().load_markets()`` and
``fetch_ohlcv()``:

* ``GET /api/v3/exchangeInfo`` -- one spot market (``BTCUSDT`` by default) with
  the filters ccxt reads (price tick, lot size, notional);
* ``GET /fapi/v1/exchangeInfo``, ``GET /dapi/v1/exchangeInfo`` -- no markets
  (ccxt's binance loads spot, linear and inverse markets by default);
* ``GET /api/v3/klines?symbol=&interval=&startTime=&endTime=&limit=`` -- bars
  whose open time is in ``[startTime, endTime]`` (both in ms, inclusive, as on
  Binance), at most ``min(limit, max_limit)`` of them, the first ones from
  ``startTime`` or the last ones before ``endTime`` when only that is given;
* ``GET /api/v3/time``, ``GET /api/v3/ping``.

Replaying history: a bar is served only if its open time is ``<= now``; the bar
that contains ``now`` (``open <= now < open + 1 bar``) is served as an
**incomplete** candle (close moved part of the way from open, volume scaled by
the elapsed fraction), as a live exchange does. Set :attr:`ExchangeEmulator.now`
to move time forward one bar at a time.

Faults (consumed one per klines request, in order, from :attr:`faults`):
``"429"`` or any other HTTP status as a string or int, ``"timeout"`` (the
answer is held back ``timeout_sleep_s`` seconds, longer than the client's
timeout), ``"garbage"`` (HTTP 200 with a non-JSON body), ``"badshape"``
(HTTP 200, JSON of the wrong shape). :attr:`always_status` answers every klines
request with that status. ``overlap=k`` makes each page start ``k`` bars
before ``startTime`` (candles duplicated across consecutive pages).

Every request is logged in :attr:`requests` as ``(path, params)``.

Several markets: ``markets={"ETH/USDT": eth_frame, ...}`` serves those frames too (same timeframe,
same clock and faults), each listed in ``exchangeInfo`` and answered by its own ``symbol`` id.
"""
from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from backtest.data.frame import timeframe_delta

Fault = str | int

_MS = pd.Timedelta(milliseconds=1)


def _to_ms(ts: pd.Timestamp) -> int:
    return int((ts - pd.Timestamp(0, tz="UTC")) // _MS)


class ExchangeEmulator:
    """A threaded HTTP server on 127.0.0.1 that replays ``frame`` as Binance spot klines.

    Args:
        frame: bars in the frame convention (UTC open times, float64 OHLCV).
        now: the emulator's clock (tz-aware or naive UTC); bars opening after it are not served.
        symbol: unified ccxt symbol of the one market served (``"BTC/USDT"`` -> id ``BTCUSDT``).
        timeframe: the bar length of ``frame`` (a Binance interval such as ``"1d"``);
            klines requests for another interval get Binance's "Invalid interval." error.
        max_limit: most bars per klines answer (Binance: 1000); set it small to force many pages.
        overlap: bars repeated from before ``startTime`` at the head of each answer.
        timeout_sleep_s: how long a ``"timeout"`` fault holds the answer back, in seconds.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        now: pd.Timestamp,
        symbol: str = "BTC/USDT",
        timeframe: str = "1d",
        max_limit: int = 1000,
        overlap: int = 0,
        timeout_sleep_s: float = 2.0,
        markets: dict[str, pd.DataFrame] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar_ms = int(timeframe_delta(timeframe) // _MS)
        self.timeframe = timeframe
        self.base, self.quote = symbol.split("/")
        self.market_id = self.base + self.quote
        self.max_limit = max_limit
        self.overlap = overlap
        self.timeout_sleep_s = timeout_sleep_s
        self.faults: deque[Fault] = deque()
        self.always_status: int | None = None
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.now = now
        self._others: dict[str, tuple[str, str, np.ndarray, np.ndarray]] = {}
        for sym, f in (markets or {}).items():
            base, quote = sym.split("/")
            times, values = _arrays(f)
            self._others[base + quote] = (base, quote, times, values)
        self.set_frame(frame)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- state
    @property
    def now(self) -> pd.Timestamp:
        """The emulator's clock, UTC."""
        return self._now

    @now.setter
    def now(self, value: pd.Timestamp | str) -> None:
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        with self._lock:
            self._now = ts

    def set_frame(self, frame: pd.DataFrame) -> None:
        """Replace the bars served (same convention as the constructor's ``frame``)."""
        times, values = _arrays(frame)
        with self._lock:
            self._times = times
            self._values = values

    def add_faults(self, *faults: Fault | Iterable[Fault]) -> None:
        """Queue faults, consumed one per klines request: ``"429"``/any status, ``"timeout"``,
        ``"garbage"``, ``"badshape"``."""
        with self._lock:
            for f in faults:
                if isinstance(f, (str, int)):
                    self.faults.append(f)
                else:
                    self.faults.extend(f)

    def klines_requests(self) -> list[dict[str, str]]:
        """The query parameters of every ``/api/v3/klines`` request so far, in order."""
        with self._lock:
            return [p for path, p in self.requests if path == "/api/v3/klines"]

    def clear_log(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    # ------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._server is None:
            raise RuntimeError("emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ExchangeEmulator:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        handler = type("_Handler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._stop.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="exchange-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (held-back ``timeout`` answers are abandoned)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ExchangeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def make_exchange(self, *, timeout_ms: int = 500) -> Any:
        """A ccxt binance instance whose REST calls all go to this emulator."""
        from backtest.data.ccxt_source import make_exchange

        exchange = make_exchange("binance", base_url=self.url, timeout_ms=timeout_ms)
        exchange.session.trust_env = False  # never route 127.0.0.1 through an HTTP(S)_PROXY
        return exchange

    # -------------------------------------------------------------- answers
    def _log(self, path: str, params: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((path, dict(params)))

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self.always_status is not None:
                return self.always_status
            return self.faults.popleft() if self.faults else None

    def server_time_ms(self) -> int:
        """``now`` in ms since the epoch, as ``/api/v3/time`` answers it."""
        return _to_ms(self.now)

    def exchange_info(self) -> dict[str, Any]:
        """The ``/api/v3/exchangeInfo`` answer: the spot market(s), trading."""
        info = self._exchange_info()
        one = info["symbols"][0]
        for market_id, (base, quote, _, _) in self._others.items():
            info["symbols"].append({**one, "symbol": market_id, "baseAsset": base, "quoteAsset": quote})
        return info

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self.server_time_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000}
            ],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": self.market_id,
                    "status": "TRADING",
                    "baseAsset": self.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": self.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "otoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": True,
                    "cancelReplaceAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000",
                         "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
                        {"filterType": "LOT_SIZE", "minQty": "0.00001000",
                         "maxQty": "9000.00000000", "stepSize": "0.00001000"},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000",
                         "maxQty": "100.00000000", "stepSize": "0.00000000"},
                        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
                         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
                }
            ],
        }

    def klines(self, params: dict[str, str]) -> tuple[int, Any]:
        """``(status, json)`` for a klines request with Binance's parameter semantics."""
        if params.get("symbol") != self.market_id and params.get("symbol") not in self._others:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if params.get("interval") != self.timeframe:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            limit = int(params.get("limit", 500))
            start = int(params["startTime"]) if "startTime" in params else None
            end = int(params["endTime"]) if "endTime" in params else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        limit = max(1, min(limit, self.max_limit))
        with self._lock:
            times, values, now_ms = self._times, self._values, _to_ms(self._now)
            if params.get("symbol") in self._others:
                _, _, times, values = self._others[params["symbol"]]
        visible = times <= now_ms  # bars that have opened by now
        lo = 0 if start is None else int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="right")) if end is not None else len(times)
        hi = min(hi, int(visible.sum()))
        if start is None:
            lo = max(lo, hi - limit)
        else:
            lo = max(0, lo - self.overlap) if lo < hi else lo
            hi = min(hi, lo + limit)
        return 200, [self._kline(times[i], values[i], now_ms) for i in range(lo, hi)]

    def _kline(self, t: int, v: np.ndarray, now_ms: int) -> list[Any]:
        o, h, lo, c, vol = (float(x) for x in v)
        close_ms = t + self._bar_ms - 1
        if now_ms < t + self._bar_ms:  # the bar containing now: still open
            frac = (now_ms - t) / self._bar_ms
            c = o + (c - o) * frac
            h, lo, vol = max(o, c), min(o, c), vol * frac
        return [int(t), f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", f"{vol:.8f}",
                int(close_ms), f"{vol * c:.8f}", 100, f"{vol / 2:.8f}", f"{vol * c / 2:.8f}", "0"]

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, str, bytes, float]:
        """``(status, content type, body, delay in s)`` for one GET request."""
        delay = 0.0
        if path == "/api/v3/klines":
            fault = self._next_fault()
            if fault == "timeout":
                delay = self.timeout_sleep_s
            elif fault == "garbage":
                return 200, "text/html", b"<html><body>502 Bad Gateway (cached page)</body>", 0.0
            elif fault == "badshape":
                return 200, "application/json", json.dumps({"data": {"candles": "none"}}).encode(), 0.0
            elif fault is not None:
                status = int(fault)
                if status == 429:
                    body = {"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."}
                    return 429, "application/json", json.dumps(body).encode(), 0.0
                return status, "text/plain", f"{status} server error".encode(), 0.0
            status, obj = self.klines(params)
        elif path == "/api/v3/exchangeInfo":
            status, obj = 200, self.exchange_info()
        elif path in ("/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"):
            status, obj = 200, {"timezone": "UTC", "serverTime": self.server_time_ms(), "symbols": []}
        elif path == "/api/v3/time":
            status, obj = 200, {"serverTime": self.server_time_ms()}
        elif path == "/api/v3/ping":
            status, obj = 200, {}
        else:
            status, obj = 404, {"code": -1, "msg": f"emulator: no route {path}"}
        return status, "application/json", json.dumps(obj).encode(), delay


def _arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Open times (ms since the epoch) and OHLCV values of a frame in the project's convention."""
    times = np.asarray([_to_ms(t) for t in pd.DatetimeIndex(frame.index).tz_convert("UTC")], dtype=np.int64)
    return times, frame[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)


class _Handler(BaseHTTPRequestHandler):
    emulator: ExchangeEmulator

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query))
        emu = self.emulator
        emu._log(parts.path, params)
        status, ctype, body, delay = emu.answer(parts.path, params)
        if delay and emu._stop.wait(delay):
            return
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout fault)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean
