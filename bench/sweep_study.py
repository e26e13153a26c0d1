"""Benchmark: the tutorial's regularisation study as one sweep (issue 21).

Study: bundled BTC/USDT daily bars, ``configs/default.toml``'s features (lookback 30, inputs close and log
return, window normalisation, scaled return target), its LSTM(32) (batch 64, patience 4, 15 % validation tail)
with the bias regulariser at {none, L1 0.001, L1 0.01, L2 0.001, L2 0.01}, expanding window
``initial_train = 1000``, ``step = 90``, 22 folds, 30 epochs.

Arms, each in its own process:

* (a) ``keras``: a plain Keras loop over the 1-seed study (a new ``keras.Sequential`` per training, its own
  features, scaling, folds and early stopping written here; it imports nothing from the project);
* (b) ``engine1``: ``walkforward sweep`` on the same 1-seed study (every training planned together, one
  executor call, process executor with 2 workers);
* (c) ``engine10``: the engine on the 10-seed study.

Printed: wall time [s]; memory [MiB] three ways: the peak of the arm's whole process tree (the arm and its
worker processes at the same moment, sampled every 0.25 s: resident set, RSS, and proportional set, PSS,
which counts the pages the workers share -- TensorFlow's library -- once), and the arm's own peak plus its
largest worker's peak as ``getrusage`` reports them (not at the same moment, and one worker only); per grid
point OOS MSE / persistence MSE (seed 0) and, for (c), its spread over the seeds (is (a)'s one training inside
it?); and for (b) and (c) the selection's record (Sharpe of the walk-forward selection and the hindsight
best), PBO and the SPA p-value.
``--quick``: 4 folds, 5 epochs, 2 seeds in (c) (a smoke run, not the study). Figures go to
``bench/sweep_results.json``.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POINTS = [("none", 0.0, 0.0), ("L1 0.001", 0.001, 0.0), ("L1 0.01", 0.01, 0.0), ("L2 0.001", 0.0, 0.001),
          ("L2 0.01", 0.0, 0.01)]
LOOKBACK, INITIAL, STEP, VAL, PATIENCE, BATCH, UNITS = 30, 1000, 90, 0.15, 4, 64, 32


def _rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024.0


# --------------------------------------------------------------------------- arm (a): plain Keras, nothing shared


def arm_keras(folds: int, epochs: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import pandas as pd
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    bars = pd.read_csv(ROOT / "backtest" / "data" / "bundled" / "BTC_USDT_1d.csv")
    close = bars["close"].to_numpy(dtype=float)
    r = np.r_[np.nan, np.diff(np.log(close))]  # r[t] = ln(close[t] / close[t-1])
    n = len(close)
    first = LOOKBACK  # r[1..] defined: the first full window ends at row LOOKBACK
    last = n - 2  # last row whose r[t+1] is known

    def X_of(rows: np.ndarray, mu: float, sd: float) -> np.ndarray:
        idx = rows[:, None] + np.arange(-LOOKBACK + 1, 1)[None, :]
        c = close[idx]
        return np.stack([c / c[:, :1] - 1.0, (r[idx] - mu) / sd], axis=-1).astype("float32")

    out = {}
    for name, l1, l2 in POINTS:
        se, se_p = [], []
        for k in range(folds):
            T = INITIAL + k * STEP
            if T > last:
                break
            test = np.arange(T, min(T + STEP, last + 1))
            end = T - 1  # training rows t <= T - 2 (r[t+1] known before T)
            n_val = int(np.floor((end - first) * VAL))
            fit = np.arange(first, end - n_val - 1)
            val = np.arange(end - n_val, end)
            seen = r[first - LOOKBACK + 1: fit[-1] + 1]  # the bars the training windows cover (not validation's)
            mu, sd = float(np.nanmean(seen)), float(np.nanstd(seen))
            ys = float(np.std(r[fit + 1]))
            keras.utils.set_random_seed(0)
            reg = keras.regularizers.L1L2(l1=l1, l2=l2)
            model = keras.Sequential([keras.Input((LOOKBACK, 2)), keras.layers.LSTM(UNITS, bias_regularizer=reg),
                                      keras.layers.Dense(1)])
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
            model.fit(X_of(fit, mu, sd), r[fit + 1] / ys, validation_data=(X_of(val, mu, sd), r[val + 1] / ys),
                      epochs=epochs, batch_size=BATCH, shuffle=True, verbose=0,
                      callbacks=[keras.callbacks.EarlyStopping(patience=PATIENCE, restore_best_weights=True)])
            pred = model.predict(X_of(test, mu, sd), verbose=0)[:, 0] * ys
            se += list((pred - r[test + 1]) ** 2)
            se_p += list(r[test + 1] ** 2)
        out[name] = float(np.mean(se) / np.mean(se_p))
    return {"mse_ratio": out}


# --------------------------------------------------------------------------- arms (b), (c): the engine


def arm_engine(folds: int, epochs: int, seeds: int) -> dict:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from backtest.sweep import run_sweep
    from backtest.sweep_schema import SweepMetrics

    conf = HERE / "sweep_study.toml"
    grid = "models.lstm.bias_l1,models.lstm.bias_l2=" + ",".join(f"{a:g}:{b:g}" for _, a, b in POINTS)
    with tempfile.TemporaryDirectory(prefix="wf-sweep-bench-") as d:
        path = run_sweep(conf, [grid], seeds=seeds, out=Path(d),
                         overrides=[f"walkforward.max_folds={folds}", f"models.lstm.epochs={epochs}"])
        m = SweepMetrics.read(path.parent / "metrics.json")
    names = {f"lstm.bias_l1={a:g}__lstm.bias_l2={b:g}/lstm": lab for lab, a, b in POINTS}
    sel = m.selection
    return {
        "mse_ratio": {names.get(c.candidate, c.candidate): c.mse_ratio[0] for c in m.candidates},
        "mse_ratio_seeds": {names.get(c.candidate, c.candidate): c.mse_ratio for c in m.candidates},
        "trainings": m.sweep.trainings,
        "selection": None if sel is None else {
            "criterion": sel.criterion, "sharpe_mean": sel.sharpe_mean, "switches": sel.switches,
            "chosen": [names.get(b.chosen, b.chosen) for b in sel.blocks],
            "hindsight_best": names.get(sel.hindsight_best, sel.hindsight_best),
            "hindsight_sharpe_mean": sel.hindsight_sharpe_mean},
        "pbo": m.pbo.pbo if m.pbo else None,
        "spa_p_portfolio": m.spa_portfolio.spa_p_consistent if m.spa_portfolio else None,
        "spa_p_forecast": m.spa_forecast.spa_p_consistent if m.spa_forecast else None,
        "verdict": m.verdict.text,
    }


def child(arm: str, folds: int, epochs: int, seeds: int) -> None:
    t0 = time.perf_counter()
    res = arm_keras(folds, epochs) if arm == "a" else arm_engine(folds, epochs, 1 if arm == "b" else seeds)
    res.update(arm=arm, wall_s=round(time.perf_counter() - t0, 1), peak_rss_mib=round(_rss_mib(), 0))
    print("RESULT " + json.dumps(res))


def run_arm(cmd: list[str]) -> tuple[str, str, float, float]:
    """Run one arm's process; return its stdout, stderr and the peaks of its process tree's summed RSS and
    PSS [MiB], sampled every 0.25 s (PSS read at most once a second: it walks the page tables)."""
    import psutil

    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        root, rss, pss, last_pss = psutil.Process(proc.pid), 0.0, 0.0, 0.0
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            now, full = 0.0, time.monotonic() - last_pss >= 1.0
            total_pss = 0.0
            for p in tree:
                try:
                    now += p.memory_info().rss
                    total_pss += p.memory_full_info().pss if full else 0.0
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            rss = max(rss, now / 2**20)
            if full:
                pss, last_pss = max(pss, total_pss / 2**20), time.monotonic()
            time.sleep(0.25)
        so.seek(0)
        se.seek(0)
        return so.read(), se.read(), rss, pss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 folds, 5 epochs, 2 seeds in (c)")
    ap.add_argument("--arms", default="abc")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    folds, epochs, seeds = (4, 5, 2) if a.quick else (22, 30, 10)
    if a.child:
        child(a.child, folds, epochs, seeds)
        return
    results = {}
    for arm in a.arms:
        cmd = [sys.executable, __file__, "--child", arm] + (["--quick"] if a.quick else [])
        stdout, stderr, tree_rss, tree_pss = run_arm(cmd)
        line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"arm {arm} failed:\n{stderr[-2000:]}")
        results[arm] = {**json.loads(line[7:]), "tree_rss_mib": round(tree_rss), "tree_pss_mib": round(tree_pss)}
    size = f"{folds} folds, {epochs} epochs, 5 grid points" + (" (--quick: not the study)" if a.quick else "")
    print(f"sweep study: {size}")
    print(f"{'arm':<26}{'wall [s]':>9}{'tree RSS':>10}{'tree PSS':>10}{'own+worker':>12}"
          "  MSE/persistence per grid point (seed 0)  [memory: peak MiB]")
    label = {"a": "(a) plain Keras, 1 seed", "b": "(b) engine, 1 seed", "c": f"(c) engine, {seeds} seeds"}
    for arm, r in results.items():
        mse = ", ".join(f"{k} {v:.4f}" for k, v in r["mse_ratio"].items())
        print(f"{label[arm]:<26}{r['wall_s']:>9.1f}{r['tree_rss_mib']:>10.0f}{r['tree_pss_mib']:>10.0f}"
              f"{r['peak_rss_mib']:>12.0f}  {mse}")
    if "c" in results:
        import statistics

        print(f"{label['c']}: MSE/persistence over the seeds, mean (sd) [min, max]"
              + ("; (a)'s one training inside the range?" if "a" in results else ""))
        for k, vals in results["c"]["mse_ratio_seeds"].items():
            v = [x for x in vals if x is not None]
            inside = ""
            if "a" in results and k in results["a"]["mse_ratio"]:
                x = results["a"]["mse_ratio"][k]
                inside = f"; (a) {x:.4f} {'inside' if min(v) <= x <= max(v) else 'OUTSIDE'}"
            print(f"  {k:<10} {statistics.mean(v):.4f} ({statistics.stdev(v) if len(v) > 1 else 0:.4f}) "
                  f"[{min(v):.4f}, {max(v):.4f}]{inside}")
    if "a" in results and "b" in results:
        ra, rb = results["a"], results["b"]
        diff = max(abs(ra["mse_ratio"][k] - rb["mse_ratio"].get(k, float("nan"))) for k in ra["mse_ratio"])
        print(f"(b) vs (a): {ra['wall_s'] / rb['wall_s']:.2f}x faster; largest MSE-ratio difference {diff:.4f}")
    for arm in ("b", "c"):
        if arm in results and results[arm].get("selection"):
            r, s = results[arm], results[arm]["selection"]
            def f(v: float | None, d: int = 2) -> str:
                return "n/a" if v is None else f"{v:.{d}f}"

            print(f"{label[arm]}: selection ({s['criterion']}) Sharpe {f(s['sharpe_mean'])}, {s['switches']} switches, "
                  f"chosen {s['chosen']}; hindsight best {s['hindsight_best']} (not tradeable) Sharpe "
                  f"{f(s['hindsight_sharpe_mean'])}; PBO {f(r['pbo'])}; SPA p (portfolio) {f(r['spa_p_portfolio'], 3)}, "
                  f"(forecast) {f(r['spa_p_forecast'], 3)}")
    (HERE / ("sweep_results_quick.json" if a.quick else "sweep_results.json")).write_text(
        json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
