"""``walkforward predict``: tomorrow's forecast from a finished run's newest fold model.

The forecast is for bar ``T+1`` where ``T`` is the data's last *closed* bar: the
input window ends at ``T`` (bars <= T only), the model and its fitted transform
are the ones the run's last fold trained (on rows whose targets were known
before that fold's first test bar). It is a forecast, not a measured result:
its track record is the run's out-of-sample metrics.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from backtest.data.load import load_data, load_source
from backtest.errors import RunDirError
from backtest.features import feature_matrix
from backtest.rundir import read_run
from strategies.signals import long_flat, round_trip_cost


@dataclass
class NextForecast:
    """One model's forecast for the bar after ``last_bar``."""

    model: str
    last_bar: pd.Timestamp  # bar T, open time UTC; its close is the last price the model saw
    last_close: float
    predicted_return: float  # log return r̂[T+1]
    predicted_close: float  # last_close * exp(r̂), quote currency
    signals: dict[str, str]  # strategy -> "long" | "flat" for bar T+1
    fold: int
    quote: str


def _newest_fold(run_dir: Path, model: str, seed: int) -> Path:
    base = run_dir / "folds" / model
    folds = sorted((int(p.name) for p in base.iterdir() if p.name.isdigit()), reverse=True) if base.is_dir() else []
    for k in folds:
        d = base / str(k) / f"seed-{seed}"
        if (d / "forecasts.csv").exists() and (d / "transform.pkl").exists():
            return d
    raise RunDirError(f"{run_dir}: no finished fold with a saved model for {model!r}")


def predict_next(run_dir: Path, *, data_source: str | None = None, model: str | None = None) -> list[NextForecast]:
    """Forecast the bar after the data's last closed bar for each model of the run (or just ``model``)."""
    from models.base import Forecaster

    cfg, _meta, _preds = read_run(run_dir)
    if cfg.data.universe() is not None:
        raise RunDirError(f"{run_dir}: a universe run ({', '.join(cfg.data.universe() or [])}); "
                          f"walkforward predict takes a single-symbol run")
    data = load_source(data_source, timeframe=cfg.data.timeframe, repair=cfg.data.repair) if data_source else \
        load_data(cfg.data, fetch=False) if cfg.data.source == "ccxt" else load_data(cfg.data)
    bars = data.bars
    names = [model] if model else list(cfg.models)
    if model and model not in cfg.models:
        raise RunDirError(f"{run_dir}: no model {model!r}; models: {', '.join(cfg.models)}")
    feats_df = feature_matrix(bars, cfg.features.inputs)
    feats, close = feats_df.to_numpy(), bars["close"].to_numpy()
    row = np.array([len(bars) - 1])
    if np.isnan(feats[len(bars) - cfg.features.lookback:]).any():
        raise RunDirError(f"{data.source}: too few bars for a {cfg.features.lookback}-bar window")
    thr = round_trip_cost(cfg.backtest.fees, cfg.backtest.slippage)
    quote = cfg.data.symbol.split("/")[-1] if "/" in cfg.data.symbol else ""
    out = []
    for name in names:
        d = _newest_fold(Path(run_dir), name, cfg.run.seeds[0])
        tr = pickle.loads((d / "transform.pkl").read_bytes())
        fc = Forecaster.load(d / "model")
        z = fc.predict(tr.transform_X(feats, row))
        r = float((z if fc.target_space == "return" else tr.decode_y(z, close, row))[0, 0])
        sigs = {}
        for sname, s in cfg.strategies.items():
            if s.type == "long_flat":
                t = thr if s.threshold is None else s.threshold
                on = bool(long_flat(pd.Series([r]), t, s.entry_threshold, s.exit_threshold).iloc[0])
                sigs[sname] = "long" if on else "flat"
        out.append(NextForecast(name, bars.index[-1], float(close[-1]), r, float(close[-1] * np.exp(r)), sigs, int(d.parent.name), quote))
    return out


def format_forecast(items: list[NextForecast]) -> str:
    """Terminal table: model, predicted return [%], implied close, signal per strategy."""
    if not items:
        return "no models"
    first = items[0]
    nxt = "the next bar"
    lines = [f"last closed bar {first.last_bar.isoformat()} close {first.last_close:,.2f} {first.quote}; forecasts for {nxt}:"]
    for it in items:
        sig = ", ".join(f"{k}: {v}" for k, v in it.signals.items()) or "-"
        lines.append(f"  {it.model:<14} return {100 * (np.exp(it.predicted_return) - 1):+.3f}%  "
                     f"close {it.predicted_close:,.2f} {it.quote}  signal {sig}  (model of fold {it.fold})")
    return "\n".join(lines)
