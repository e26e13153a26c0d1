"""A sweep's analysis: from its grid points' run directories to :class:`backtest.sweep_schema.SweepMetrics`.

Inputs are finished run directories (one per grid point, each evaluated by the normal pipeline) and the
bars; nothing here trains. A **candidate** is one model of one grid point (``"<grid point>/<model>"``;
persistence and the mean are benchmarks, not candidates; a model whose config, features, walk-forward and
strategies are the same in two grid points is one candidate, from its first grid point). Its per-bar record
is the mean over its seeds: the squared error of r̂[t+1] at decision bar ``t`` (``y_true = r[t+1]``), and the
per-bar return of its long/flat portfolio (vectorbt's, from ``equity.csv``: the return over bar ``t``'s
close-to-close of a position decided at ``t - 1``'s close and executed at ``t``'s open). Blocks are the
walk-forward test blocks (the ``fold`` column of ``predictions.csv``).

From those: the walk-forward selection (:mod:`backtest.selection`), re-simulated by the normal evaluation
(:func:`backtest.evaluate.evaluate`) so that switching costs fees like any trade; PBO, SPA/RC and the MCS
(:mod:`backtest.overfitting`); the deflated Sharpe ratio over every trial (every grid point x model strategy
x seed); and the verdict, which says a tuned model beats its benchmark only when SPA rejects.

Single-symbol sweeps only: a universe sweep gets its comparison report and a note instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import Config
from backtest.data.frame import periods_per_year
from backtest.overfitting import model_confidence_set, pbo_cscv, spa_reality_check
from backtest.rundir import read_run
from backtest.schema import RunMetrics
from backtest.selection import Criterion, block_scores, choose, hindsight_best, selected_rows
from backtest.sweep_schema import (
    Baselines, CandidateSeeds, GridPoint, SelectionBlock, SelectionRecord, SweepInfo, SweepMetrics, SweepVerdict,
)

BENCHMARK_TYPES = ("persistence", "mean")


@dataclass
class PointRun:
    """One grid point as the analysis reads it back from its run directory."""

    label: str
    values: dict[str, str]
    run_dir: Path
    cfg: Config
    predictions: pd.DataFrame
    metrics: RunMetrics
    equity: pd.DataFrame


def load_point(run_dir: str | Path, label: str, values: dict[str, str]) -> PointRun:
    """Read one evaluated grid point (config, predictions, metrics.json, equity.csv)."""
    d = Path(run_dir)
    cfg, _, preds = read_run(d)
    eq = pd.read_csv(d / "equity.csv")
    eq.index = pd.DatetimeIndex(pd.to_datetime(eq.pop(eq.columns[0]), utc=True), name="timestamp")
    return PointRun(label, values, d, cfg, preds, RunMetrics.read(d / "metrics.json"), eq.astype(float))


@dataclass
class Candidate:
    """One model of one grid point."""

    name: str
    point: PointRun
    model: str


def candidates_of(points: list[PointRun]) -> list[Candidate]:
    """Every (grid point, model) that is not a benchmark, once per distinct (model, features, walk-forward,
    strategies) config, in grid order."""
    seen: set[str] = set()
    out = []
    for p in points:
        for m, mcfg in p.cfg.models.items():
            if mcfg.type in BENCHMARK_TYPES:
                continue
            key = "|".join([mcfg.model_dump_json(), p.cfg.features.model_dump_json(),
                            p.cfg.walkforward.model_copy(update={"executor": "sequential", "workers": None}).model_dump_json(),
                            str({k: v.model_dump_json() for k, v in p.cfg.strategies.items()}),
                            p.cfg.backtest.model_dump_json()])
            if key in seen:
                continue
            seen.add(key)
            out.append(Candidate(f"{p.label}/{m}", p, m))
    return out


def long_flat_strategy(cfg: Config) -> str | None:
    """The first long/flat strategy of the config: the portfolio the selection, PBO and SPA use."""
    return next((n for n, s in cfg.strategies.items() if s.type == "long_flat"), None)


def _model_rows(c: Candidate) -> pd.DataFrame:
    return c.point.predictions[c.point.predictions["model"] == c.model]


def squared_errors(cands: list[Candidate]) -> pd.DataFrame:
    """Per decision bar (rows) and candidate (columns): the seed-mean squared error of r̂[t+1]."""
    cols = {}
    for c in cands:
        g = _model_rows(c)
        cols[c.name] = ((g["y_pred"] - g["y_true"]) ** 2).groupby(g["timestamp"]).mean()
    return pd.DataFrame(cols).sort_index()


def portfolio_labels(c: Candidate, strategy: str) -> list[str]:
    """The candidate's portfolio labels of ``strategy``, one per seed."""
    return [lab for lab, r in c.point.metrics.portfolios.items() if r.model == c.model and r.strategy == strategy]


def strategy_returns(cands: list[Candidate], strategy: str, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Per bar of ``index`` and candidate: the seed-mean per-bar return of its ``strategy`` portfolio (an equal
    split of cash over its seeds' portfolios). The first test bar's return (no position yet) is 0."""
    cols = {}
    for c in cands:
        eq = c.point.equity[portfolio_labels(c, strategy)]
        cols[c.name] = eq.pct_change().fillna(0.0).mean(axis=1).reindex(index)
    return pd.DataFrame(cols, index=index)


def baseline_returns(point: PointRun, index: pd.DatetimeIndex) -> tuple[str, pd.Series]:
    """Buy & hold's label and per-bar returns over ``index``."""
    label = next(lab for lab, r in point.metrics.portfolios.items() if r.strategy_type == "buy_and_hold")
    return label, point.equity[label].pct_change().fillna(0.0).reindex(index)


def _seed_values(c: Candidate, fn) -> list[float | None]:  # type: ignore[no-untyped-def]
    block = c.point.metrics.models[c.model].per_seed
    return [fn(block[str(s)]) if str(s) in block else None for s in c.point.cfg.run.seeds]


def candidate_seeds(c: Candidate) -> CandidateSeeds:
    """The candidate's per-seed MSE, MSE ratio, direction accuracy and long/flat Sharpe ratios."""
    seeds = list(c.point.cfg.run.seeds)
    sharpe: dict[str, list[float | None]] = {}
    for lab, r in c.point.metrics.portfolios.items():
        if r.model == c.model and r.strategy_type == "long_flat":
            sharpe.setdefault(r.strategy, [None] * len(seeds))
            i = seeds.index(r.seed) if r.seed in seeds else 0
            sharpe[r.strategy][i] = r.portfolio.sharpe
    return CandidateSeeds(
        candidate=c.name, grid_point=c.point.label, model=c.model, seeds=seeds,
        mse=_seed_values(c, lambda b: b.regression.mse), mse_ratio=_seed_values(c, lambda b: b.regression.mse_ratio),
        accuracy=_seed_values(c, lambda b: b.classification.accuracy), sharpe=sharpe)


def _mean(vals: list[Any]) -> float | None:
    v = [x for x in vals if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else None


def _std(vals: list[Any]) -> float | None:
    v = [x for x in vals if x is not None and np.isfinite(x)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else None


def selection_config(cfg: Config, c: Candidate, strategy: str) -> Config:
    """The config the selection is evaluated with: one model ``selected`` (its type is the first candidate's;
    only ``persistence`` changes how a model is evaluated) and the long/flat strategy plus the baselines."""
    from strategies import BASELINE_STRATEGIES

    strategies = {n: s for n, s in cfg.strategies.items() if n == strategy or s.type in BASELINE_STRATEGIES}
    return cfg.model_copy(update={"models": {"selected": c.point.cfg.models[c.model]}, "strategies": strategies})


@dataclass
class SweepAnalysis:
    """The sweep's metrics plus what its report draws and the selection's evaluation (written beside it)."""

    metrics: SweepMetrics
    selection_eval: Any  # backtest.evaluate.Evaluation of the selection, or None
    selection_predictions: pd.DataFrame | None
    returns: pd.DataFrame | None  # candidates' per-bar long/flat returns (seed mean)
    benchmark_returns: pd.Series | None


def analyse(points: list[PointRun], bars: pd.DataFrame, timeframe: str, criterion: Criterion, *,
            grid: dict[str, list[str]], trainings: int, pbo_blocks: int = 16, reps: int = 1000,
            synthetic: pd.Series | None = None, out_dir: Path | None = None) -> SweepAnalysis:
    """Analyse a finished single-symbol sweep (see the module docstring). ``out_dir``: where the grid point
    run directories are written relative to (for ``GridPoint.run_dir``)."""
    from backtest.evaluate import deflated_sharpe, evaluate

    base = points[0].cfg
    level = base.backtest.significance_level
    seed = base.run.seeds[0]
    ppy = periods_per_year(timeframe)
    notes: list[str] = []
    cands = candidates_of(points)
    strategy = long_flat_strategy(base)
    preds0 = points[0].predictions
    blocks = preds0.drop_duplicates("timestamp").set_index("timestamp")["fold"].sort_index()
    index = pd.DatetimeIndex(blocks.index)
    sq = squared_errors(cands).reindex(index)
    y_true = preds0.drop_duplicates("timestamp").set_index("timestamp")["y_true"].reindex(index)
    rets = bh = None
    if strategy is not None:
        rets = strategy_returns(cands, strategy, index)
        bh_label, bh = baseline_returns(points[0], index)
    else:
        notes.append("no long/flat strategy in the config: the selection by Sharpe, PBO and the portfolio SPA need one")

    # --- walk-forward selection
    selection = sel_eval = sel_preds = None
    per_bar = sq if criterion.name == "mse" else rets
    if per_bar is None or not cands:
        notes.append("no walk-forward selection: " + ("no candidates" if not cands else "criterion needs a long/flat strategy"))
    else:
        scores = block_scores(per_bar, blocks, criterion)
        chosen = choose(scores, criterion)
        fc = {c.name: _model_rows(c).assign(model="selected") for c in cands}
        sel_preds = selected_rows(fc, blocks, chosen)
        sel_preds = sel_preds.sort_values(["seed", "timestamp"], kind="stable").reset_index(drop=True)
        blocks_out = []
        for k, cand in chosen.items():
            ts = blocks.index[blocks.to_numpy() == k]
            sc = scores.loc[k, cand]
            blocks_out.append(SelectionBlock(int(k), ts[0].isoformat(), ts[-1].isoformat(), str(cand),
                                             None if not np.isfinite(sc) else float(sc)))
        switches = int((chosen != chosen.shift()).sum() - 1)
        selection = SelectionRecord(criterion=criterion.name, lookback=criterion.lookback,
                                    min_history=criterion.min_history, rule=criterion.text(), blocks=blocks_out,
                                    switches=switches)
        if strategy is not None:
            scfg = selection_config(base, cands[0], strategy)
            sym = scfg.data.symbol
            sel_eval = evaluate(scfg, sel_preds.drop(columns="chosen"), {sym: bars}, timeframe,
                                synthetic=None if synthetic is None else {sym: synthetic})
            m = sel_eval.metrics
            ports = [r for r in m.portfolios.values() if r.model == "selected" and r.strategy == strategy]
            selection.sharpe_mean = _mean([r.portfolio.sharpe for r in ports])
            selection.sharpe_std = _std([r.portfolio.sharpe for r in ports])
            selection.total_return_mean = _mean([r.portfolio.total_return for r in ports])
            selection.max_drawdown_mean = _mean([r.portfolio.max_drawdown for r in ports])
            selection.verdict = ports[0].verdict if ports else None
            sm = m.models["selected"].per_seed.values()
            selection.mse_ratio_mean = _mean([b.regression.mse_ratio for b in sm])
            selection.accuracy_mean = _mean([b.classification.accuracy for b in sm])
        best = hindsight_best(per_bar, criterion)
        selection.hindsight_best = best
        bc = next(c for c in cands if c.name == best)
        cs = candidate_seeds(bc)
        selection.hindsight_sharpe_mean = _mean(cs.sharpe.get(strategy or "", []))
        selection.hindsight_mse_ratio_mean = _mean(cs.mse_ratio)

    # --- overfitting diagnostics
    pbo = spa_p = spa_f = mcs = None
    if rets is not None and len(cands) >= 2:
        pbo = pbo_cscv(rets.iloc[1:], n_blocks=pbo_blocks)
    elif len(cands) < 2:
        notes.append("one candidate: PBO and the MCS need at least two")
    if rets is not None and bh is not None and cands:
        spa_p = spa_reality_check(-bh.iloc[1:], -rets.iloc[1:], benchmark=bh_label, loss="negative per-bar return",
                                  reps=reps, seed=seed)
    if cands:
        spa_f = spa_reality_check(y_true ** 2, sq, benchmark="persistence", loss="squared error of r̂[t+1]",
                                  reps=reps, seed=seed)
        mcs = model_confidence_set(sq, size=level, reps=reps, seed=seed)

    # --- the deflated Sharpe ratio over every trial (every grid point x model strategy x seed)
    trial_cols, sharpes = {}, {}
    for p in points:
        for lab, r in p.metrics.portfolios.items():
            if r.model is None:
                continue
            name = f"{p.label}: {lab}"
            trial_cols[name] = p.equity[lab].pct_change().reindex(index)
            sharpes[name] = r.portfolio.sharpe
    dsr = deflated_sharpe(pd.DataFrame(trial_cols).iloc[1:], list(trial_cols), sharpes)

    info = SweepInfo(
        name=str(base.run.name).split("__")[0], symbol=base.data.symbol, timeframe=timeframe, periods_per_year=ppy,
        grid=grid, seeds=list(base.run.seeds), first_test_bar=index[0].isoformat(), last_test_bar=index[-1].isoformat(),
        test_bars=len(index), blocks=int(blocks.nunique()), trainings=trainings, significance_level=level,
        strategy=strategy)
    baselines = Baselines(
        sharpe={lab: r.portfolio.sharpe for lab, r in points[0].metrics.portfolios.items() if r.model is None},
        buy_and_hold=bh_label if bh is not None else None, up_share=float((y_true > 0).mean()),
        persistence_mse=float((y_true ** 2).mean()))
    grid_points = [GridPoint(p.label, p.values, str(p.run_dir.relative_to(out_dir)) if out_dir else str(p.run_dir))
                   for p in points]
    metrics = SweepMetrics(sweep=info, grid=grid_points, candidates=[candidate_seeds(c) for c in cands],
                           baselines=baselines, selection=selection, pbo=pbo, spa_portfolio=spa_p, spa_forecast=spa_f,
                           mcs=mcs, deflated_sharpe=dsr, verdict=verdict(spa_p, spa_f, pbo, selection, level),
                           notes=notes)
    return SweepAnalysis(metrics, sel_eval, sel_preds, rets, bh)


def _p(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def verdict(spa_p: Any, spa_f: Any, pbo: Any, selection: SelectionRecord | None, level: float) -> SweepVerdict:
    """The sweep's verdict in words: "beats" only where SPA's consistent p-value is below ``level``; the reality
    check's p-value, PBO and the selection's own record are quoted beside it."""
    def one(res: Any, what: str, bench: str) -> tuple[str, str]:
        if res is None or res.spa_p_consistent is None:
            return "not_shown", f"{what}: untested ({res.note if res is not None and res.note else 'no candidates'})."
        ok = res.spa_p_consistent < level
        head = (f"{what}: the best tuned model beats {bench}" if ok else
                f"{what}: no tuned model is shown to beat {bench}")
        return ("beats" if ok else "not_shown",
                f"{head} (Hansen's SPA p = {_p(res.spa_p_consistent)}, White's reality check p = {_p(res.rc_p)}, "
                f"level {level:g}, {res.n_candidates} candidates).")

    port, t1 = one(spa_p, "Trading", "buy & hold")
    fore, t2 = one(spa_f, "Forecasting", "persistence (no change)")
    parts = [t1, t2]
    if pbo is not None and pbo.pbo is not None:
        parts.append(f"Probability of backtest overfitting {pbo.pbo:.2f} (CSCV, {pbo.n_blocks} blocks): "
                     + ("choosing the in-sample best is likely to pick a below-median grid point out of sample."
                        if pbo.pbo >= 0.5 else "the in-sample best usually stays above the median out of sample."))
    if selection is not None and selection.sharpe_mean is not None:
        v = selection.verdict
        parts.append(f"Tuning walk-forward and trading the choice: Sharpe {selection.sharpe_mean:.2f}"
                     + (f" (vs buy & hold: {v.short()})" if v is not None else "") + ".")
    return SweepVerdict(portfolio=port, forecast=fore, text=" ".join(parts))


__all__ = ["Candidate", "PointRun", "SweepAnalysis", "analyse", "candidate_seeds", "candidates_of", "load_point",
           "long_flat_strategy", "selection_config", "squared_errors", "strategy_returns", "verdict"]
