"""One run end to end: data -> folds -> predictions -> (simulation, metrics, report).

:func:`run_forecasts` is the Python API a notebook uses; it returns the
predictions as a DataFrame and writes the run directory (DESIGN.md).
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.atomic import write_json, write_text
from backtest.config import Config, check_against_data
from backtest.data.load import LoadedData, load_data
from backtest.features import target_returns
from backtest.rundir import PREDICTION_COLUMNS, check_or_claim, forecast_fingerprint
from backtest.walkforward import FoldResult, build_plan, collect_forecasts, execute

_PACKAGES = ("walkforward", "keras", "tensorflow", "numpy", "pandas", "scikit-learn", "vectorbt", "ccxt")


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
    """What :func:`run_forecasts` returns."""

    run_dir: Path
    data: LoadedData
    predictions: pd.DataFrame
    history: pd.DataFrame
    resumed: bool
    n_folds: int


def assemble_predictions(forecasts: pd.DataFrame, bars: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Join fold forecasts with realised values: the ``predictions.csv`` table.

    ``timestamp`` = bar t (its close is the last the forecast saw); ``y_true`` = r[t+1];
    ``y_pred`` = r̂[t+1] (log return); ``close`` = close[t]; ``pred_close`` = close[t]*exp(y_pred).
    For ``horizon`` > 1 the columns ``y_pred_h1..hK`` keep every step.
    """
    close = bars["close"]
    pos = bars.index.get_indexer(forecasts["timestamp"])
    y_true = target_returns(close.to_numpy(), 1)[:, 0]
    out = forecasts.copy()
    out["y_true"] = y_true[pos]
    out["y_pred"] = out["y_pred_h1"]
    out["close"] = close.to_numpy()[pos]
    out["pred_close"] = out["close"] * np.exp(out["y_pred"])
    extra = [c for c in out.columns if c.startswith("y_pred_h")] if horizon > 1 else []
    out = out[PREDICTION_COLUMNS + extra]
    return out.sort_values(["model", "seed", "timestamp"], kind="stable").reset_index(drop=True)


def run_forecasts(cfg: Config, out: str | Path = "runs", *, progress: bool = False, data: LoadedData | None = None) -> ForecastRun:
    """Run (or resume) the walk-forward forecasts of ``cfg`` into ``out/<run.name>``.

    Writes ``config.toml``, ``meta.json``, ``folds/`` and ``predictions.csv``
    and returns the predictions. Nothing is written before the config and the
    data are valid.
    """
    started = pd.Timestamp.now(tz="UTC")
    data = data if data is not None else load_data(cfg.data, progress=progress)
    check_against_data(cfg, len(data.bars))
    run_dir = Path(out) / cfg.run.name
    folds, plan = build_plan(cfg, data.bars, run_dir)
    resumed = check_or_claim(run_dir, forecast_fingerprint(cfg, data.sha256))
    write_text(run_dir / "config.toml", cfg.to_toml())
    bar = _progress(plan.n_tasks, len(folds), progress)
    results: list[FoldResult] = execute(plan, cfg.walkforward, on_result=bar, cfg=cfg)
    if hasattr(bar, "close"):
        bar.close()
    forecasts = collect_forecasts(results)
    preds = assemble_predictions(forecasts, data.bars, cfg.features.horizon)
    write_text(run_dir / "predictions.csv", preds.to_csv(index=False, float_format="%.10g"))
    history = pd.concat(
        [r.history.assign(model=r.task_key[0], seed=r.task_key[1], fold=r.task_key[2]) for r in results if len(r.history)],
        ignore_index=True,
    ) if any(len(r.history) for r in results) else pd.DataFrame(columns=["epoch", "loss", "val_loss", "model", "seed", "fold"])
    b = data.bars
    meta: dict[str, Any] = {
        "versions": package_versions(),
        "data": {"source": data.source, "sha256": data.sha256, "first_bar": b.index[0].isoformat(),
                 "last_bar": b.index[-1].isoformat(), "rows": len(b), "timeframe": data.timeframe,
                 "repairs": data.report.repairs, "synthetic_bars": data.synthetic_bars},
        "seeds": cfg.run.seeds,
        "folds": len(folds),
        "first_test_bar": b.index[folds[0].test_start].isoformat(),
        "last_test_bar": b.index[folds[-1].test_stop - 1].isoformat(),
        "started": started.isoformat(),
        "finished": pd.Timestamp.now(tz="UTC").isoformat(),
        "resumed": resumed,
        "fold_seconds": {f"{r.task_key[0]}/{r.task_key[1]}/{r.task_key[2]}": round(r.seconds, 3) for r in results if not r.skipped},
        "host": {"platform": platform.platform(), "machine": platform.machine()},
    }
    write_json(run_dir / "meta.json", meta)
    return ForecastRun(run_dir, data, preds, history, resumed, len(folds))


def progress_text(r: FoldResult, n_folds: int) -> str:
    """The progress bar's note for one finished fold; the best validation loss only where there was validation."""
    model, seed, k = r.task_key
    val = r.best_val_loss
    best = f" best val {val:.4g}" if val is not None and np.isfinite(val) else ""
    return f"{model} seed {seed} fold {k + 1}/{n_folds} train {r.train_rows} rows{best}{' (resumed)' if r.skipped else ''}"


def _progress(total: int, n_folds: int, enabled: bool):  # type: ignore[no-untyped-def]
    """A tqdm bar over fold tasks (stderr), or a no-op callback."""
    if not enabled:
        return lambda r: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="fold", file=sys.stderr, dynamic_ncols=True)

    def update(r: FoldResult) -> None:
        bar.set_postfix_str(progress_text(r, n_folds))
        bar.update(1)

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def json_dumps(obj: Any) -> str:
    """JSON for the terminal."""
    return json.dumps(obj, indent=2, default=str)
