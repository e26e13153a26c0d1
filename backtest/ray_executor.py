"""Fold tasks on a Ray cluster (``walkforward.executor = "ray"``, section ``[ray]``).

What travels, and who writes:

* the bars go into Ray's object store **once** (``ray.put``); each task carries its fold spec and model
  config and re-slices ``bars.iloc[:fold.test_stop]`` on the worker, so a task is still given no bar
  after its test block (the same slice the sequential executor hands a fold);
* a cold-start fold is one task; a warm-start (model, seed) chain is one task, because fold ``k`` starts
  from fold ``k-1``'s weights. The previous fold's files travel as bytes, never through a shared disk;
* workers return :class:`~backtest.walkforward.FoldOutput` (forecasts and files as data) and write
  nothing; the driver alone writes each fold atomically (:func:`~backtest.walkforward.write_fold`) as
  it arrives, so a resume after any interruption submits only the folds that are missing.

Faults: a worker process that dies mid-task is re-run by Ray (``ray.max_retries``); a task is a pure
function of its inputs, so the retry gives the same forecasts. Ctrl-C on the driver cancels every
outstanding task and leaves only complete folds on disk. An address that does not answer is one
:class:`~backtest.errors.ConfigError` line.
"""
from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import Config, RayConfig
from backtest.errors import ConfigError
from backtest.walkforward import FoldOutput, FoldResult, FoldTask, Plan, _read_fold, compute_fold, is_complete, write_fold

_BASELINES = ("persistence", "mean", "linear")
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)  # the folder holding backtest/, models/, ...


def _check_reachable(address: str, timeout_s: float) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` address must accept a TCP connection within ``timeout_s``."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"ray.address = {address!r}: expected 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ConfigError(f"ray.address = {address!r}: cluster unreachable ({exc.strerror or exc})") from None


def connect(rc: RayConfig) -> bool:
    """Connect to (or start) Ray as ``rc`` says; returns True when this call initialised Ray (and so must shut it down).

    An already initialised Ray (a notebook, a test fixture) is used as it is.
    """
    import ray

    if rc.address not in (None, "auto"):
        _check_reachable(rc.address, rc.connect_timeout_s)
    if ray.is_initialized():
        return False
    env = {"PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    opts: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "include_dashboard": False}
    if rc.address is None:
        opts.update(address="local", num_cpus=rc.local_cpus or os.cpu_count(),
                    object_store_memory=rc.object_store_mb * 1024 * 1024)
    else:
        opts.update(address=rc.address)
        opts.pop("include_dashboard")
    try:
        ray.init(**opts)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"ray.address = {rc.address!r}: cannot connect ({msg})") from None
    return True


def _remote_chain(bars: pd.DataFrame, tasks: list[FoldTask], prev_files: dict[str, bytes] | None) -> list[FoldOutput]:
    """Worker side: compute ``tasks`` in order (a chain or one fold); nothing is written outside a temp folder.

    ``bars`` is the whole frame from the object store; each task gets ``bars.iloc[:test_stop]``.
    A warm-started fold loads the previous fold's model from a worker-local copy of its files
    (``prev_files`` for the first task, then each computed fold's own files), exactly as
    :func:`~backtest.walkforward.run_fold` loads it from the run directory.
    """
    outs: list[FoldOutput] = []
    cache: dict = {}
    with tempfile.TemporaryDirectory(prefix="wf-ray-") as tmp:
        for i, task in enumerate(tasks):
            t = replace(task, bars=bars.iloc[: task.fold.test_stop])
            if t.warm_from is not None:
                files = prev_files if i == 0 else outs[-1].files
                if files is None:
                    raise RuntimeError(f"warm-started fold {task.fold.k} of {task.model_name} has no previous fold")
                prev = Path(tmp) / f"prev-{task.fold.k}"
                for rel, data in files.items():
                    (prev / rel).parent.mkdir(parents=True, exist_ok=True)
                    (prev / rel).write_bytes(data)
                t = replace(t, warm_from=prev)
            outs.append(compute_fold(t, cache))
    return outs


def _read_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def execute_ray(plan: Plan, cfg: Config, on_result: Callable[[FoldResult], None] | None = None) -> list[FoldResult]:
    """Run every missing fold of ``plan`` as Ray tasks; write each as it arrives; results in plan order.

    Complete folds (resume) are read back on the driver and never submitted. Cold-start folds are one
    task each; a warm-start chain's missing folds are one task, seeded with the last complete fold's files.
    """
    import ray

    rc = cfg.ray
    results: dict[tuple[str, int, int], FoldResult] = {}
    order = [(t.model_name, t.seed, t.fold.k) for chain in plan.chains for t in chain]
    units: list[tuple[list[FoldTask], dict[str, bytes] | None]] = []
    for chain in plan.chains:
        missing = []
        for t in chain:
            key = (t.model_name, t.seed, t.fold.k)
            if is_complete(t):
                results[key] = _read_fold(t, key)
                if on_result:
                    on_result(results[key])
            else:
                missing.append(t)
        if not missing:
            continue
        if any(t.warm_from is not None for t in missing):
            first = missing[0]
            prev = _read_files(first.warm_from) if first.warm_from is not None else None
            units.append((missing, prev))
        else:
            units.extend(([t], None) for t in missing)
    if not units:
        return [results[k] for k in order]

    started = connect(rc)
    try:
        remote = ray.remote(_remote_chain)
        bars_ref = ray.put(plan.chains[0][-1].bars)  # the last fold's slice: every bar any task may see
        pending: dict[Any, list[FoldTask]] = {}
        for tasks, prev in units:
            network = tasks[0].model_cfg.type not in _BASELINES
            ref = remote.options(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus if network else 0,
                                 max_retries=rc.max_retries, retry_exceptions=False).remote(
                bars_ref, [replace(t, bars=t.bars.iloc[:0]) for t in tasks], prev)
            pending[ref] = tasks
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    tasks = pending.pop(ref)
                    for task, out in zip(tasks, ray.get(ref)):
                        r = write_fold(out, task.out_dir)
                        results[r.task_key] = r
                        if on_result:
                            on_result(r)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
    return [results[k] for k in order]
