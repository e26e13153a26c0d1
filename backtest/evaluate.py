"""From out-of-sample predictions to signals, portfolios and ``metrics.json``.

The pieces are plain functions: :func:`evaluate` takes the predictions and the
bars and returns the metrics dict, the equity frame and the trades table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from backtest import significance as sig
from backtest.config import Config
from backtest.data.frame import periods_per_year
from backtest.metrics import _f, classification, mean_std, model_significance, portfolio_stats, regression
from backtest.simulate import Simulation, simulate, trades_table
from strategies.build import PortfolioSpec, build_signals
from strategies.signals import hold_on_synthetic


@dataclass
class Evaluation:
    """Everything a report needs."""

    metrics: dict[str, Any]
    equity: pd.DataFrame
    trades: pd.DataFrame
    signals: pd.DataFrame
    simulation: Simulation


def model_metrics(cfg: Config, predictions: pd.DataFrame) -> dict[str, Any]:
    """Per model and seed: direction (predicted up = r̂[t+1] > 0), errors, DM and PT; mean/std across seeds."""
    out: dict[str, Any] = {}
    for model, g in predictions.groupby("model", sort=False):
        per_seed: dict[str, Any] = {}
        for seed, s in g.groupby("seed"):
            yt, yp = s["y_true"].to_numpy(), s["y_pred"].to_numpy()
            per_seed[str(seed)] = {
                "classification": classification(yt, yp > 0),
                "regression": regression(yt, yp, s["close"].to_numpy()),
                "significance": model_significance(yt, yp),
            }
        block: dict[str, Any] = {"type": cfg.models[str(model)].type, "per_seed": per_seed}
        if len(per_seed) > 1:
            block["mean"], block["std"] = mean_std(list(per_seed.values()))
        out[str(model)] = block
    return out


def _verdict(row: dict[str, Any], bh_sharpe: float | None, model_block: dict[str, Any] | None) -> str:
    parts = []
    s, p = row.get("sharpe"), row.get("sharpe_diff_p_value")
    if s is None or bh_sharpe is None:
        parts.append("Sharpe undefined")
    elif s > bh_sharpe:
        parts.append(f"beats buy & hold on Sharpe ({s:.2f} vs {bh_sharpe:.2f}, bootstrap p={p:.2f})" if p is not None
                     else f"beats buy & hold on Sharpe ({s:.2f} vs {bh_sharpe:.2f})")
    else:
        parts.append(f"does not beat buy & hold on Sharpe ({s:.2f} vs {bh_sharpe:.2f})")
    if model_block is not None and model_block.get("type") != "persistence":
        reg = model_block.get("regression", {})
        dm = model_block.get("significance", {}).get("diebold_mariano", {})
        ratio, dmp = reg.get("mse_ratio"), dm.get("p_value_less")
        if ratio is not None:
            better = ratio < 1 and dmp is not None and dmp < 0.05
            parts.append(f"MSE {ratio:.3f}x persistence" + (f" (DM p={dmp:.2f})" if dmp is not None else "")
                         + (": beats 'no change'" if better else ": not better than 'no change'"))
    return "; ".join(parts)


def evaluate(cfg: Config, predictions: pd.DataFrame, bars: pd.DataFrame, timeframe: str,
             synthetic: pd.Series | None = None) -> Evaluation:
    """Signals for every model x strategy (and the baselines), one vectorbt simulation, all metrics.

    ``synthetic`` (True = a bar inserted or price-replaced by the data repair): no signal is decided on
    such a bar (:func:`strategies.signals.hold_on_synthetic`)."""
    ppy = periods_per_year(timeframe)
    signals, specs = build_signals(cfg, predictions, bars)
    signals = hold_on_synthetic(signals, synthetic)  # a repaired bar is never traded on as if real
    sim = simulate(signals, bars, cfg.backtest, timeframe)
    returns = sim.portfolio.returns()  # type: ignore[attr-defined]
    bh_label = next(s.label for s in specs if s.strategy_type == "buy_and_hold")
    bh_ret = returns[bh_label].to_numpy()
    models = model_metrics(cfg, predictions)
    portfolios: dict[str, Any] = {}
    for spec in specs:
        held = sim.positions[spec.label]
        block: dict[str, Any] = {
            "model": spec.model, "strategy": spec.strategy, "strategy_type": spec.strategy_type, "seed": spec.seed,
            "portfolio": portfolio_stats(sim.portfolio, spec.label, ppy, held.iloc[1:]),
        }
        if spec.model is not None:
            seed_preds = predictions[predictions["seed"] == spec.seed]
            y_true = seed_preds.drop_duplicates("timestamp").set_index("timestamp")["y_true"].reindex(signals.index)
            block["classification"] = classification(y_true.to_numpy(), signals[spec.label].to_numpy())
        if spec.strategy_type != "buy_and_hold":
            block["significance"] = {"sharpe_diff_vs_buy_and_hold": sig.bootstrap_sharpe_diff(
                returns[spec.label].to_numpy()[1:], bh_ret[1:], periods_per_year=ppy,
                n_boot=cfg.backtest.bootstrap_samples, seed=cfg.run.seeds[0])}
        portfolios[spec.label] = block
    tried = [s.label for s in specs if s.model is not None]
    dsr: dict[str, Any] = {"note": "no model strategies"}
    if tried:
        best = max(tried, key=lambda lab: portfolios[lab]["portfolio"]["sharpe"] or -np.inf)
        dsr = sig.deflated_sharpe_from_returns(returns[tried].iloc[1:], best)
        dsr["trials"] = tried
    summary = _summary(portfolios, models, bh_label)
    metrics = {
        "run": {
            "name": cfg.run.name, "symbol": cfg.data.symbol, "quote": cfg.data.symbol.split("/")[-1].split(":")[0],
            "timeframe": timeframe, "periods_per_year": ppy,
            "first_test_bar": signals.index[0].isoformat(), "last_test_bar": signals.index[-1].isoformat(),
            "test_bars": len(signals), "fees": cfg.backtest.fees, "slippage": cfg.backtest.slippage,
            "init_cash": cfg.backtest.init_cash, "seeds": cfg.run.seeds,
            "execution": "decision at close of bar t, filled at open of bar t+1",
        },
        "summary": summary,
        "models": models,
        "portfolios": portfolios,
        "deflated_sharpe": dsr,
    }
    _add_seed_means(metrics, specs)
    return Evaluation(metrics, sim.equity, trades_table(sim), signals, sim)


def _summary(portfolios: dict[str, Any], models: dict[str, Any], bh_label: str) -> list[dict[str, Any]]:
    bh_sharpe = portfolios[bh_label]["portfolio"]["sharpe"]
    rows = []
    for label, b in portfolios.items():
        p, c = b["portfolio"], b.get("classification") or {}
        sd = (b.get("significance") or {}).get("sharpe_diff_vs_buy_and_hold") or {}
        mb = None
        if b["model"] in models:
            seeds = models[b["model"]]["per_seed"]
            mb = dict(seeds.get(str(b["seed"]), next(iter(seeds.values()))), type=models[b["model"]]["type"])
        row = {
            "portfolio": label, "model": b["model"], "strategy": b["strategy"], "seed": b["seed"],
            "total_return": p["total_return"], "cagr": p["cagr"], "sharpe": p["sharpe"], "sortino": p["sortino"],
            "max_drawdown": p["max_drawdown"], "trades": p["trades"], "exposure": p["exposure"],
            "precision": c.get("precision"), "recall": c.get("recall"), "f1": c.get("f1"),
            "sharpe_diff_p_value": _f(sd.get("p_value")),
        }
        row["verdict"] = "benchmark" if label == bh_label else _verdict(row, bh_sharpe, mb)
        rows.append(row)
    rows.sort(key=lambda r: -(r["sharpe"] if r["sharpe"] is not None else -np.inf))
    return rows


def _add_seed_means(metrics: dict[str, Any], specs: list[PortfolioSpec]) -> None:
    """With several seeds, add mean/std across seeds for each model x strategy."""
    groups: dict[str, list[str]] = {}
    for s in specs:
        if s.seed is not None and s.label.endswith(f"/seed={s.seed}"):
            groups.setdefault(s.label.rsplit("/seed=", 1)[0], []).append(s.label)
    agg = {}
    for base, labels in groups.items():
        if len(labels) > 1:
            blocks = [{k: metrics["portfolios"][lab].get(k) for k in ("portfolio", "classification")} for lab in labels]
            mean, std = mean_std(blocks)
            agg[base] = {"seeds": len(labels), "mean": mean, "std": std}
    if agg:
        metrics["across_seeds"] = agg
