"""``walkforward predict``: the next bar's forecast and signals from a finished run's fold models.

The forecast is for bar ``T+1`` where ``T`` is the data's last *closed* bar: the
input window ends at ``T`` (bars <= T only), and the model and its fitted
transform are those of the **newest fold whose test block starts at or before
T** (read with :func:`backtest.folds.store.read_saved_fold`): it trained on rows
``t <= T0 - 1 - horizon`` (``T0`` = its first test bar <= T), so every bar it saw
lies before the forecast bar, and when ``T`` is inside the run's test span its
forecast is the backtest's own forecast made at ``T``. Data that ends before the
run's first test bar has no such fold: refused in one line. Signals come from the backtest's own
code (:func:`strategies.build.build_signals`): the new forecast row is appended
to the run's out-of-sample predictions, so K-step sums, hysteresis state,
ensembles and baselines are exactly what the backtest would have decided; the
signal for bar ``T+1`` is the last row. It is a forecast, not a measured
result: its track record is the run's out-of-sample metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from backtest.data.frame import timeframe_delta
from backtest.data.load import load_data, load_source
from backtest.errors import RunDirError
from backtest.features import feature_matrix
from backtest.folds.store import SavedFold, fold_test_span, read_saved_fold
from backtest.rundir import read_run
from strategies.build import build_signals


@dataclass
class NextForecast:
    """One model's forecast for the bar after ``last_bar`` (lowest seed)."""

    model: str
    last_bar: pd.Timestamp  # bar T, open time UTC; its close is the last price the model saw
    next_bar: pd.Timestamp  # bar T+1, open time UTC: the bar forecast and traded (at its open)
    last_close: float
    predicted_return: float  # log return r̂[T+1]
    predicted_close: float  # last_close * exp(r̂), quote currency
    signals: dict[str, str]  # strategy -> "long" | "flat" for bar T+1 (this model's portfolios)
    fold: int
    train_end: pd.Timestamp  # the last training row's timestamp of that fold (its target known before T0)
    quote: str


@dataclass
class NextBar:
    """Every model's forecast, every portfolio's signal for bar T+1, and warnings (one line each)."""

    forecasts: list[NextForecast]
    portfolios: dict[str, str]  # portfolio label -> "long" | "flat" (incl. ensembles and baselines)
    warnings: list[str] = field(default_factory=list)


def fold_for(run_dir: Path, model: str, seed: int, last_bar: pd.Timestamp) -> SavedFold:
    """The newest complete fold of ``model`` / ``seed`` whose test block starts at or before ``last_bar`` (the
    data's last closed bar T, the decision bar): its training rows all lie before the forecast bar T+1, and
    its forecast at T is the backtest's. One :class:`RunDirError` line when no fold qualifies."""
    base = run_dir / "folds" / model
    ks = sorted((int(p.name) for p in base.iterdir() if p.name.isdigit()), reverse=True) if base.is_dir() else []
    first = None
    for k in ks:
        d = base / str(k) / f"seed-{seed}"
        if not (d / "forecasts.csv").exists():
            continue
        start, _ = fold_test_span(d)
        first = start
        if start <= last_bar:
            return read_saved_fold(d)
    if first is None:
        raise RunDirError(f"{run_dir}: no finished fold with a saved model for {model!r}")
    raise RunDirError(f"{run_dir}: the data ends at {last_bar.isoformat()}, before the run's first test bar "
                      f"{first.isoformat()}: no fold of {model!r} was trained only on bars before it; "
                      f"give data that reaches {first.isoformat()}")


def _source_symbol(spec: str) -> str | None:
    if spec == "bundled":
        return "BTC/USDT"
    if spec.startswith("ccxt:") and spec.count(":") == 3:
        return spec.split(":")[2]
    return None  # a file: no symbol in it


def predict_next(run_dir: Path, *, data_source: str | None = None, model: str | None = None) -> NextBar:
    """Forecast the bar after the data's last closed bar T with each model of the run (shown: just ``model``),
    using each model's fold chosen by :func:`fold_for` (the newest whose test block starts at or before T).

    A model is reported as stale (``warnings``) when it is older than one retraining step: the forecast
    bar lies beyond its fold's first test bar + ``walkforward.step`` + ``features.horizon`` bars, i.e. the
    data holds a full step of newer rows with known targets and a re-run would train a newer model.

    Refuses (one-line :class:`RunDirError`) data of another timeframe or symbol than the run's.
    """
    run_dir = Path(run_dir)
    cfg, meta, preds = read_run(run_dir)
    if cfg.data.universe() is not None:
        raise RunDirError(f"{run_dir}: a universe run ({', '.join(cfg.data.universe() or [])}); "
                          f"walkforward predict takes a single-symbol run")
    if model and model not in cfg.models:
        raise RunDirError(f"{run_dir}: no model {model!r}; models: {', '.join(cfg.models)}")
    data = load_source(data_source, repair=cfg.data.repair) if data_source else \
        load_data(cfg.data, fetch=False) if cfg.data.source == "ccxt" else load_data(cfg.data)
    run_tf = str((meta.get("data") or {}).get("timeframe") or cfg.data.timeframe)
    if data.timeframe != run_tf:
        raise RunDirError(f"{data.source}: {data.timeframe} bars, but the run {run_dir} was made on {run_tf} bars")
    symbol = _source_symbol(data_source) if data_source else cfg.data.symbol
    if symbol is not None and symbol != cfg.data.symbol:
        raise RunDirError(f"{data.source}: {symbol} data, but the run {run_dir} was made on {cfg.data.symbol}")
    bars = data.bars
    delta = timeframe_delta(data.timeframe)
    feats_df = feature_matrix(bars, cfg.features.inputs)
    feats, close = feats_df.to_numpy(), bars["close"].to_numpy()
    if np.isnan(feats[len(bars) - cfg.features.lookback:]).any():
        raise RunDirError(f"{data.source}: too few bars for a {cfg.features.lookback}-bar window")
    last, nxt = bars.index[-1], bars.index[-1] + delta
    quote = cfg.data.symbol.split("/")[-1].split(":")[0] if "/" in cfg.data.symbol else ""
    steps = [c for c in preds.columns if c.startswith("y_pred_h")]
    names = list(cfg.models)  # every model: ensembles need them all; ``model`` only narrows what is shown
    new_rows, info, warnings = [], {}, []
    for name in names:
        for seed in cfg.run.seeds:
            saved = fold_for(run_dir, name, seed, last)
            r = saved.forecast(feats, close, len(bars) - 1)
            test_start = saved.test_start
            new = {"timestamp": last, "model": name, "seed": seed, "fold": saved.fold, "y_true": np.nan,
                   "y_pred": float(r[0]), "close": float(close[-1]), "pred_close": float(close[-1] * np.exp(r[0]))}
            for i, c in enumerate(steps):
                new[c] = float(r[i]) if i < len(r) else np.nan
            new_rows.append(new)
            if seed == cfg.run.seeds[0]:
                info[name] = (new, saved.fold, test_start - (1 + cfg.features.horizon) * delta)
                # The schedule retrains every `step` bars from the fold's first test bar T0. A forecast bar
                # beyond T0 + step + horizon means the data holds a full step of newer rows with known
                # targets, so a re-run would train a newer model than this one.
                if nxt > test_start + (cfg.walkforward.step + cfg.features.horizon) * delta:
                    warnings.append(f"model {name!r} (fold {saved.fold}) is older than one retraining step: "
                                    f"trained on bars up to {info[name][2].isoformat()}, {cfg.walkforward.step}-bar "
                                    f"step, forecasting {nxt.isoformat()}; re-run the run on newer data")
    keep = preds[preds["timestamp"] < last]
    allp = pd.concat([keep, pd.DataFrame(new_rows)], ignore_index=True).sort_values(["model", "seed", "timestamp"])
    signals, specs = build_signals(cfg, allp, bars)
    state = {s.label: ("long" if bool(signals[s.label].iloc[-1]) else "flat") for s in specs}
    if model:
        warnings = [w for w in warnings if w.startswith(f"model {model!r}")]
    out = []
    for name in ([model] if model else names):
        new, fold, train_end = info[name]
        mine = {s.strategy: state[s.label] for s in specs if s.model == name
                and (s.seed is None or s.seed == cfg.run.seeds[0])}
        out.append(NextForecast(name, last, nxt, float(close[-1]), new["y_pred"], new["pred_close"], mine, fold,
                                train_end, quote))
    return NextBar(out, state, warnings)


def format_forecast(result: NextBar) -> str:
    """Terminal table: model, predicted return [%], implied close, signal per strategy, fold and training end."""
    items = result.forecasts
    if not items:
        return "no models"
    first = items[0]
    lines = [f"last closed bar {first.last_bar.isoformat()} close {first.last_close:,.2f} {first.quote}; "
             f"forecasts for the bar opening {first.next_bar.isoformat()} (signals trade at its open):"]
    for it in items:
        sig = ", ".join(f"{k}: {v}" for k, v in it.signals.items()) or "-"
        lines.append(f"  {it.model:<14} return {100 * (np.exp(it.predicted_return) - 1):+.3f}%  "
                     f"close {it.predicted_close:,.2f} {it.quote}  signal {sig}  "
                     f"(model of fold {it.fold}, trained on bars up to {it.train_end.isoformat()})")
    lines.append("  portfolios: " + ", ".join(f"{k}: {v}" for k, v in result.portfolios.items()))
    return "\n".join(lines)
