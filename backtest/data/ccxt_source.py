"""OHLCV download through ccxt (sync API), paginated, retried, and cached incrementally.

Time alignment: every timestamp is a bar's **open** time, UTC. Bar ``t`` is
complete only at ``t + 1 bar``, so a bar with ``t + 1 bar > now`` (the candle
still forming) is never returned. Ranges are half-open: ``since`` is the first
open time wanted (inclusive), ``until`` the first open time *not* wanted
(exclusive). Exchange timestamps are integer milliseconds since the epoch.

Errors are the project's one-line errors: :class:`~backtest.errors.ConfigError`
for a bad exchange id, symbol, timeframe or URL; :class:`~backtest.errors.ExchangeError`
when the exchange times out, fails or answers garbage after all retries.
API keys are never read here (downloads use public endpoints only).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
import pandas as pd
from tqdm import tqdm

from backtest.data.cache import cache_path, read_cache, write_cache
from backtest.data.frame import COLUMNS, timeframe_delta, timeframe_seconds
from backtest.errors import ConfigError, ExchangeError

#: Where a first download starts when no ``since`` is given (before any crypto exchange's USDT pairs).
DEFAULT_SINCE = pd.Timestamp("2017-01-01", tz="UTC")

_T = TypeVar("_T")
_EPOCH = pd.Timestamp(0, tz="UTC")
_MAX_DETAIL = 160  # characters of a ccxt message kept in our one-line errors


# --------------------------------------------------------------------------- exchange
def make_exchange(
    exchange_id: str,
    *,
    base_url: str | None = None,
    timeout_ms: int = 30000,
    sandbox: bool = False,
) -> ccxt.Exchange:
    """A ccxt exchange instance (sync API, rate limit on, no API keys).

    Args:
        exchange_id: a ccxt exchange id such as ``"binance"`` (see ``ccxt.exchanges``).
        base_url: ``scheme://host[:port][/prefix]`` that replaces the scheme and host of
            every REST URL in ``exchange.urls["api"]`` (a local emulator or a proxy);
            the URL paths (``/api/v3``, ``/fapi/v1``...) are kept.
        timeout_ms: HTTP timeout per request, in milliseconds.
        sandbox: use the exchange's testnet URLs (``set_sandbox_mode``), before ``base_url``.

    Raises:
        ConfigError: ``exchange_id`` is not a ccxt exchange, or ``base_url`` is not an http(s) URL.
    """
    if not isinstance(exchange_id, str) or exchange_id not in ccxt.exchanges:
        raise ConfigError(
            f"exchange {exchange_id!r} is not a ccxt exchange; use a ccxt exchange id such as "
            "binance, kraken, coinbase or bitstamp (ccxt.exchanges lists them all)"
        )
    exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True, "timeout": int(timeout_ms)})
    if sandbox:
        try:
            exchange.set_sandbox_mode(True)
        except ccxt.NotSupported as exc:
            raise ConfigError(f"exchange {exchange_id!r} has no sandbox (testnet) URLs") from exc
    if base_url is not None:
        exchange.urls["api"] = override_base_url(exchange.urls["api"], base_url)
    return exchange


def override_base_url(api: Any, base_url: str) -> Any:
    """``api`` (a URL string, or a dict/list of them, nested) with each URL's scheme and host
    replaced by ``base_url``; the path and query of each URL are kept.

    ``"https://api.binance.com/api/v3"`` with ``base_url="http://127.0.0.1:8080"``
    becomes ``"http://127.0.0.1:8080/api/v3"``.
    """
    parts = urlsplit(base_url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"base_url {base_url!r} is not an http(s) URL such as http://127.0.0.1:8080")
    base = base_url.rstrip("/")

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        if isinstance(value, str):
            url = urlsplit(value)
            if url.scheme in ("http", "https") and url.netloc:
                return base + value[len(f"{url.scheme}://{url.netloc}"):]
        return value

    return rewrite(api)


# --------------------------------------------------------------------------- retries
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def _retryable(exc: BaseException) -> bool:
    """ccxt's taxonomy: ``OperationFailed`` (network errors, timeouts, 429, 5xx, maintenance)
    may succeed if tried again; a garbage answer (``BadResponse``) or an ``ExchangeError`` will not."""
    return isinstance(exc, ccxt.OperationFailed) and not isinstance(exc, ccxt.BadResponse)


def _call(
    fn: Callable[[], _T],
    *,
    where: str,
    what: str,
    max_retries: int,
    backoff_base: float,
    sleep: Callable[[float], None],
) -> _T:
    """``fn()``, retried up to ``max_retries`` times (so ``max_retries + 1`` tries) on a
    transient ccxt error, sleeping ``backoff_base * 2**attempt`` seconds before retry
    ``attempt + 1``. Every failure leaves as a one-line project error."""
    attempt = 0
    while True:
        try:
            return fn()
        except ccxt.BadSymbol as exc:
            raise ConfigError(f"{where}: the exchange does not know this symbol ({_one_line(exc)})") from None
        except ccxt.BaseError as exc:
            if not _retryable(exc):
                raise ExchangeError(f"{where}: {what} failed: {_one_line(exc)}") from None
            if attempt >= max_retries:
                raise ExchangeError(
                    f"{where}: {what} failed after {attempt + 1} tries: {_one_line(exc)}"
                ) from None
            sleep(backoff_base * 2**attempt)
            attempt += 1
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            # ccxt parsing an answer of the wrong shape (a string, a dict) breaks like this
            raise ExchangeError(f"{where}: {what} failed: unreadable answer ({_one_line(exc)})") from None


# --------------------------------------------------------------------------- download
def _ms(ts: pd.Timestamp) -> int:
    """Milliseconds since the epoch of a UTC timestamp."""
    return int((ts - _EPOCH) // pd.Timedelta(milliseconds=1))


def _utc(ts: pd.Timestamp | str | None, name: str) -> pd.Timestamp | None:
    """``ts`` as a UTC timestamp (a naive one is taken to be UTC already); ``None`` stays ``None``."""
    if ts is None:
        return None
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} {ts!r} is not a date or timestamp") from None
    if t is pd.NaT:
        raise ConfigError(f"{name} {ts!r} is not a date or timestamp")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _check_rows(rows: Any, where: str) -> list[list[float]]:
    """``rows`` if it is a list of ``[ms, open, high, low, close, volume]`` numeric rows."""
    if not isinstance(rows, list):
        raise ExchangeError(f"{where}: fetch_ohlcv answered {type(rows).__name__}, not a list of candles")
    for row in rows:
        if not _is_candle(row):
            raise ExchangeError(
                f"{where}: fetch_ohlcv answered a malformed candle {str(row)[:80]!r}; "
                "expected [ms, open, high, low, close, volume] numbers"
            )
    return [list(r[:6]) for r in rows]


def _is_candle(row: Any) -> bool:
    """``row`` starts with six finite numbers: ``[ms, open, high, low, close, volume]``."""
    return (
        isinstance(row, (list, tuple))
        and len(row) >= 6
        and all(isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) for x in row[:6])
    )


@contextmanager
def _strict_candles(exchange: ccxt.Exchange) -> Iterator[None]:
    """Make ``exchange.fetch_ohlcv`` fail on an answer that is not a list of candle rows.

    ccxt parses any answer into candles, and a garbage body (an HTML page, a dict of the
    wrong shape) becomes rows of ``None`` that its ``since`` filter then silently drops:
    an empty page, indistinguishable from "no more data". This wraps the instance's
    ``parse_ohlcvs`` (through which every ccxt exchange's ``fetch_ohlcv`` returns) to check
    the rows *before* that filter and raise ``ccxt.BadResponse``.
    """
    original = exchange.parse_ohlcvs

    def parse_ohlcvs(ohlcvs: Any, market: Any = None, *args: Any, **kwargs: Any) -> list[list[Any]]:
        if not isinstance(ohlcvs, (list, tuple)):
            raise ccxt.BadResponse(f"{exchange.id} answered {str(ohlcvs)[:60]!r}, not a list of candles")
        for raw in ohlcvs:
            row = exchange.parse_ohlcv(raw, market)
            if not _is_candle(row):
                raise ccxt.BadResponse(f"{exchange.id} answered a malformed candle {str(raw)[:60]!r}")
        return original(ohlcvs, market, *args, **kwargs)

    exchange.parse_ohlcvs = parse_ohlcvs
    try:
        yield
    finally:
        del exchange.parse_ohlcvs  # back to the class's method


def _page_limit(exchange: ccxt.Exchange, market: dict[str, Any]) -> int | None:
    """The most candles the exchange returns per request for this market (ccxt ``features``)."""
    features = getattr(exchange, "features", None) or {}
    node = features.get(market.get("type") or "spot") or {}
    if isinstance(node, dict) and "fetchOHLCV" not in node:  # swap/future: keyed by linear/inverse
        node = node.get("linear" if market.get("linear") else "inverse") or {}
    limit = (node.get("fetchOHLCV") or {}).get("limit") if isinstance(node, dict) else None
    return int(limit) if isinstance(limit, (int, float)) and limit > 0 else None


def rows_to_frame(rows: Sequence[Sequence[float]]) -> pd.DataFrame:
    """Candle rows ``[ms, o, h, l, c, v]`` -> a frame in the convention, duplicates of an open
    time resolved by keeping the **last** row (a later page's copy wins), sorted by time."""
    raw = pd.DataFrame(list(rows), columns=["ms", *COLUMNS]) if rows else pd.DataFrame(columns=["ms", *COLUMNS])
    raw = raw.drop_duplicates("ms", keep="last").sort_values("ms", kind="stable")
    index = pd.DatetimeIndex(pd.to_datetime(raw["ms"].astype("int64"), unit="ms", utc=True), name="timestamp")
    return pd.DataFrame(raw[list(COLUMNS)].to_numpy(dtype="float64"), index=index, columns=list(COLUMNS))


def _load_market(
    exchange: ccxt.Exchange, symbol: str, timeframe: str, where: str, retry: dict[str, Any]
) -> dict[str, Any]:
    _call(exchange.load_markets, where=where, what="load_markets", **retry)
    markets = exchange.markets or {}
    if symbol not in markets:
        near = sorted(s for s in markets if s.split("/")[0] == symbol.split("/")[0])[:5]
        hint = f" (markets with that base: {', '.join(near)})" if near else ""
        raise ConfigError(f"{where}: symbol {symbol!r} is not a market of {exchange.id}{hint}")
    if exchange.timeframes and timeframe not in exchange.timeframes:
        raise ConfigError(
            f"{where}: timeframe {timeframe!r} is not offered; use one of {', '.join(exchange.timeframes)}"
        )
    return markets[symbol]


def check_market(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    *,
    base_url: str | None = None,
    timeout_ms: int = 30000,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Check that ``exchange_id`` is a ccxt exchange that lists ``symbol`` and offers ``timeframe``
    (one ``load_markets`` request, retried like every call); writes nothing.

    Raises:
        ConfigError: unknown exchange id, symbol or timeframe (one line naming it).
        ExchangeError: the exchange failed after all retries.
    """
    exchange = make_exchange(exchange_id, base_url=base_url, timeout_ms=timeout_ms)
    where = f"{exchange_id} {symbol} {timeframe}"
    retry = {"max_retries": max_retries, "backoff_base": backoff_base, "sleep": sleep}
    _load_market(exchange, symbol, timeframe, where, retry)


def _download(
    page: Callable[[int | None], list[list[float]]],
    since: pd.Timestamp | None,
    end: pd.Timestamp,
    now: pd.Timestamp,
    bar_ms: int,
    progress: bool,
    desc: str,
) -> list[list[float]]:
    """All rows from the pages starting at ``since`` (ms cursor) until ``end`` or the forming bar.

    ``page(cursor_ms)`` fetches one page; ``page(None)`` the exchange's latest one, which
    is all that is fetched when ``since`` is ``None``.
    """
    if since is None:
        return page(None)
    rows: list[list[float]] = []
    start_ms, stop_ms, now_ms = _ms(since), _ms(end), _ms(now)
    total = max(0, -(-(stop_ms - start_ms) // bar_ms))
    with tqdm(total=total, unit="bar", desc=desc, disable=not progress, file=sys.stderr, leave=False) as bar:
        cursor = start_ms
        while cursor < stop_ms and cursor + bar_ms <= now_ms:
            got = page(cursor)
            if not got:
                break
            last = max(int(r[0]) for r in got)
            if last < cursor:  # no progress: the exchange keeps answering older bars
                break
            rows.extend(got)
            bar.update(max(0, min((last + bar_ms - cursor) // bar_ms, total - bar.n)))
            cursor = last + bar_ms
    return rows


def fetch_ohlcv_frame(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    *,
    since: pd.Timestamp | None,
    until: pd.Timestamp | None,
    now: pd.Timestamp,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = False,
    limit: int | None = None,
) -> pd.DataFrame:
    """Every **complete** bar of ``symbol`` with open time in ``[since, until)``, paginated.

    Args:
        exchange: a ccxt exchange (see :func:`make_exchange`).
        symbol: unified ccxt symbol, e.g. ``"BTC/USDT"``.
        timeframe: ccxt timeframe, e.g. ``"1d"``, ``"1h"``.
        since: first bar open time wanted (inclusive, UTC). ``None``: only the exchange's
            latest page (its most recent ``limit`` bars).
        until: first bar open time *not* wanted (exclusive, UTC); default ``now``.
        now: the current time (UTC); a bar with ``open + 1 bar > now`` is still forming and dropped.
        max_retries: retries per request after a transient failure (network, timeout, 429, 5xx).
        backoff_base: seconds before the first retry; doubled for each further retry.
        sleep: called with the back-off in seconds (inject a no-op in tests).
        progress: show a tqdm progress bar on stderr.
        limit: candles asked per request; default the exchange's maximum (ccxt ``features``).

    Each page asks ``fetch_ohlcv(symbol, timeframe, since=cursor_ms, limit=limit)``, then
    moves ``cursor`` to the page's last open time + 1 bar; it stops at an empty page, a page
    that makes no progress, or once the cursor reaches ``until`` or the forming bar.

    Returns:
        The frame convention: UTC ``DatetimeIndex`` named ``timestamp`` (bar open times),
        float64 ``open high low close volume``, sorted, unique (a candle repeated across
        pages keeps its last copy).

    Raises:
        ConfigError: unknown symbol or timeframe. ExchangeError: failures after all retries,
        or an answer that is not a list of ``[ms, o, h, l, c, v]`` number rows.
    """
    where = f"{exchange.id} {symbol} {timeframe}"
    retry = {"max_retries": max_retries, "backoff_base": backoff_base, "sleep": sleep}
    bar = timeframe_delta(timeframe)
    bar_ms = timeframe_seconds(timeframe) * 1000
    now_ts = _utc(now, "now")
    since_ts, until_ts = _utc(since, "since"), _utc(until, "until")
    end_ts = now_ts if until_ts is None else min(until_ts, now_ts)
    market = _load_market(exchange, symbol, timeframe, where, retry)
    page_limit = limit if limit is not None else _page_limit(exchange, market)

    def page(cursor: int | None) -> list[list[float]]:
        what = "fetch_ohlcv" + ("" if cursor is None else f" since {pd.Timestamp(cursor, unit='ms', tz='UTC').isoformat()}")
        rows = _call(
            lambda: exchange.fetch_ohlcv(symbol, timeframe, since=cursor, limit=page_limit),
            where=where, what=what, **retry,
        )
        return _check_rows(rows, where)

    with _strict_candles(exchange):
        rows = _download(page, since_ts, end_ts, now_ts, bar_ms, progress, f"{exchange.id} {symbol} {timeframe}")
    frame = rows_to_frame(rows)
    keep = frame.index + bar <= now_ts
    if since_ts is not None:
        keep &= frame.index >= since_ts
    if until_ts is not None:
        keep &= frame.index < until_ts
    return frame.loc[keep]


# --------------------------------------------------------------------------- cache
def update_cache(
    exchange_id: str,
    symbol: str,
    timeframe: str,
    *,
    cache_dir: str | Path,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    now: pd.Timestamp,
    base_url: str | None = None,
    timeout_ms: int = 30000,
    max_retries: int = 5,
    backoff_base: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = False,
) -> tuple[pd.DataFrame, int]:
    """Bring the Parquet cache of ``exchange_id``/``symbol``/``timeframe`` up to date and return it.

    Only new bars are downloaded: with a non-empty cache the download starts at the last
    cached open time + 1 bar (plus, if ``since`` is earlier than the first cached bar,
    the missing head ``[since, first cached)``); with an empty cache it starts at ``since``
    (default 2017-01-01 UTC). It runs to ``until`` (exclusive) or to the last complete bar
    before ``now``. The cache is rewritten atomically, and only after every download
    succeeded: on any error the previous cache file is unchanged.

    Returns:
        ``(frame, new_bars)``: the cached frame restricted to ``[since, until)`` (each bound
        only if given), and how many bars the cache gained.
    """
    path = cache_path(cache_dir, exchange_id, symbol, timeframe)
    bar = timeframe_delta(timeframe)
    since_ts, until_ts, now_ts = _utc(since, "since"), _utc(until, "until"), _utc(now, "now")
    if since_ts is not None and until_ts is not None and since_ts >= until_ts:
        raise ConfigError(f"since {since_ts.isoformat()} must be before until {until_ts.isoformat()}")
    cached = read_cache(path)
    have = cached is not None and len(cached) > 0
    end = now_ts if until_ts is None else min(until_ts, now_ts)

    ranges: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    if not have:
        ranges.append((since_ts if since_ts is not None else DEFAULT_SINCE, end))
    else:
        if since_ts is not None and since_ts < cached.index[0]:
            ranges.append((since_ts, min(cached.index[0], end)))
        ranges.append((cached.index[-1] + bar, end))
    # a range is worth a request only if it can hold a complete bar: open < stop, open + 1 bar <= now
    ranges = [(start, stop) for start, stop in ranges if start < stop and start + bar <= now_ts]
    parts = [cached] if have else []
    if ranges:
        exchange = make_exchange(exchange_id, base_url=base_url, timeout_ms=timeout_ms)
        for start, stop in ranges:
            parts.append(fetch_ohlcv_frame(
                exchange, symbol, timeframe, since=start, until=stop, now=now_ts,
                max_retries=max_retries, backoff_base=backoff_base, sleep=sleep, progress=progress,
            ))
    merged = _merge(parts)
    new_bars = len(merged) - (len(cached) if have else 0)
    if new_bars > 0:
        write_cache(path, merged)
    keep = pd.Series(True, index=merged.index)
    if since_ts is not None:
        keep &= merged.index >= since_ts
    if until_ts is not None:
        keep &= merged.index < until_ts
    return merged.loc[keep.to_numpy()], new_bars


def _merge(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate frames, sort by open time, keep the last copy of a repeated bar."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return rows_to_frame([])
    merged = pd.concat(parts)
    merged = merged[~merged.index.duplicated(keep="last")].sort_index(kind="stable")
    merged.index.name = "timestamp"
    return merged.astype("float64")
