"""Benchmark: walk-forward training of each network type, our way against the tutorial way.

Full bundled BTC/USDT daily history, lookback 30, 64 units, retrain every 30
bars, expanding window, at most 50 epochs.

* ours: early stopping on the validation tail (patience 5, best weights kept),
  batch 64, warm start (fold k starts from fold k-1's weights, at most
  ``--warm-epochs`` epochs);
* tutorial: a new model built, compiled and fit from scratch in every fold with
  default Keras settings (batch 32, 50 epochs, no early stopping).

Each (model, method) runs in its own process so peak memory (max RSS) is its
own. Printed per row: folds, total time [s], time per fold [s], training
samples per second (rows x epochs actually run / time), peak memory [MiB], and
the mean over folds of the validation loss of the weights used to forecast
(ours: the restored best epoch; tutorial: the last epoch), in the encoded
target's units (return / training std). The ratio column is tutorial time /
our time. Not a test: run it with ``make bench`` or
``python bench/walkforward.py --models lstm cnn --max-folds 10``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

NETWORKS = ("lstm", "stacked_lstm", "bilstm", "gru", "cnn")


def config(model: str, method: str, max_folds: int | None, warm_epochs: int) -> dict:
    ours = method == "ours"
    m = {"type": model, "units": 64, "filters": 64, "epochs": 50,
         "patience": 5 if ours else 0, "batch_size": 64 if ours else 32}
    wf = {"initial_train": 1000, "step": 30, "window": "expanding", "val_fraction": 0.1,
          "warm_start": ours, "warm_start_epochs": warm_epochs}
    if max_folds:
        wf["max_folds"] = max_folds
    return {"features": {"lookback": 30, "inputs": ["close"], "normalize": "window"}, "walkforward": wf,
            "models": {model: m}, "strategies": {}, "run": {"name": f"{model}-{method}"}}


def one(model: str, method: str, max_folds: int | None, warm_epochs: int) -> dict:
    """Run one (model, method) in this process and return its figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from backtest.config import parse_config
    from backtest.run import run_forecasts

    cfg = parse_config(config(model, method, max_folds, warm_epochs))
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        fr = run_forecasts(cfg, out)
        seconds = time.perf_counter() - t0
    h = fr.history[fr.history["model"] == model]
    rows_per_fold = {}
    from backtest.walkforward import build_plan

    _, plan = build_plan(cfg, fr.data.bars, fr.run_dir)
    for chain in plan.chains:
        for t in chain:
            rows_per_fold[t.fold.k] = t.fold.n_train
    epochs = h.groupby("fold")["epoch"].count()
    samples = sum(rows_per_fold[k] * n for k, n in epochs.items())
    per_fold = h.groupby("fold")["val_loss"]
    val = per_fold.min() if method == "ours" else per_fold.last()
    return {
        "model": model, "method": method, "folds": fr.n_folds, "seconds": seconds, "s_per_fold": seconds / fr.n_folds,
        "samples_per_s": samples / seconds, "epochs_mean": float(epochs.mean()),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "val_loss": float(val.mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    ap.add_argument("--max-folds", type=int, default=None, help="only the first N folds (default: all, ~65)")
    ap.add_argument("--warm-epochs", type=int, default=10)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.max_folds, args.warm_epochs)))
        return
    rows = []
    for model in args.models:
        for method in ("ours", "tutorial"):
            cmd = [sys.executable, __file__, "--one", model, method, "--warm-epochs", str(args.warm_epochs)]
            if args.max_folds:
                cmd += ["--max-folds", str(args.max_folds)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"done {model} {method}: {r['seconds']:.1f} s", file=sys.stderr, flush=True)
    head = f"{'model':<13}{'method':<10}{'folds':>6}{'total [s]':>11}{'s/fold':>9}{'samples/s':>11}{'epochs':>8}{'peak [MiB]':>12}{'val loss':>10}{'speed-up':>10}"
    print(head)
    print("-" * len(head))
    for model in args.models:
        ours = next(r for r in rows if r["model"] == model and r["method"] == "ours")
        tut = next(r for r in rows if r["model"] == model and r["method"] == "tutorial")
        for r in (ours, tut):
            ratio = f"{tut['seconds'] / ours['seconds']:.2f}x" if r is ours else ""
            print(f"{r['model']:<13}{r['method']:<10}{r['folds']:>6}{r['seconds']:>11.1f}{r['s_per_fold']:>9.2f}"
                  f"{r['samples_per_s']:>11.0f}{r['epochs_mean']:>8.1f}{r['peak_mib']:>12.0f}{r['val_loss']:>10.4f}{ratio:>10}")
    print(f"\ntarget: ours >= 3x faster than tutorial at equal or better validation loss "
          f"(bundled BTC/USDT 1d, {os.cpu_count()} CPU cores{', first ' + str(args.max_folds) + ' folds' if args.max_folds else ''})")


if __name__ == "__main__":
    main()
