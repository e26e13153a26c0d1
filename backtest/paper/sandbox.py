"""Optional sandbox (testnet) orders, and the handling of API keys.

Paper trading never sends a real order. With ``paper.sandbox_orders = true`` it
*also* sends the orders of one portfolio to the exchange's **sandbox** through
ccxt ``set_sandbox_mode(True)``, and refuses (one-line ConfigError, before any
bar is processed) unless it can confirm the sandbox:

* the exchange has sandbox URLs (``set_sandbox_mode`` succeeds and yields http(s) URLs);
* after it (and after ``data.base_url``, if set), no URL in ``urls["api"]`` points at a
  host of the exchange's live API;
* the API key and secret are set in the environment.

Which orders: the decision of the first model portfolio (e.g. ``linear/long_flat``) at
the newest closed bar, as a market order, sent *after* that bar's transaction has
committed and recorded in ``sandbox_orders`` (so at most once: a crash between the
commit and the send loses that sandbox order rather than duplicating it). The
client order id is derived from the account and the bar, so an exchange that
rejects duplicate ids rejects a repeat. The sandbox account is not reconciled
with the paper ledger; the ledger's fills stay the paper fills.

API keys come from the environment only -- :data:`KEY_ENV`, :data:`SECRET_ENV`
(and :data:`PASSWORD_ENV` for exchanges that need one) -- and are never logged,
printed, written to the ledger or put in a report: they are read here, handed to
the ccxt instance, and every message derived from an exchange error passes
through :func:`redact`.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from backtest.config import DataConfig
from backtest.errors import ConfigError

KEY_ENV = "WALKFORWARD_API_KEY"
SECRET_ENV = "WALKFORWARD_API_SECRET"
PASSWORD_ENV = "WALKFORWARD_API_PASSWORD"
SECRET_ENVS = (KEY_ENV, SECRET_ENV, PASSWORD_ENV)
_MAX = 200


def secret_values() -> list[str]:
    """The non-trivial values of the API-key environment variables (longest first)."""
    vals = [os.environ.get(name, "") for name in SECRET_ENVS]
    return sorted({v for v in vals if len(v) >= 4}, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every API key, secret or password from the environment replaced by ``***``."""
    for v in secret_values():
        text = text.replace(v, "***")
    return text


def one_line(exc: BaseException) -> str:
    """An exception as one redacted line of at most 200 characters."""
    text = redact(" ".join(str(exc).split()) or type(exc).__name__)
    if len(text) > _MAX:
        text = text[: _MAX - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def _hosts(api: Any, hostname: str | None) -> set[str]:
    """Hosts of every http(s) URL in ``api`` (str, or nested dict/list of them)."""
    out: set[str] = set()
    if isinstance(api, dict):
        for v in api.values():
            out |= _hosts(v, hostname)
    elif isinstance(api, (list, tuple)):
        for v in api:
            out |= _hosts(v, hostname)
    elif isinstance(api, str):
        url = api.replace("{hostname}", hostname or "")
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname:
            out.add(parts.hostname.lower())
    return out


def open_sandbox(data: DataConfig) -> Any:
    """A ccxt instance in confirmed sandbox mode, with the keys from the environment; else ConfigError.

    ``data.base_url`` (tests, a local testnet proxy) replaces the sandbox hosts after
    ``set_sandbox_mode``; it must not be a live host either.
    """
    from backtest.data.ccxt_source import make_exchange, override_base_url

    key, secret = os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, "")
    where = f"paper.sandbox_orders ({data.exchange})"
    if not key or not secret:
        raise ConfigError(f"{where}: set {KEY_ENV} and {SECRET_ENV} in the environment (keys are read from there only)")
    exchange = make_exchange(data.exchange, timeout_ms=data.timeout_ms)
    hostname = getattr(exchange, "hostname", None)
    live = _hosts(exchange.urls.get("api"), hostname)
    try:
        exchange.set_sandbox_mode(True)
    except Exception:  # noqa: BLE001 - ccxt raises NotSupported, or TypeError when urls['test'] is None
        raise ConfigError(f"{where}: the exchange has no sandbox (testnet) URL; refusing to send orders") from None
    api = exchange.urls.get("api")
    if not _hosts(api, hostname):
        raise ConfigError(f"{where}: the exchange has no sandbox (testnet) URL; refusing to send orders")
    if data.base_url:
        api = exchange.urls["api"] = override_base_url(api, data.base_url)
    still_live = sorted(_hosts(api, hostname) & live)
    if still_live:
        raise ConfigError(f"{where}: sandbox mode not confirmed: urls['api'] still point at the live host "
                          f"{still_live[0]}; refusing to send orders")
    if not getattr(exchange, "isSandboxModeEnabled", False):
        raise ConfigError(f"{where}: sandbox mode not confirmed (set_sandbox_mode did not take effect); "
                          "refusing to send orders")
    exchange.apiKey = key
    exchange.secret = secret
    if os.environ.get(PASSWORD_ENV):
        exchange.password = os.environ[PASSWORD_ENV]
    return exchange


def send_order(exchange: Any, symbol: str, side: str, amount: float, client_order_id: str) -> tuple[str, str | None, str | None]:
    """Send one market order to the sandbox: ``(status, exchange order id, redacted error)``; never raises."""
    try:
        order = exchange.create_order(symbol, "market", side, amount, None, {"clientOrderId": client_order_id})
        return "sent", str(order.get("id")) if isinstance(order, dict) else None, None
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the paper account goes on
        return "failed", None, one_line(exc)
