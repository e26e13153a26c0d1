"""Benchmark: one sweep of 4 grid points x 3 seeds with the sequential, process and Ray executors.

Default (bundled BTC/USDT daily) data, small on purpose so it runs in a few minutes on a 2-core machine:
an LSTM with 8 units, 3 epochs, lookback 16, ``initial_train`` 1000, ``step`` 60, ``max_folds`` 3; the grid is
``models.lstm.units = 4, 8`` x ``models.lstm.dropout = 0.0, 0.2``; seeds 0..2. That is 4 x 3 x 3 = 36
network folds (plus 36 persistence-baseline folds). Each executor writes its own sweep folder; every
executor's ``predictions.csv`` files are compared byte for byte with the sequential ones.

Printed: wall time per executor [s] (the whole ``walkforward sweep``: forecasts, simulation, reports), and Ray's
overhead per task: the time of N no-op tasks on the same local 2-node cluster divided by N [ms], and the
cluster's start-up time [s]. The "ray" row runs on a local 2-node cluster (``ray.cluster_utils.Cluster``,
1 CPU each) joined by address, as a real cluster would be. Not a test:
``python bench/scaleout.py [--executors sequential process ray] [--noop 200]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local test cluster stays on 127.0.0.1
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's engine, not an installed copy

CONFIG = """
[features]
lookback = 16
[walkforward]
initial_train = 1000
step = 60
max_folds = 3
workers = 2
[models.lstm]
type = "lstm"
units = 8
epochs = 3
patience = 0
[backtest]
bootstrap_samples = 200
[run]
name = "bench"
"""
GRID = ["models.lstm.units=4,8", "models.lstm.dropout=0.0,0.2"]


def sweep(executor: str, base: Path, address: str | None) -> float:
    from backtest.sweep import run_sweep

    conf = base / "bench.toml"
    conf.write_text(CONFIG)
    sets = [f"walkforward.executor={executor}"] + ([f'ray.address="{address}"'] if address else [])
    t0 = time.perf_counter()
    run_sweep(conf, GRID, seeds=3, out=base / executor, overrides=sets)
    return time.perf_counter() - t0


def same_predictions(base: Path, executor: str) -> bool:
    ref = sorted((base / "sequential").glob("*/predictions.csv"))
    other = sorted((base / executor).glob("*/predictions.csv"))
    return len(ref) == len(other) == 4 and all(a.read_bytes() == b.read_bytes() for a, b in zip(ref, other))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executors", nargs="+", default=["sequential", "process", "ray"])
    ap.add_argument("--noop", type=int, default=200, help="no-op tasks for Ray's per-task overhead")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp:
        base = Path(tmp)
        cluster = None
        try:
            for ex in args.executors:
                address = None
                if ex == "ray":
                    import ray
                    from ray.cluster_utils import Cluster

                    Path("/tmp/ray").mkdir(exist_ok=True)
                    t0 = time.perf_counter()
                    cluster = Cluster(initialize_head=True, head_node_args={
                        "num_cpus": 1, "object_store_memory": 200 * 2**20, "include_dashboard": False})
                    cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20)
                    cluster.wait_for_nodes()
                    rows.append(("ray cluster start (2 nodes)", time.perf_counter() - t0, ""))
                    address = cluster.address
                    ray.init(address=address, log_to_driver=False,
                             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}})
                    noop = ray.remote(lambda: None)
                    ray.get([noop.remote() for _ in range(10)])  # warm workers
                    t0 = time.perf_counter()
                    ray.get([noop.remote() for _ in range(args.noop)])
                    per = (time.perf_counter() - t0) / args.noop
                    rows.append((f"ray overhead per no-op task (N={args.noop})", per, f"{per * 1000:.2f} ms"))
                secs = sweep(ex, base, address)
                ok = "reference" if ex == "sequential" else ("identical" if same_predictions(base, ex) else "DIFFERENT")
                rows.append((f"sweep 4 points x 3 seeds, executor={ex}", secs, f"predictions {ok}"))
                print(f"{rows[-1][0]:<48} {secs:9.1f} s  {ok}", flush=True)
        finally:
            if cluster is not None:
                import ray

                ray.shutdown()
                cluster.shutdown()
    print(f"\n{'what':<48} {'wall [s]':>9}  note")
    print("-" * 80)
    for what, secs, note in rows:
        print(f"{what:<48} {secs:9.3f}  {note}")


if __name__ == "__main__":
    main()
