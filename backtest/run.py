"""A run's forecasts: data -> fold plan -> units on an executor -> ``predictions.csv`` (docs/design.md).

:func:`run_forecasts` is the forecasting half of ``walkforward run`` and the Python API a notebook uses: it
writes the run directory's ``config.toml``, ``fingerprint.txt``, ``folds/``, ``predictions.csv`` and
``meta.json`` (layout: docs/design.md, "Run directory"; a ``symbol`` column and ``folds/<SYMBOL>/`` only
for several symbols, whether a one-symbol config names ``symbol`` or ``symbols = [one]``). Nothing is
written before the config, the data and the fold plan are valid (and, on Ray, the cluster answers).
"""
from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.atomic import write_json, write_text
from backtest.config import Config
from backtest.data.load import LoadedData
from backtest.data.universe import UniverseData, load_universe
from backtest.features import target_returns
from backtest.folds.execute import execute, session
from backtest.folds.plan import RunPlan, plan_run
from backtest.folds.store import FoldResult, FoldStore
from backtest.rundir import PREDICTION_COLUMNS, check_or_claim, forecast_fingerprint

_PACKAGES = ("walkforward", "keras", "tensorflow", "numpy", "pandas", "scikit-learn", "vectorbt", "ccxt")
#: ``predictions.csv`` columns of a universe run (extra ``y_pred_h*`` columns follow for horizon > 1).
UNIVERSE_PREDICTION_COLUMNS = ["timestamp", "symbol"] + PREDICTION_COLUMNS[1:]


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a result."""
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class ForecastRun:
    """What :func:`run_forecasts` returns: the run directory, the data (every symbol), the predictions as
    written to ``predictions.csv``, the training history of every fold, whether it resumed, and the plan."""

    run_dir: Path
    data: UniverseData
    predictions: pd.DataFrame
    history: pd.DataFrame
    resumed: bool
    plan: RunPlan

    @property
    def n_folds(self) -> int:
        return self.plan.n_folds


def assemble_predictions(forecasts: pd.DataFrame, bars: dict[str, pd.DataFrame], horizon: int,
                         with_symbol: bool) -> pd.DataFrame:
    """Join fold forecasts with realised values: the ``predictions.csv`` table.

    ``timestamp`` = bar t (its close is the last the forecast saw); ``symbol`` (universe runs) = its
    market; ``y_true`` = r[t+1] of that symbol; ``y_pred`` = r̂[t+1] (log return); ``close`` = close[t]
    (quote currency); ``pred_close`` = close[t]*exp(y_pred). For ``horizon`` > 1 the columns
    ``y_pred_h1..hK`` keep every step. Rows by symbol (listing order), model, seed, timestamp.
    """
    parts = []
    for sym, b in bars.items():
        out = forecasts[forecasts["symbol"] == sym].copy()
        if out.empty:
            continue
        out["timestamp"] = out["timestamp"].astype(b.index.dtype)  # folds read back on resume parse as microseconds
        close = b["close"].to_numpy()
        pos = b.index.get_indexer(out["timestamp"])
        out["y_true"] = target_returns(close, 1)[:, 0][pos]
        out["y_pred"] = out["y_pred_h1"]
        out["close"] = close[pos]
        out["pred_close"] = out["close"] * np.exp(out["y_pred"])
        extra = [c for c in out.columns if c.startswith("y_pred_h")] if horizon > 1 else []
        parts.append(out[UNIVERSE_PREDICTION_COLUMNS + extra]
                     .sort_values(["model", "seed", "timestamp"], kind="stable"))
    preds = pd.concat(parts, ignore_index=True)
    return preds if with_symbol else preds.drop(columns="symbol")


def run_data(cfg: Config, data: LoadedData | UniverseData | None = None, *, progress: bool = False) -> UniverseData:
    """The run's data, every symbol validated (a single-symbol ``LoadedData`` is a universe of one)."""
    if data is None:
        return load_universe(cfg.data, progress=progress)
    if isinstance(data, LoadedData):
        return UniverseData.of_one(cfg.data.symbol, data)
    return data


@dataclass
class Trained:
    """What a caller already did to a run directory in this invocation (a sweep trains every grid point in
    one execute call first): whether the directory was resumed, and its folds' results in plan order."""

    resumed: bool
    results: list[FoldResult]


def run_forecasts(cfg: Config, out: str | Path = "runs", *, progress: bool = False,
                  data: LoadedData | UniverseData | None = None, trained: Trained | None = None) -> ForecastRun:
    """Run (or resume) the walk-forward forecasts of ``cfg`` into ``out/<run.name>`` (see the module docstring).

    ``trained``: the caller computed every fold of ``cfg`` into this run directory's store in this invocation
    (a sweep, :func:`backtest.sweep.forecast_grid`): its results are used as they are (nothing is read back
    or executed) and ``meta.json`` records its ``resumed`` and fold seconds."""
    started = pd.Timestamp.now(tz="UTC")
    data = run_data(cfg, data, progress=progress)
    plan = plan_run(cfg, data.bars)  # every symbol checked against the config: nothing written before
    run_dir = Path(out) / cfg.run.name
    wf = cfg.walkforward
    if trained is not None:  # the caller computed every fold into the store in this invocation
        resumed, results = trained.resumed, trained.results
    else:
        with session(wf.executor, cfg.ray):
            resumed = check_or_claim(run_dir, forecast_fingerprint(cfg, data.sha256))
            write_text(run_dir / "config.toml", cfg.to_toml())
            bar, update = _progress(len(plan.tasks), plan.n_folds, progress)
            results = execute(plan.tasks, data.bars, FoldStore(run_dir), wf.executor, wf.workers, cfg.ray,
                              on_result=update)
            bar.close()
    forecasts = pd.concat([r.forecasts.assign(model=r.task_key[0], seed=r.task_key[1]) for r in results],
                          ignore_index=True)  # timestamp, symbol, fold, y_pred_h1..hK, model, seed
    preds = assemble_predictions(forecasts, data.bars, cfg.features.horizon, len(data.symbols) > 1)
    write_text(run_dir / "predictions.csv", preds.to_csv(index=False, float_format="%.10g"))
    write_json(run_dir / "meta.json", run_meta(cfg, data, plan, results, started, resumed))
    return ForecastRun(run_dir, data, preds, _history(results), resumed, plan)


def _history(results: list[FoldResult]) -> pd.DataFrame:
    frames = [r.history.assign(model=r.task_key[0], seed=r.task_key[1], fold=r.task_key[2]) for r in results
              if len(r.history)]
    if not frames:
        return pd.DataFrame(columns=["epoch", "loss", "val_loss", "model", "seed", "fold"])
    return pd.concat(frames, ignore_index=True)


def run_meta(cfg: Config, data: UniverseData, plan: RunPlan, results: list[FoldResult], started: pd.Timestamp,
             resumed: bool) -> dict[str, Any]:
    """``meta.json``: versions, each symbol's data provenance (source, sha256, first/last bar, rows, timeframe,
    repairs, synthetic bars) and test span (folds, first/last test bar), seeds, the run's test span, times,
    fold seconds, host. A single-symbol run has its symbol's block as ``data``; a universe one block per
    symbol under ``data`` and the universe's own line under ``universe`` (with ``synthetic_bars`` summed
    over the symbols)."""
    per: dict[str, Any] = {}
    for sym, b in data.bars.items():
        folds = plan.folds.get(sym, [])
        rep = data.reports[sym]
        syn = rep.synthetic
        per[sym] = {
            "source": data.sources.get(sym, sym), "sha256": data.sha256s.get(sym), "first_bar": b.index[0].isoformat(),
            "last_bar": b.index[-1].isoformat(), "rows": len(b), "timeframe": data.timeframe,
            "repairs": rep.repairs, "synthetic_bars": int(syn.sum()) if syn is not None else 0,
            "folds": len(folds),
            "first_test_bar": b.index[folds[0].test_start].isoformat() if folds else None,
            "last_test_bar": b.index[folds[-1].test_stop - 1].isoformat() if folds else None,
        }
    meta: dict[str, Any] = {"versions": package_versions()}
    if len(data.symbols) == 1:  # a run of one symbol is not a universe, however its config names it
        meta["data"] = per[plan.symbols[0]]
    else:
        meta["universe"] = {"symbols": data.symbols, "sha256": data.sha256, "timeframe": data.timeframe,
                            "pooled": cfg.features.pooled, "symbol_input": cfg.features.symbol_input,
                            "synthetic_bars": sum(p["synthetic_bars"] for p in per.values())}
        meta["data"] = per
    meta.update({
        "seeds": cfg.run.seeds,
        "folds": plan.n_folds,
        "first_test_bar": min((p["first_test_bar"] for p in per.values() if p["first_test_bar"]), default=None),
        "last_test_bar": max((p["last_test_bar"] for p in per.values() if p["last_test_bar"]), default=None),
        "started": started.isoformat(),
        "finished": pd.Timestamp.now(tz="UTC").isoformat(),
        "resumed": resumed,
        "fold_seconds": {f"{r.task_key[0]}/{r.task_key[1]}/{r.task_key[2]}": round(r.seconds, 3)
                         for r in results if not r.skipped},
        "host": {"platform": platform.platform(), "machine": platform.machine()},
    })
    return meta


def progress_text(r: FoldResult, n_folds: int) -> str:
    """The progress bar's note for one finished fold; the best validation loss only where there was validation."""
    model, seed, k = r.task_key
    val = r.best_val_loss
    best = f" best val {val:.4g}" if val is not None and np.isfinite(val) else ""
    return f"{model} seed {seed} fold {k + 1}/{n_folds} train {r.train_rows} rows{best}{' (resumed)' if r.skipped else ''}"


def _progress(total: int, n_folds: int, enabled: bool):  # type: ignore[no-untyped-def]
    """A tqdm bar over fold tasks (stderr; silent unless ``enabled``) and the callback that advances it."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="fold", file=sys.stderr, dynamic_ncols=True, disable=not enabled)

    def update(r: FoldResult) -> None:
        bar.set_postfix_str(progress_text(r, n_folds))
        bar.update(1)

    return bar, update
