"""Every model x strategy pair as one signal column (plus the baselines), from the predictions.

Column labels are portfolio names: ``"<model>/<strategy>"`` for a model's
strategy, ``"<strategy>"`` for an ensemble or a baseline, and ``"/seed=N"``
appended when the run has several seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

import pandas as pd

from strategies import BASELINE_STRATEGIES
from strategies.params import StrategyConfig
from strategies.signals import (
    always_flat, buy_and_hold, ensemble_forecast, ensemble_vote, long_flat, round_trip_cost, sma_cross,
)


class Costs(Protocol):
    """The costs of a fill (``[backtest]``)."""

    fees: float  # fraction of order value per fill
    slippage: float  # fraction of price lost per fill


class SignalConfig(Protocol):
    """What signals read of a run's config (``backtest.config.Config`` has it; strategies import nothing
    from the engine): the strategies, the models (``.type`` of each) and the costs."""

    strategies: Mapping[str, StrategyConfig]
    models: Mapping[str, Any]
    backtest: Costs


@dataclass(frozen=True)
class PortfolioSpec:
    """What one signal column is: its label, model (None for baselines), strategy and seed."""

    label: str
    model: str | None
    strategy: str
    strategy_type: str
    seed: int | None


def model_forecast(preds: pd.DataFrame) -> pd.Series:
    """The forecast a strategy acts on, per decision bar: r̂[t+1], or the K-step sum for multi-step models."""
    steps = [c for c in preds.columns if c.startswith("y_pred_h")]
    f = preds[steps].sum(axis=1) if len(steps) > 1 and preds[steps].notna().all().all() else preds["y_pred"]
    return pd.Series(f.to_numpy(), index=pd.DatetimeIndex(preds["timestamp"]))


def _long_flat(s: StrategyConfig, forecast: pd.Series, default_threshold: float) -> pd.Series:
    t = default_threshold if s.threshold is None else s.threshold
    return long_flat(forecast, t, s.entry_threshold, s.exit_threshold)


def build_signals(cfg: SignalConfig, predictions: pd.DataFrame, bars: pd.DataFrame) -> tuple[pd.DataFrame, list[PortfolioSpec]]:
    """Boolean signal columns indexed by decision bar t (the test bars), and what each column is."""
    index = pd.DatetimeIndex(sorted(predictions["timestamp"].unique()), name="timestamp")
    thr = round_trip_cost(cfg.backtest.fees, cfg.backtest.slippage)
    seeds = sorted(predictions["seed"].unique())
    multi = len(seeds) > 1
    cols: dict[str, pd.Series] = {}
    specs: list[PortfolioSpec] = []

    def add(label: str, model: str | None, sname: str, s: StrategyConfig, seed: int | None, sig: pd.Series) -> None:
        full = label + (f"/seed={seed}" if multi and seed is not None else "")
        cols[full] = sig.reindex(index).fillna(False).astype(bool)
        specs.append(PortfolioSpec(full, model, sname, s.type, seed))

    for sname, s in cfg.strategies.items():
        if s.type in BASELINE_STRATEGIES:
            sig = {"buy_and_hold": lambda: buy_and_hold(index), "always_flat": lambda: always_flat(index),
                   "sma_cross": lambda: sma_cross(bars["close"], s.fast, s.slow, index)}[s.type]()
            add(sname, None, sname, s, None, sig)
            continue
        for seed in seeds:
            by_model = {m: model_forecast(g) for m, g in predictions[predictions["seed"] == seed].groupby("model", sort=False)}
            if s.type == "long_flat":
                for m, fc in by_model.items():
                    add(f"{m}/{sname}", m, sname, s, seed, _long_flat(s, fc, thr))
            elif s.type == "ensemble":
                names = s.models or [m for m in by_model if cfg.models[m].type not in ("persistence", "mean")]
                frame = pd.DataFrame({m: by_model[m] for m in names})
                if s.method == "mean":
                    sig = _long_flat(s, ensemble_forecast(frame), thr)
                else:
                    sig = ensemble_vote(pd.DataFrame({m: _long_flat(s, frame[m], thr) for m in names}))
                add(sname, "+".join(names), sname, s, seed, sig)
    return pd.DataFrame(cols, index=index), specs
