"""Shared pieces of the monitor, notification and drift tests: a backtest run, a crashing market, a local
webhook receiver and an in-thread monitor server (all on 127.0.0.1)."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import Config, parse_config
from tests.paper.helpers import T0, raw_config

BACKTEST_START = "2018-01-01"  # before the paper tests' 2020 bars: the band is not fit on the paper period


def make_backtest_run(out: Path) -> Path:
    """``walkforward run`` (forecasts, evaluation, metrics.json, equity.csv) of the paper tests' config on
    400 bundled daily bars from 2018-01-01; returns the run directory."""
    from backtest.evaluate import evaluate
    from backtest.pipeline import write_evaluation
    from backtest.run import run_forecasts

    raw = raw_config("http://127.0.0.1:1", out)
    raw["data"] = {"source": "bundled", "start": BACKTEST_START, "end": "2019-02-05"}
    raw["walkforward"]["executor"] = "sequential"
    raw["run"]["name"] = "backtest"
    cfg = parse_config(raw, "backtest config")
    fr = run_forecasts(cfg, out)
    sym = fr.data.symbols[0]
    ev = evaluate(cfg, fr.predictions, fr.data.bars, fr.data.timeframe, synthetic=fr.data.synthetic)
    write_evaluation(fr.run_dir, ev)
    return fr.run_dir


def crashing(source: pd.DataFrame, start: int, per_bar: float = -0.06) -> pd.DataFrame:
    """``source`` with every bar from row ``start`` on moving ``per_bar`` (a fraction) from open to close,
    each bar opening at the previous close: a market far below anything the 2018 backtest saw."""
    out = source.copy()
    for i in range(start, len(out)):
        o = float(out["close"].iloc[i - 1])
        c = o * (1 + per_bar)
        out.iloc[i, out.columns.get_loc("open")] = o
        out.iloc[i, out.columns.get_loc("close")] = c
        out.iloc[i, out.columns.get_loc("high")] = max(o, c) * 1.001
        out.iloc[i, out.columns.get_loc("low")] = min(o, c) * 0.999
    return out


def monitor_config(url: str, folder: Path, **paper: Any) -> Config:
    raw = raw_config(url, folder)
    raw["paper"].update(paper)
    return parse_config(raw, "test config")


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POSTed JSON body; ``statuses`` answers the first
    requests with those HTTP statuses (then 200); ``hold`` keeps every answer back until it is set."""

    def __init__(self, statuses: list[int] | None = None, hold: threading.Event | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.tries = 0
        self.statuses = list(statuses or [])
        self.hold = hold
        self.got = threading.Condition()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if rec.hold is not None:
                    rec.hold.wait(30)
                with rec.got:
                    rec.tries += 1
                    status = rec.statuses.pop(0) if rec.statuses else 200
                    if status == 200:
                        rec.raw.append(body)
                        rec.bodies.append(json.loads(body))
                    rec.got.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN-123"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The bodies once ``n`` were received (or what there is after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self.got:
            while len(self.bodies) < n and time.monotonic() < deadline:
                self.got.wait(deadline - time.monotonic())
            return list(self.bodies)


@contextmanager
def serving(configs: list[Config], clock=None) -> Iterator[str]:  # noqa: ANN001
    """The monitor app of ``configs`` under uvicorn in a thread on 127.0.0.1; yields its base URL."""
    import uvicorn

    from backtest.paper.monitor import create_app

    app = create_app(configs, clock=clock)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def replay(cfg: Config, emu, source: pd.DataFrame, last: int):  # noqa: ANN001, ANN201
    """A paper account of ``cfg`` created at bar ``T0`` and caught up to bar ``last`` (two cycles)."""
    from backtest.paper.engine import PaperTrader
    from tests.paper.helpers import bar_close, no_sleep

    trader = PaperTrader(cfg, fetch_sleep=no_sleep)
    emu.now = bar_close(source, T0)
    trader.cycle(emu.now)
    emu.now = bar_close(source, last)
    return trader, trader.cycle(emu.now)
