"""Benchmark: the same walk-forward on the ``process`` executor and on ``ray`` (a local Ray started by
walkforward), one after the other, each in its own process.

Workload: issue 9's reference workload (``bench/walkforward.py``: bundled BTC/USDT daily, the last 30 log
returns, LSTM(64) + Dense(1), expanding window, ``initial_train = 760``, ``step = 30``) with arm (b)'s
training settings (20 epochs, batch 32, no validation), its first 24 folds, 2 workers each (``ray.local_cpus
= 2``). Both executors run the same units of work (grouped training on Ray too), so the only difference is
where a unit runs.

Printed: wall time of ``run_forecasts`` per executor [s] (Ray's start-up included: a user pays it), the ratio
ray / process, and whether the two ``predictions.csv`` are byte-identical. Not a test:
``python bench/executors.py [--max-folds 24]``.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout this benchmark belongs to, not another installed copy
sys.path.insert(0, str(HERE))


def one(executor: str, out: Path, max_folds: int) -> float:
    """One executor's run in this process; returns its wall time [s]."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from walkforward import engine_config  # bench/walkforward.py: the reference workload's config

    from backtest.config import parse_config
    from backtest.run import run_forecasts

    d = engine_config(["lstm"], "engine", max_folds)
    d["walkforward"]["executor"] = executor
    d["ray"] = {"local_cpus": 2}
    d["run"]["name"] = executor
    cfg = parse_config(d)
    t0 = time.perf_counter()
    run_forecasts(cfg, out)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-folds", type=int, default=24)
    ap.add_argument("--one", nargs=2, metavar=("EXECUTOR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps({"seconds": one(args.one[0], Path(args.one[1]), args.max_folds)}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        secs = {}
        for ex in ("process", "ray"):
            cmd = [sys.executable, __file__, "--max-folds", str(args.max_folds), "--one", ex, tmp]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            secs[ex] = json.loads(res.stdout.strip().splitlines()[-1])["seconds"]
            print(f"{ex:<8} {secs[ex]:7.1f} s", flush=True)
        same = filecmp.cmp(Path(tmp) / "process" / "predictions.csv", Path(tmp) / "ray" / "predictions.csv",
                           shallow=False)
    print(f"ray / process = {secs['ray'] / secs['process']:.2f}x over the first {args.max_folds} folds; "
          f"predictions byte-identical: {same}")


if __name__ == "__main__":
    main()
