"""From out-of-sample predictions to signals, portfolios and ``metrics.json``.

The pieces are plain functions: :func:`evaluate` takes the predictions and the
bars and returns the typed metrics (:class:`backtest.schema.RunMetrics`), the
equity frame and the trades table. Verdicts are data (:class:`backtest.schema.Verdict`):
"beats" only when the test rejects at ``backtest.significance_level``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from backtest import significance as sig
from backtest.config import Config
from backtest.data.frame import periods_per_year
from backtest.metrics import classification, mean_std, model_significance, portfolio_stats, regression
from backtest.schema import (
    AcrossSeeds, ClassificationMetrics, DeflatedSharpe, DieboldMariano, ForecastSignificance, ModelMetrics,
    PesaranTimmermann, PortfolioMetrics, PortfolioResult, RegressionMetrics, RunInfo, RunMetrics, SeedModelMetrics,
    SeedPortfolio, SharpeDiffBootstrap, SummaryRow, Verdict, build, finite,
)
from backtest.simulate import Simulation, simulate, trades_table
from strategies.build import PortfolioSpec, build_signals
from strategies.signals import hold_on_synthetic

BOOTSTRAP_TEST = "stationary bootstrap of the Sharpe difference"
DM_TEST = "Diebold-Mariano (HLN, squared error)"


@dataclass
class Evaluation:
    """Everything a report needs."""

    metrics: RunMetrics
    equity: pd.DataFrame
    trades: pd.DataFrame
    signals: pd.DataFrame
    simulation: Simulation


def decide(estimate_sign: float | None, p_two_sided: float | None, level: float) -> str:
    """The outcome of a two-sided test: ``beats`` / ``worse`` when ``p < level`` (by the sign of the
    candidate-minus-benchmark advantage), ``not_distinguishable`` otherwise, ``undefined`` without a p."""
    if p_two_sided is None or estimate_sign is None:
        return "undefined"
    if p_two_sided < level:
        return "beats" if estimate_sign > 0 else "worse" if estimate_sign < 0 else "not_distinguishable"
    return "not_distinguishable"


def sharpe_verdict(boot: SharpeDiffBootstrap | None, sharpe: float | None, bh_sharpe: float | None,
                   level: float) -> Verdict:
    """Against buy & hold on annualised Sharpe, from the two-sided bootstrap p-value."""
    p = boot.p_value_two_sided if boot else None
    diff = boot.sharpe_diff if boot else None
    note = boot.note if boot and p is None else (None if boot else "no bootstrap")
    return Verdict(outcome=decide(diff, p, level), against="buy & hold", measure="sharpe", test=BOOTSTRAP_TEST,
                   sided="two-sided", level=level, p_value=p, estimate=sharpe, benchmark_value=bh_sharpe, note=note)


def forecast_verdict(reg: RegressionMetrics, dm: DieboldMariano, level: float) -> Verdict:
    """The model's forecasts against persistence on squared error, from the two-sided DM p-value."""
    adv = None if dm.mean_loss_diff is None else -dm.mean_loss_diff  # positive = lower loss than persistence
    return Verdict(outcome=decide(adv, dm.p_value_two_sided, level), against="persistence", measure="mse",
                   test=DM_TEST, sided="two-sided", level=level, p_value=dm.p_value_two_sided,
                   estimate=reg.mse_ratio, benchmark_value=1.0, note=dm.note)


def _dm(d: dict[str, Any]) -> DieboldMariano:
    return DieboldMariano(statistic=finite(d.get("statistic")), p_value_two_sided=finite(d.get("p_value")),
                          p_value_one_sided_model_better=finite(d.get("p_value_less")),
                          mean_loss_diff=finite(d.get("mean_loss_diff")), n=d.get("n"), h=d.get("h"),
                          note=d.get("note"))


def _pt(d: dict[str, Any]) -> PesaranTimmermann:
    return PesaranTimmermann(statistic=finite(d.get("statistic")), p_value_one_sided_skill=finite(d.get("p_value")),
                             hit_rate=finite(d.get("hit_rate")), expected_hit_rate=finite(d.get("expected_hit_rate")),
                             n=d.get("n"), note=d.get("note"))


def _boot(d: dict[str, Any]) -> SharpeDiffBootstrap:
    return SharpeDiffBootstrap(
        sharpe_diff=finite(d.get("sharpe_diff")), ci_low=finite(d.get("ci_low")), ci_high=finite(d.get("ci_high")),
        p_value_one_sided_better=finite(d.get("p_value")), p_value_one_sided_worse=finite(d.get("p_value_worse")),
        p_value_two_sided=finite(d.get("p_value_two_sided")), n_boot=d.get("n_boot"), block=finite(d.get("block")),
        sharpe_strategy=finite(d.get("sharpe_strategy")), sharpe_benchmark=finite(d.get("sharpe_benchmark")),
        n=d.get("n"), note=d.get("note"))


def model_metrics(cfg: Config, predictions: pd.DataFrame) -> dict[str, ModelMetrics]:
    """Per model and seed: direction (predicted up = r̂[t+1] > 0), errors, DM and PT; mean/std across seeds."""
    level = cfg.backtest.significance_level
    out: dict[str, ModelMetrics] = {}
    for model, g in predictions.groupby("model", sort=False):
        per_seed: dict[str, SeedModelMetrics] = {}
        raw: list[dict[str, Any]] = []
        for seed, s in g.groupby("seed"):
            yt, yp = s["y_true"].to_numpy(), s["y_pred"].to_numpy()
            c, r = classification(yt, yp > 0), regression(yt, yp, s["close"].to_numpy())
            ms = model_significance(yt, yp)
            reg = build(RegressionMetrics, r)
            dm = _dm(ms["diebold_mariano"])
            is_pers = cfg.models[str(model)].type == "persistence"
            per_seed[str(seed)] = SeedModelMetrics(
                classification=build(ClassificationMetrics, c), regression=reg,
                significance=ForecastSignificance(dm, _pt(ms["pesaran_timmermann"])),
                verdict_vs_persistence=None if is_pers else forecast_verdict(reg, dm, level))
            raw.append(per_seed[str(seed)])
        block = ModelMetrics(type=cfg.models[str(model)].type, per_seed=per_seed)
        if len(per_seed) > 1:
            dicts = [_numbers(m) for m in raw]
            mean, std = mean_std(dicts)
            block.mean, block.std = build(SeedModelMetrics, mean), build(SeedModelMetrics, std)
        out[str(model)] = block
    return out


def _numbers(block: Any) -> dict[str, Any]:
    """A block's numeric fields as a nested dict (for mean/std across seeds)."""
    from dataclasses import asdict

    d = asdict(block)
    d.pop("verdict_vs_persistence", None)
    return d


def flags_of(p: PortfolioMetrics, min_trades: int, min_exposure: float) -> list[str]:
    """Reasons not to trust a portfolio's numbers: fewer than ``min_trades`` trades, exposure below
    ``min_exposure`` (fraction of bars)."""
    out = []
    if p.trades is not None and p.trades < min_trades:
        out.append(f"few trades ({int(p.trades)} < {min_trades})")
    if p.exposure is not None and p.exposure < min_exposure:
        out.append(f"low exposure ({100 * p.exposure:.1f}% < {100 * min_exposure:g}%)")
    return out


def evaluate(cfg: Config, predictions: pd.DataFrame, bars: pd.DataFrame, timeframe: str,
             synthetic: pd.Series | None = None) -> Evaluation:
    """Signals for every model x strategy (and the baselines), one vectorbt simulation, all metrics.

    ``synthetic`` (True = a bar inserted or price-replaced by the data repair): no signal is decided on
    such a bar (:func:`strategies.signals.hold_on_synthetic`)."""
    ppy = periods_per_year(timeframe)
    bt = cfg.backtest
    level = bt.significance_level
    signals, specs = build_signals(cfg, predictions, bars)
    signals = hold_on_synthetic(signals, synthetic)  # a repaired bar is never traded on as if real
    sim = simulate(signals, bars, bt, timeframe, synthetic=synthetic)
    returns = sim.portfolio.returns()  # type: ignore[attr-defined]
    bh_label = next(s.label for s in specs if s.strategy_type == "buy_and_hold")
    bh_ret = returns[bh_label].to_numpy()
    models = model_metrics(cfg, predictions)
    stats = {s.label: build(PortfolioMetrics, portfolio_stats(sim.portfolio, s.label, ppy, sim.positions[s.label].iloc[1:]))
             for s in specs}
    bh_sharpe = stats[bh_label].sharpe
    portfolios: dict[str, PortfolioResult] = {}
    for spec in specs:
        p = stats[spec.label]
        cls = None
        if spec.model is not None:
            seed_preds = predictions[predictions["seed"] == spec.seed]
            y_true = seed_preds.drop_duplicates("timestamp").set_index("timestamp")["y_true"].reindex(signals.index)
            cls = build(ClassificationMetrics, classification(y_true.to_numpy(), signals[spec.label].to_numpy()))
        boot = None
        if spec.strategy_type == "buy_and_hold":
            verdict = Verdict(outcome="benchmark", against="buy & hold", level=level, estimate=p.sharpe,
                              benchmark_value=p.sharpe)
        else:
            boot = _boot(sig.bootstrap_sharpe_diff(returns[spec.label].to_numpy()[1:], bh_ret[1:], periods_per_year=ppy,
                                                   n_boot=bt.bootstrap_samples, seed=cfg.run.seeds[0]))
            verdict = sharpe_verdict(boot, p.sharpe, bh_sharpe, level)
        flags = [] if spec.strategy_type == "buy_and_hold" else flags_of(p, bt.min_trades, bt.min_exposure)
        portfolios[spec.label] = PortfolioResult(
            label=spec.label, model=spec.model, strategy=spec.strategy, strategy_type=spec.strategy_type,
            seed=spec.seed, portfolio=p, verdict=verdict, classification=cls, sharpe_vs_buy_and_hold=boot, flags=flags)
    tried = [s.label for s in specs if s.model is not None]
    dsr = deflated_sharpe(returns.iloc[1:], tried, {lab: portfolios[lab].portfolio.sharpe for lab in tried})
    run = RunInfo(
        name=cfg.run.name, symbol=cfg.data.symbol, quote=cfg.data.symbol.split("/")[-1].split(":")[0],
        timeframe=timeframe, periods_per_year=ppy, first_test_bar=signals.index[0].isoformat(),
        last_test_bar=signals.index[-1].isoformat(), test_bars=len(signals), fees=bt.fees, slippage=bt.slippage,
        init_cash=bt.init_cash, seeds=list(cfg.run.seeds), significance_level=level, min_trades=bt.min_trades,
        min_exposure=bt.min_exposure)
    metrics = RunMetrics(run=run, summary=_summary(portfolios, models), models=models, portfolios=portfolios,
                         deflated_sharpe=dsr, across_seeds=_seed_means(portfolios, specs))
    return Evaluation(metrics, sim.equity, trades_table(sim), signals, sim)


def deflated_sharpe(returns: pd.DataFrame, trials: list[str], sharpes: dict[str, float | None]) -> DeflatedSharpe:
    """DSR of the best (highest annualised Sharpe) of ``trials``, columns of per-bar ``returns``.

    ``trials`` must be every model x strategy x seed tried (in a sweep: of every grid point), baselines
    excluded; the count is ``n_trials`` in the result."""
    if not trials:
        return DeflatedSharpe(note="no model strategies")
    best = max(trials, key=lambda lab: sharpes.get(lab) if sharpes.get(lab) is not None else -np.inf)
    d = sig.deflated_sharpe_from_returns(returns[trials], best)
    return DeflatedSharpe(
        n_trials=int(d["n_trials"]), trials=list(trials), selected=str(best), dsr=finite(d.get("dsr")),
        psr=finite(d.get("psr")), sr0=finite(d.get("sr0")), statistic=finite(d.get("statistic")),
        p_value=finite(d.get("p_value")), sharpe=finite(d.get("sharpe")), n_obs=d.get("n_obs"),
        skew=finite(d.get("skew")), kurtosis=finite(d.get("kurtosis")), sharpe_variance=finite(d.get("sharpe_variance")),
        note=d.get("note"))


def _sort_key(sharpe: float | None) -> float:
    return -(sharpe if sharpe is not None else -np.inf)


def _summary(portfolios: dict[str, PortfolioResult], models: dict[str, ModelMetrics]) -> list[SummaryRow]:
    rows = []
    for label, b in portfolios.items():
        p, c = b.portfolio, b.classification or ClassificationMetrics()
        mb = None
        if b.model in models:
            seeds = models[b.model].per_seed
            mb = seeds.get(str(b.seed)) or next(iter(seeds.values()))
        rows.append(SummaryRow(
            portfolio=label, model=b.model, strategy=b.strategy, seed=b.seed, total_return=p.total_return,
            cagr=p.cagr, sharpe=p.sharpe, sortino=p.sortino, max_drawdown=p.max_drawdown, trades=p.trades,
            exposure=p.exposure, precision=c.precision, recall=c.recall, f1=c.f1,
            mse_ratio=mb.regression.mse_ratio if mb else None,
            sharpe_diff_p_value_two_sided=b.sharpe_vs_buy_and_hold.p_value_two_sided if b.sharpe_vs_buy_and_hold else None,
            verdict=b.verdict, forecast_verdict=mb.verdict_vs_persistence if mb else None, flags=list(b.flags)))
    rows.sort(key=lambda r: _sort_key(r.sharpe))
    return rows


def _seed_means(portfolios: dict[str, PortfolioResult], specs: list[PortfolioSpec]) -> dict[str, AcrossSeeds]:
    """With several seeds, mean/std across seeds for each model x strategy."""
    from dataclasses import asdict

    groups: dict[str, list[str]] = {}
    for s in specs:
        if s.seed is not None and s.label.endswith(f"/seed={s.seed}"):
            groups.setdefault(s.label.rsplit("/seed=", 1)[0], []).append(s.label)
    agg = {}
    for base, labels in groups.items():
        if len(labels) > 1:
            blocks = [{"portfolio": asdict(portfolios[lab].portfolio),
                       "classification": asdict(portfolios[lab].classification or ClassificationMetrics())}
                      for lab in labels]
            mean, std = mean_std(blocks)
            agg[base] = AcrossSeeds(seeds=len(labels), mean=build(SeedPortfolio, mean), std=build(SeedPortfolio, std))
    return agg


def format_summary(metrics: RunMetrics) -> str:
    """The terminal table at the end of a run: each portfolio's total return [%], Sharpe (annualised),
    max drawdown [%] and verdict against buy & hold, best Sharpe first, flags shown; then the DSR line."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:+.1f}"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    head = ("portfolio", "return [%]", "Sharpe", "max DD [%]", "verdict vs buy & hold", "flags")
    rows = [(r.portfolio, pct(r.total_return), num(r.sharpe),
             "n/a" if r.max_drawdown is None else f"{100 * abs(r.max_drawdown):.1f}", r.verdict.short(),
             "; ".join(r.flags)) for r in metrics.summary]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    right = {1, 2, 3}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    level = metrics.run.significance_level
    d = metrics.deflated_sharpe
    out.append(f"out of sample, {metrics.run.first_test_bar[:10]} .. {metrics.run.last_test_bar[:10]}; "
               f"'beats' only where the two-sided bootstrap p < {level:g}")
    if d.n_trials:
        out.append(f"deflated Sharpe of the best ({d.selected}) over {d.n_trials} trials: "
                   + ("n/a" if d.dsr is None else f"{d.dsr:.3f} (p = {d.p_value:.3f})"))
    return "\n".join(out)
