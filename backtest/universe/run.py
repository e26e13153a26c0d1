"""A universe run end to end: data for every symbol -> folds -> predictions -> (evaluation, report).

:func:`run_universe_forecasts` is the forecasting half (the Python API for notebooks): it writes the
run directory like :func:`backtest.run.run_forecasts` does, with these differences (DESIGN.md):

* ``predictions.csv`` has a ``symbol`` column after ``timestamp``:
  ``timestamp, symbol, model, seed, fold, y_true, y_pred, close, pred_close`` (one row per symbol x
  model x seed x test bar; ``timestamp`` = bar t, ``y_true`` = r[t+1] of that symbol, ``close`` =
  its close[t]);
* ``features.pooled = false``: each symbol gets its own walk-forward (its own ``plan_folds`` over its
  own bars, so a symbol listed later starts later), folds in ``folds/<SYMBOL_SAFE>/<model>/<k>/seed-<s>/``
  (``BTC/USDT`` -> ``BTC_USDT``), each exactly a single-symbol fold folder; ``fold`` counts that
  symbol's folds;
* ``features.pooled = true``: one model per fold date trained on every participating symbol
  (:mod:`backtest.universe.pooled`), folds in ``folds/<model>/<k>/seed-<s>/``; ``fold`` is the block
  of the common calendar;
* ``meta.json`` holds the per-symbol data provenance (source, sha256, first/last bar, rows, repairs),
  each symbol's first and last test bar, and the universe sha256 (the fingerprint's data hash).

:func:`run_universe` adds the evaluation (``backtest.universe.evaluate.evaluate_universe``) and the
report (``reports.universe.write_universe_report``). Resume and refusal of a run directory made by
another config work as for single-symbol runs.
"""
from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.atomic import write_json, write_text
from backtest.config import Config, check_against_data
from backtest.errors import WalkforwardError
from backtest.features import feature_matrix, first_valid_row
from backtest.run import assemble_predictions, package_versions
from backtest.rundir import PREDICTION_COLUMNS, check_or_claim, forecast_fingerprint
from backtest.universe.data import UniverseData, load_universe
from backtest.universe.pooled import build_pooled_plan, execute_pooled, symbol_safe
from backtest.walkforward import FoldResult, FoldSpec, Plan, build_plan, execute

#: ``predictions.csv`` columns of a universe run (extra ``y_pred_h*`` columns follow for horizon > 1).
UNIVERSE_PREDICTION_COLUMNS = ["timestamp", "symbol"] + PREDICTION_COLUMNS[1:]


@dataclass
class UniverseForecastRun:
    """What :func:`run_universe_forecasts` returns. ``plans[symbol]``: that symbol's fold specs (its rows)."""

    run_dir: Path
    data: UniverseData
    predictions: pd.DataFrame
    history: pd.DataFrame
    resumed: bool
    plans: dict[str, list[FoldSpec]]
    pooled: bool

    @property
    def n_folds(self) -> dict[str, int]:
        """Folds per symbol (pooled: the calendar blocks the symbol took part in)."""
        return {s: len(p) for s, p in self.plans.items()}


@dataclass
class UniverseRunResult:
    """A finished universe run: its folder, forecasts, evaluation and report path."""

    run_dir: Path
    forecasts: UniverseForecastRun
    evaluation: Any  # backtest.universe.evaluate.UniverseEvaluation
    report_path: Path

    @property
    def predictions(self) -> pd.DataFrame:
        return self.forecasts.predictions


def _for_symbol(symbol: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn``; a user error gets the symbol in front of its one line."""
    try:
        return fn()
    except WalkforwardError as err:
        raise type(err)(f"{symbol}: {err}") from None


def symbol_plans(cfg: Config, data: UniverseData, run_dir: Path) -> dict[str, tuple[list[FoldSpec], Plan]]:
    """Each symbol's own single-symbol fold plan and tasks, fold folders moved under ``folds/<SYMBOL_SAFE>/``."""
    out: dict[str, tuple[list[FoldSpec], Plan]] = {}
    for sym, bars in data.bars.items():
        _for_symbol(sym, lambda: check_against_data(cfg, len(bars)))
        folds, plan = _for_symbol(sym, lambda: build_plan(cfg, bars, run_dir))
        base = run_dir / "folds" / symbol_safe(sym)
        for chain in plan.chains:
            for t in chain:
                t.out_dir = base / t.model_name / str(t.fold.k) / f"seed-{t.seed}"
                if t.warm_from is not None:
                    t.warm_from = base / t.model_name / str(t.fold.k - 1) / f"seed-{t.seed}"
        out[sym] = (folds, plan)
    return out


def run_universe_forecasts(cfg: Config, out: str | Path = "runs", *, progress: bool = False,
                           data: UniverseData | None = None) -> UniverseForecastRun:
    """Run (or resume) the walk-forward forecasts of every symbol of ``cfg`` into ``out/<run.name>``.

    Writes ``config.toml``, ``fingerprint.txt``, ``folds/``, ``predictions.csv`` and ``meta.json``
    (see the module docstring); nothing is written before the config, the data and every fold plan
    are valid.
    """
    started = pd.Timestamp.now(tz="UTC")
    data = data if data is not None else load_universe(cfg.data, progress=progress)
    run_dir = Path(out) / cfg.run.name
    per_symbol = symbol_plans(cfg, data, run_dir)  # validates every symbol against the config
    pooled = cfg.features.pooled
    if pooled:
        first_rows = {s: first_valid_row(feature_matrix(b, cfg.features.inputs), cfg.features.lookback)
                      for s, b in data.bars.items()}
        calendar, chains = build_pooled_plan(cfg, data.bars, first_rows, run_dir)
        plans = {s: [f.specs[s] for f in calendar if s in f.specs] for s in data.bars}
        n_tasks = sum(len(c) for c in chains)
    else:
        plans = {s: folds for s, (folds, _) in per_symbol.items()}
        merged = Plan([c for _, plan in per_symbol.values() for c in plan.chains])
        owners = [s for s, (_, plan) in per_symbol.items() for c in plan.chains for _ in c]
        n_tasks = merged.n_tasks
    resumed = check_or_claim(run_dir, forecast_fingerprint(cfg, data.sha256))
    write_text(run_dir / "config.toml", cfg.to_toml())
    bar = _progress(n_tasks, progress)
    if pooled:
        results = execute_pooled(chains, cfg.walkforward, on_result=bar)
        forecasts = _collect(results)
    else:
        results = execute(merged, cfg.walkforward, on_result=bar)
        forecasts = _collect(results, owners)
    if hasattr(bar, "close"):
        bar.close()
    preds = universe_predictions(forecasts, data.bars, cfg.features.horizon)
    write_text(run_dir / "predictions.csv", preds.to_csv(index=False, float_format="%.10g"))
    history = _history(results)
    write_json(run_dir / "meta.json", _meta(cfg, data, plans, results, started, resumed))
    return UniverseForecastRun(run_dir, data, preds, history, resumed, plans, pooled)


def _collect(results: list[FoldResult], owners: list[str] | None = None) -> pd.DataFrame:
    """Fold forecasts as one frame: timestamp, symbol, model, seed, fold, y_pred_h1..hK."""
    parts = []
    for i, r in enumerate(results):
        df = r.forecasts.copy()
        if owners is not None:
            df.insert(1, "symbol", owners[i])
        df.insert(2, "model", r.task_key[0])
        df.insert(3, "seed", r.task_key[1])
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def universe_predictions(forecasts: pd.DataFrame, bars: dict[str, pd.DataFrame], horizon: int) -> pd.DataFrame:
    """The ``predictions.csv`` table of a universe run: each symbol's forecasts joined with its own realised values.

    Rows sorted by symbol (universe order), model, seed, timestamp. Units and alignment as in
    :func:`backtest.run.assemble_predictions` (log returns; ``close`` = close[t] in the quote currency).
    """
    parts = []
    for sym, b in bars.items():
        fc = forecasts[forecasts["symbol"] == sym].drop(columns="symbol")
        if fc.empty:
            continue
        fc["timestamp"] = fc["timestamp"].astype(b.index.dtype)  # folds read back on resume parse as microseconds
        p = assemble_predictions(fc, b, horizon)
        p.insert(1, "symbol", sym)
        parts.append(p)
    return pd.concat(parts, ignore_index=True)


def _history(results: list[FoldResult]) -> pd.DataFrame:
    frames = [r.history.assign(model=r.task_key[0], seed=r.task_key[1], fold=r.task_key[2]) for r in results if len(r.history)]
    if not frames:
        return pd.DataFrame(columns=["epoch", "loss", "val_loss", "model", "seed", "fold"])
    return pd.concat(frames, ignore_index=True)


def _meta(cfg: Config, data: UniverseData, plans: dict[str, list[FoldSpec]], results: list[FoldResult],
          started: pd.Timestamp, resumed: bool) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for sym, b in data.bars.items():
        folds = plans[sym]
        per[sym] = {
            "source": data.sources.get(sym, sym), "sha256": data.sha256s.get(sym), "first_bar": b.index[0].isoformat(),
            "last_bar": b.index[-1].isoformat(), "rows": len(b), "repairs": data.reports[sym].repairs,
            "folds": len(folds),
            "first_test_bar": b.index[folds[0].test_start].isoformat() if folds else None,
            "last_test_bar": b.index[folds[-1].test_stop - 1].isoformat() if folds else None,
        }
    return {
        "versions": package_versions(),
        "universe": {"symbols": data.symbols, "sha256": data.sha256, "timeframe": data.timeframe,
                     "pooled": cfg.features.pooled, "symbol_input": cfg.features.symbol_input},
        "data": per,
        "seeds": cfg.run.seeds,
        "started": started.isoformat(),
        "finished": pd.Timestamp.now(tz="UTC").isoformat(),
        "resumed": resumed,
        "fold_seconds": {f"{r.task_key[0]}/{r.task_key[1]}/{r.task_key[2]}": round(r.seconds, 3)
                         for r in results if not r.skipped},
        "host": {"platform": platform.platform(), "machine": platform.machine()},
    }


def run_universe(cfg: Config, out: str | Path = "runs", *, progress: bool = False) -> UniverseRunResult:
    """Run or resume the universe forecasts, evaluate every symbol and the universe portfolio, write the report.

    Writes ``metrics.json``, ``equity.csv``, ``trades.csv`` and ``report.html`` next to the forecasts.
    """
    fr = run_universe_forecasts(cfg, out, progress=progress)
    from backtest.universe.evaluate import evaluate_universe  # the evaluation side (issue 11, part B)
    from reports.universe import write_universe_report

    synthetic = {s: r.synthetic for s, r in fr.data.reports.items()}  # repaired bars are not traded
    ev = evaluate_universe(cfg, fr.predictions, fr.data.bars, fr.data.timeframe, synthetic=synthetic)
    metrics = ev.metrics
    metrics.write(fr.run_dir / "metrics.json")
    write_text(fr.run_dir / "equity.csv", ev.equity.to_csv(float_format="%.6f"))
    write_text(fr.run_dir / "trades.csv", ev.trades.to_csv(index=False))
    report = write_universe_report(fr.run_dir, metrics, fr.predictions, ev.equity)
    return UniverseRunResult(fr.run_dir, fr, ev, Path(report))


def _progress(total: int, enabled: bool):  # type: ignore[no-untyped-def]
    """A tqdm bar over fold tasks (stderr), or a no-op callback."""
    if not enabled:
        return lambda r: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="fold", file=sys.stderr, dynamic_ncols=True)

    def update(r: FoldResult) -> None:
        model, seed, k = r.task_key
        bar.set_postfix_str(f"{model} seed {seed} fold {k} train {r.train_rows} rows{' (resumed)' if r.skipped else ''}")
        bar.update(1)

    update.close = bar.close  # type: ignore[attr-defined]
    return update


__all__ = ["UNIVERSE_PREDICTION_COLUMNS", "UniverseForecastRun", "UniverseRunResult",
           "run_universe", "run_universe_forecasts", "symbol_plans", "universe_predictions"]
