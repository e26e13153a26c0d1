"""``walkforward paper serve``: a read-only web page and JSON API over one or more paper accounts.

Starlette (routing, JSON responses, static files) served by uvicorn; the page draws its charts with
plotly.js from the ``plotly`` wheel's bundled ``plotly.min.js``, so it works offline (no CDN).

The server only **reads**: each request takes a :func:`~backtest.paper.readonly.read_snapshot` of the
ledger through a read-only SQLite connection (re-read only when the file changed), the account's log
file and its candle cache. It never writes a file, never takes the account's lock, and a ``paper run``
is never held up by more than one short read transaction. If the ledger cannot be read for a moment
(a killed ``paper run`` left a transaction for its next run to roll back), the last good snapshot is
served and the health section says why.

API (all ``GET``, JSON; ``NAME`` = ``paper.account``):

``/api/accounts``                 the accounts served: name, symbol, timeframe, ledger path
``/api/accounts/NAME``            account, per portfolio position, cash, equity, return, signal, drift state
``/api/accounts/NAME/equity``     equity per portfolio at each bar's close, and buy & hold's label
``/api/accounts/NAME/fills``      newest fills first, with fees and slippage cost
``/api/accounts/NAME/forecasts``  newest bars first: forecasts and the signals decided on them
``/api/accounts/NAME/health``     newest bar, next decision time, lateness, newest cached candle, last error
``/api/accounts/NAME/drift``      return bands and forecast tests (:mod:`backtest.paper.drift`)
``/api/state``                    all of the above for every account (what the page polls)
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import Config
from backtest.errors import ConfigError, LedgerError
from backtest.paper.drift import DriftReport, drift_report
from backtest.paper.paths import AccountPaths, account_paths
from backtest.paper.readonly import Snapshot, last_log_error, read_snapshot
from backtest.paper.views import (
    account_view, cache_newest, equity_view, fills_view, forecasts_view, health_view, json_safe,
)

STATIC = Path(__file__).with_name("static")
Clock = Callable[[], pd.Timestamp]


def wall_clock() -> pd.Timestamp:
    """The wall clock, UTC: how late the feed is (the server's one reading of the clock; injectable)."""
    return pd.Timestamp.now(tz="UTC")


def plotly_js() -> Path:
    """The ``plotly.min.js`` bundled in the plotly wheel (served at ``/static/plotly.min.js``)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ConfigError(f"{path}: plotly.min.js not found in the plotly package (reinstall plotly)")
    return path


@dataclass
class Watched:
    """One account the server shows, with its last good snapshot and drift report (re-read when the file changes)."""

    cfg: Config
    paths: AccountPaths
    stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the ledger when last read
    snapshot: Snapshot | None = None
    drift: DriftReport | None = None
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return self.cfg.paper.account

    def refresh(self) -> None:
        """Re-read the ledger if it changed; keep the last good snapshot when it cannot be read now."""
        with self.lock:
            try:
                st = os.stat(self.paths.ledger)
                stamp = (st.st_mtime_ns, st.st_size)
            except OSError:
                self.error = f"{self.paths.ledger}: no paper ledger yet"
                return
            if stamp == self.stamp and self.error is None:
                return
            try:
                snap = read_snapshot(self.paths.ledger)
            except LedgerError as err:
                self.error = str(err)
                return
            self.snapshot, self.stamp, self.error = snap, stamp, None
            self.drift = drift_report(snap, self.cfg.paper.drift)


def watch(configs: list[Config]) -> list[Watched]:
    """The accounts of ``configs``; two configs naming one account are a ConfigError."""
    out: list[Watched] = []
    for cfg in configs:
        if any(w.name == cfg.paper.account for w in out):
            raise ConfigError(f"paper.account {cfg.paper.account!r} is given twice; each served account needs its own name")
        out.append(Watched(cfg, account_paths(cfg)))
    return out


def account_state(w: Watched, now: pd.Timestamp) -> dict[str, Any]:
    """Everything the page shows for one account (the ``/api/state`` entry)."""
    w.refresh()
    snap = w.snapshot
    health = health_view(snap, w.cfg, now, log_error=last_log_error(w.paths.log), ledger_error=w.error,
                         cache_newest=cache_newest(w.cfg))
    if snap is None or snap.account is None:
        return {"account": {"account": w.name, "ledger": str(w.paths.ledger), "created": False}, "health": health,
                "equity": None, "fills": [], "forecasts": [], "drift": None}
    return {"account": account_view(snap, w.cfg, w.drift), "equity": equity_view(snap), "fills": fills_view(snap),
            "forecasts": forecasts_view(snap), "health": health,
            "drift": w.drift.to_json() if w.drift is not None else None}


def create_app(configs: list[Config], *, clock: Clock | None = None, refresh_s: float | None = None):  # noqa: ANN201
    """The Starlette app serving the accounts of ``configs`` (see the module docstring)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    accounts = {w.name: w for w in watch(configs)}
    clock = clock or wall_clock
    refresh = refresh_s if refresh_s is not None else configs[0].paper.serve.refresh_s
    js = plotly_js()

    def _account(request) -> Watched:  # noqa: ANN001
        name = request.path_params["name"]
        if name not in accounts:
            from starlette.exceptions import HTTPException

            raise HTTPException(404, f"no account {name!r}; served: {', '.join(accounts)}")
        return accounts[name]

    def _part(key: str):  # noqa: ANN202
        def endpoint(request):  # noqa: ANN001, ANN202
            state = account_state(_account(request), clock())
            return JSONResponse(json_safe(state[key] if key != "all" else state["account"]))
        return endpoint

    def state(request):  # noqa: ANN001, ANN202
        now = clock()
        return JSONResponse(json_safe({"now": now.isoformat(), "refresh_s": refresh,
                                       "accounts": [account_state(w, now) for w in accounts.values()]}))

    def listing(request):  # noqa: ANN001, ANN202
        return JSONResponse([{"account": w.name, "symbol": w.cfg.data.symbol, "timeframe": w.cfg.data.timeframe,
                              "ledger": str(w.paths.ledger)} for w in accounts.values()])

    def index(request):  # noqa: ANN001, ANN202
        now = clock()
        initial = {"now": now.isoformat(), "refresh_s": refresh,
                   "accounts": [account_state(w, now) for w in accounts.values()]}
        page = (STATIC / "index.html").read_text(encoding="utf-8")
        data = json.dumps(json_safe(initial)).replace("</", "<\\/")  # safe inside <script>
        return HTMLResponse(page.replace("/*INITIAL_STATE*/null", data))

    def plotly_file(request):  # noqa: ANN001, ANN202
        from starlette.responses import FileResponse

        return FileResponse(js, media_type="text/javascript")

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/accounts", listing),
        Route("/api/accounts/{name}", _part("all")),
        *[Route(f"/api/accounts/{{name}}/{k}", _part(k)) for k in ("equity", "fills", "forecasts", "health", "drift")],
        Route("/static/plotly.min.js", plotly_file),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


def serve(configs: list[Config], host: str, port: int, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn handles both); ``on_ready(url)`` once the socket listens."""
    import socket

    import uvicorn

    app = create_app(configs)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"paper serve: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(64)
    bound = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    if on_ready:
        on_ready(url)
    server.run(sockets=[sock])
    return 0
