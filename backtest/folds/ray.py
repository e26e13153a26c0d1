"""Units of work as Ray tasks (``walkforward.executor = "ray"``, section ``[ray]``).

The run's bars go into Ray's object store **once** (``ray.put``); a task is one unit computed as every
executor computes it (:func:`backtest.folds.compute.worker_unit`), on bars copied out of the object store
first (a shared-memory buffer is read-only and differently aligned). Workers return fold outputs as data
and write nothing; the driver writes each fold as its unit arrives (:mod:`backtest.folds.execute`).

Faults: a worker process that dies mid-task is re-run by Ray (``ray.max_retries``); a unit is a pure
function of its inputs, so the retry gives the same forecasts. Ctrl-C on the driver cancels every
outstanding task and leaves only complete folds on disk. An address that does not answer within
``ray.connect_timeout_s`` is one :class:`~backtest.errors.ConfigError` line, checked before the run
directory is created (:func:`connect` is called by the run before anything is written).
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import RayConfig
from backtest.errors import ConfigError
from backtest.folds.units import Unit, needs_tensorflow

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)  # the folder holding backtest/, models/, ...


#: The HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server (a Ray GCS, or a Ray Client
#: server) answers with a SETTINGS frame of its own (RFC 9113, section 3.4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_reachable(address: str, timeout_s: float) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` address must answer as a gRPC server (what a Ray head and a Ray
    Client server are) within ``timeout_s`` in all -- one deadline over every address the host name
    resolves to, the TCP connection and the HTTP/2 handshake. Without this, ``ray.init`` waits on a
    silent or foreign address for minutes, logging as it retries."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray.address = {address!r}: expected 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    deadline = time.monotonic() + timeout_s
    try:
        infos = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"ray.address = {address!r}: cluster unreachable ({exc.strerror or exc})") from None
    why, answered = "timed out", False
    for family, kind, proto, _, addr in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            why = "timed out"
            break
        with socket.socket(family, kind, proto) as s:
            s.settimeout(left)
            try:
                s.connect(addr)
            except OSError as exc:  # socket.timeout is TimeoutError("timed out")
                why = exc.strerror or str(exc)
                continue
            try:
                s.settimeout(max(0.001, deadline - time.monotonic()))
                s.sendall(_H2_PREFACE)
                head = s.recv(9)
            except (socket.timeout, OSError):
                head = b""
            if len(head) >= 4 and head[3] == 4:  # a SETTINGS frame: an HTTP/2 (gRPC) server
                answered = True
                break
            why = "it accepts connections but does not answer as a Ray cluster"
    if answered and address.startswith("ray://"):
        return  # a Ray Client server: the gRPC handshake is what can be checked without its protocol
    if answered:
        import grpc

        try:  # a Ray head's GCS answers GetClusterId; another HTTP/2 server (a proxy) does not
            with grpc.insecure_channel(hostport) as channel:
                channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")(
                    b"", timeout=max(0.001, deadline - time.monotonic()))
            return
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            why = ("timed out" if code == grpc.StatusCode.DEADLINE_EXCEEDED
                   else "it answers, but not as a Ray cluster's head (GCS)")
    raise ConfigError(f"ray.address = {address!r}: cluster unreachable ({why} within "
                      f"ray.connect_timeout_s = {timeout_s:g} s)")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Ray's start-up log lines (written to fd 2 by its C++ core and its Python loggers) kept off the terminal;
    what was written is given back to stderr only when the block fails with something other than a user error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except ConfigError:
            raise
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def connect(rc: RayConfig) -> bool:
    """Connect to (or start) Ray as ``rc`` says; returns True when this call initialised Ray (and so must shut
    it down). An already initialised Ray (a notebook, a test fixture) is used as it is."""
    import logging

    import ray

    if rc.address not in (None, "auto"):
        check_reachable(rc.address, rc.connect_timeout_s)
    if ray.is_initialized():
        return False
    env = {"PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    opts: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "include_dashboard": False,
                            "logging_level": logging.ERROR, "configure_logging": True}
    if rc.address is None:
        opts.update(address="local", num_cpus=rc.local_cpus or os.cpu_count(),
                    object_store_memory=rc.object_store_mb * 1024 * 1024)
    else:
        opts.update(address=rc.address)
        opts.pop("include_dashboard")
    try:
        with _quiet_stderr():
            ray.init(**opts)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"ray.address = {rc.address!r}: cannot connect ({msg})") from None
    return True


@contextlib.contextmanager
def connected(rc: RayConfig) -> Iterator[None]:
    """Ray connected (or started) for the block (:func:`connect`), and shut down after if this call started it."""
    started = connect(rc)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def _remote_unit(unit: Unit, bars: dict[str, pd.DataFrame]) -> list[Any]:
    """Worker side: one unit, computed as every executor computes it (one TensorFlow and BLAS thread)."""
    from backtest.folds.compute import worker_unit

    own = {s: b.copy() for s, b in bars.items()}  # out of the read-only, differently aligned object-store buffer
    return worker_unit(unit, own)


def run_on_ray(units: list[Unit], bars: dict[str, pd.DataFrame], rc: RayConfig,
               take: Callable[[Unit, list[Any]], None]) -> None:
    """Submit every unit as a Ray task (``ray.num_cpus`` each; ``num_gpus`` for network units) and hand each
    unit's outputs to ``take`` (the driver's writer) as it arrives. Ctrl-C cancels what is outstanding."""
    if not units:
        return
    import ray

    with connected(rc):
        remote = ray.remote(_remote_unit)
        bars_ref = ray.put(bars)
        pending: dict[Any, Unit] = {}
        for unit in units:
            network = needs_tensorflow(unit.tasks)
            ref = remote.options(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus if network else 0,
                                 max_retries=rc.max_retries, retry_exceptions=False).remote(unit, bars_ref)
            pending[ref] = unit
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    take(pending.pop(ref), ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


__all__ = ["check_reachable", "connect", "connected", "run_on_ray"]
