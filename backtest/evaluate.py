"""From out-of-sample predictions to signals, portfolios and ``metrics.json``: one evaluation for every run.

A run is a universe of one (docs/design.md, "One path"). :func:`evaluate` returns one :class:`Evaluation`
whose metrics are one :class:`backtest.schema.RunMetrics` (every block's meaning is documented there):

* **per symbol** (:func:`evaluate_symbol`): signals (no decision on a synthetic bar), one vectorbt
  simulation, portfolio metrics, verdicts ("beats" only when the two-sided test rejects at
  ``backtest.significance_level``), flags. With one symbol this *is* the run.
* **several symbols**: every label as one equal-weight, cash-shared portfolio over the symbols
  (:func:`backtest.universe.portfolio.simulate_universe`), judged against the equal-weight buy & hold
  with the same verdict function; forecast metrics pooled over the symbols; for each model x strategy,
  on how many symbols it beats persistence (DM) and buy & hold (bootstrap), with Holm and
  Benjamini-Hochberg adjusted p-values (:func:`beat_count`); the deflated Sharpe over the universe
  portfolios and over every symbol x model x strategy tried.

Units as in :mod:`backtest.metrics`: returns and drawdowns are fractions, Sharpe ratios annualised
with the timeframe's bars per year (365 for ``1d``, 8,760 for ``1h``), stated in ``RunMetrics.run``.
Every signal decided at the close of bar t is traded at the open of bar t+1.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from backtest import significance as sig
from backtest.config import Config
from backtest.data.frame import periods_per_year, timeframe_seconds
from backtest.errors import DataError
from backtest.metrics import classification, mean_std, model_significance, portfolio_stats, regression
from backtest.schema import (
    AcrossSeeds, BarRepairs, BeatCount, ClassificationMetrics, DeflatedSharpe, DieboldMariano, ForecastSignificance,
    ModelMetrics, PesaranTimmermann, PortfolioMetrics, PortfolioResult, RegressionMetrics, RunInfo, RunMetrics,
    SeedModelMetrics, SeedPortfolio, SharpeDiffBootstrap, SummaryRow, SymbolMetrics, SymbolTest, UniverseBlock,
    Verdict, build, finite,
)
from backtest.simulate import Simulation, simulate, trades_table
from backtest.universe.portfolio import UNIVERSE_BH, UniverseSimulation, simulate_universe
from strategies.build import PortfolioSpec, build_signals
from strategies.signals import hold_on_synthetic

BOOTSTRAP_TEST = "stationary bootstrap of the Sharpe difference"
DM_TEST = "Diebold-Mariano (HLN, squared error)"
#: Who the portfolios of a run of several symbols are judged against.
EW_BH = "equal-weight buy & hold"
#: Regression fields left out of metrics pooled over several symbols (they would mix price scales).
PRICE_FIELDS = ("price_mae", "price_rmse", "price_mae_ratio", "price_rmse_ratio")
T = TypeVar("T")


@dataclass
class SymbolEvaluation:
    """One symbol's evaluation: its metrics, equity (quote currency at each bar's close, one column per
    portfolio), trades, signals (decision bar t x portfolio, after holding on synthetic bars) and simulation."""

    metrics: SymbolMetrics
    equity: pd.DataFrame
    trades: pd.DataFrame
    signals: pd.DataFrame
    simulation: Simulation


@dataclass
class Evaluation:
    """Everything a report needs.

    ``metrics``: the run's ``metrics.json``. ``equity``: value at each bar's close (quote currency): one
    column per portfolio of the run; with several symbols the universe portfolios by label and each
    symbol's own as ``label[SYMBOL]`` (NaN outside its span). ``trades``: one row per trade (with several
    symbols a ``symbol`` column). ``signals`` / ``simulations``: per symbol. ``universe_simulation``:
    the equal-weight portfolios (several symbols only).
    """

    metrics: RunMetrics
    equity: pd.DataFrame
    trades: pd.DataFrame
    signals: dict[str, pd.DataFrame]
    simulations: dict[str, Simulation]
    universe_simulation: UniverseSimulation | None = None


def decide(estimate_sign: float | None, p_two_sided: float | None, level: float) -> str:
    """The outcome of a two-sided test: ``beats`` / ``worse`` when ``p < level`` (by the sign of the
    candidate-minus-benchmark advantage), ``not_distinguishable`` otherwise, ``undefined`` without a p."""
    if p_two_sided is None or estimate_sign is None:
        return "undefined"
    if p_two_sided < level:
        return "beats" if estimate_sign > 0 else "worse" if estimate_sign < 0 else "not_distinguishable"
    return "not_distinguishable"


def sharpe_verdict(boot: SharpeDiffBootstrap | None, sharpe: float | None, bh_sharpe: float | None,
                   level: float, against: str = "buy & hold") -> Verdict:
    """Against buy & hold (``against``) on annualised Sharpe, from the two-sided bootstrap p-value."""
    p = boot.p_value_two_sided if boot else None
    diff = boot.sharpe_diff if boot else None
    note = boot.note if boot and p is None else (None if boot else "no bootstrap")
    return Verdict(outcome=decide(diff, p, level), against=against, measure="sharpe", test=BOOTSTRAP_TEST,
                   sided="two-sided", level=level, p_value=p, estimate=sharpe, benchmark_value=bh_sharpe, note=note)


def forecast_verdict(reg: RegressionMetrics, dm: DieboldMariano, level: float) -> Verdict:
    """The model's forecasts against persistence on squared error, from the two-sided DM p-value."""
    adv = None if dm.mean_loss_diff is None else -dm.mean_loss_diff  # positive = lower loss than persistence
    return Verdict(outcome=decide(adv, dm.p_value_two_sided, level), against="persistence", measure="mse",
                   test=DM_TEST, sided="two-sided", level=level, p_value=dm.p_value_two_sided,
                   estimate=reg.mse_ratio, benchmark_value=1.0, note=dm.note)


def _test_block(tp: type[T], d: dict[str, Any], **renamed: str) -> T:
    """A test's schema block from its result dict (:mod:`backtest.significance`): field ``f`` from key
    ``renamed.get(f, f)``, float fields through :func:`finite`, counts and notes as they are."""
    hints = typing.get_type_hints(tp)
    values = {f.name: d.get(renamed.get(f.name, f.name)) for f in dataclasses.fields(tp)}  # type: ignore[arg-type]
    return tp(**{k: finite(v) if hints[k] == float | None else v for k, v in values.items()})


def _dm(d: dict[str, Any]) -> DieboldMariano:
    return _test_block(DieboldMariano, d, p_value_two_sided="p_value", p_value_one_sided_model_better="p_value_less")


def _boot(d: dict[str, Any]) -> SharpeDiffBootstrap:
    return _test_block(SharpeDiffBootstrap, d, p_value_one_sided_better="p_value",
                       p_value_one_sided_worse="p_value_worse")


def model_metrics(cfg: Config, predictions: pd.DataFrame) -> dict[str, ModelMetrics]:
    """Per model and seed: direction (predicted up = r̂[t+1] > 0), errors, DM and PT; mean/std across seeds."""
    level = cfg.backtest.significance_level
    out: dict[str, ModelMetrics] = {}
    for model, g in predictions.groupby("model", sort=False):
        per_seed: dict[str, SeedModelMetrics] = {}
        for seed, s in g.groupby("seed"):
            yt, yp = s["y_true"].to_numpy(), s["y_pred"].to_numpy()
            c, r = classification(yt, yp > 0), regression(yt, yp, s["close"].to_numpy())
            ms = model_significance(yt, yp)
            reg = build(RegressionMetrics, r)
            dm = _dm(ms["diebold_mariano"])
            is_pers = cfg.models[str(model)].type == "persistence"
            per_seed[str(seed)] = SeedModelMetrics(
                classification=build(ClassificationMetrics, c), regression=reg,
                significance=ForecastSignificance(dm, _test_block(PesaranTimmermann, ms["pesaran_timmermann"],
                                                                  p_value_one_sided_skill="p_value")),
                verdict_vs_persistence=None if is_pers else forecast_verdict(reg, dm, level))
        block = ModelMetrics(type=cfg.models[str(model)].type, per_seed=per_seed)
        if len(per_seed) > 1:  # mean/std of the numbers across seeds (verdicts left out)
            mean, std = mean_std([{k: v for k, v in asdict(m).items() if k != "verdict_vs_persistence"}
                                  for m in per_seed.values()])
            block.mean, block.std = build(SeedModelMetrics, mean), build(SeedModelMetrics, std)
        out[str(model)] = block
    return out


def flags_of(p: PortfolioMetrics, min_trades: int, min_exposure: float) -> list[str]:
    """Reasons not to trust a portfolio's numbers: fewer than ``min_trades`` trades, exposure below
    ``min_exposure`` (fraction of bars)."""
    out = []
    if p.trades is not None and p.trades < min_trades:
        out.append(f"few trades ({int(p.trades)} < {min_trades})")
    if p.exposure is not None and p.exposure < min_exposure:
        out.append(f"low exposure ({100 * p.exposure:.1f}% < {100 * min_exposure:g}%)")
    return out


def signals_held(signals: pd.DataFrame, synthetic: pd.Series | None) -> int:
    """Decision bars of ``signals`` that are synthetic: on each, every portfolio kept its previous signal
    (:func:`strategies.signals.hold_on_synthetic`)."""
    if synthetic is None or signals.empty:
        return 0
    return int(synthetic.reindex(signals.index, fill_value=False).astype(bool).sum())


def bar_repairs(signals: pd.DataFrame, synthetic: pd.Series | None, sim: Simulation) -> BarRepairs:
    """The repair counts of one symbol (:class:`backtest.schema.BarRepairs`); ``fills_moved`` as the
    simulation reports it (0 where it does not)."""
    return BarRepairs(synthetic_bars=0 if synthetic is None else int(synthetic.astype(bool).sum()),
                      signals_held=signals_held(signals, synthetic),
                      fills_moved=int(getattr(sim, "fills_moved", 0) or 0))


def evaluate_symbol(cfg: Config, predictions: pd.DataFrame, bars: pd.DataFrame, timeframe: str,
                    synthetic: pd.Series | None = None, symbol: str | None = None) -> SymbolEvaluation:
    """One symbol: signals for every model x strategy (and the baselines), one vectorbt simulation, all metrics.

    ``predictions``: that symbol's rows of ``predictions.csv`` (``timestamp`` = decision bar t, ``y_true`` =
    r[t+1]). ``synthetic`` (True = a bar inserted or price-replaced by the data repair): no signal is
    decided on such a bar (:func:`strategies.signals.hold_on_synthetic`)."""
    symbol = symbol or cfg.data.symbol
    ppy = periods_per_year(timeframe)
    signals, specs = build_signals(cfg, predictions, bars)
    signals = hold_on_synthetic(signals, synthetic)  # a repaired bar is never traded on as if real
    sim = simulate(signals, bars, cfg.backtest, timeframe, synthetic=synthetic)
    returns = sim.portfolio.returns()  # type: ignore[attr-defined]
    bh_label = next(s.label for s in specs if s.strategy_type == "buy_and_hold")
    models = model_metrics(cfg, predictions)
    stats = {s.label: build(PortfolioMetrics, portfolio_stats(sim.portfolio, s.label, ppy, sim.positions[s.label].iloc[1:]))
             for s in specs}
    portfolios: dict[str, PortfolioResult] = {}
    for spec in specs:
        cls = None
        if spec.model is not None:
            seed_preds = predictions[predictions["seed"] == spec.seed]
            y_true = seed_preds.drop_duplicates("timestamp").set_index("timestamp")["y_true"].reindex(signals.index)
            cls = build(ClassificationMetrics, classification(y_true.to_numpy(), signals[spec.label].to_numpy()))
        portfolios[spec.label] = _judged(cfg, spec, stats, returns, bh_label, ppy, cls,
                                         benchmark=spec.strategy_type == "buy_and_hold")
    tried = [s.label for s in specs if s.model is not None]
    dsr = deflated_sharpe(returns.iloc[1:], tried, {lab: portfolios[lab].portfolio.sharpe for lab in tried})
    rep = bar_repairs(signals, synthetic, sim)
    run = _run_info(cfg, timeframe, symbol=symbol, quote=quote_of(symbol), first_test_bar=signals.index[0].isoformat(),
                    last_test_bar=signals.index[-1].isoformat(), test_bars=len(signals), symbols=[symbol], n_symbols=1,
                    synthetic_bars=rep.synthetic_bars, signals_held=rep.signals_held, fills_moved=rep.fills_moved)
    rows = sorted((_row(b, _seed_block(models, b)) for b in portfolios.values()), key=lambda r: _sort_key(r.sharpe))
    metrics = SymbolMetrics(run=run, summary=rows, models=models, portfolios=portfolios,
                            deflated_sharpe=dsr, across_seeds=_seed_means(portfolios, specs))
    return SymbolEvaluation(metrics, sim.equity, trades_table(sim), signals, sim)


def _judged(cfg: Config, spec: Any, stats: dict[str, PortfolioMetrics], returns: pd.DataFrame, bh_label: str,
            ppy: float, cls: ClassificationMetrics | None, *, benchmark: bool,
            against: str = "buy & hold") -> PortfolioResult:
    """``spec``'s portfolio with its verdict against buy & hold (column ``bh_label`` of the per-bar ``returns``;
    the stationary bootstrap of the Sharpe difference) and its flags; the ``benchmark`` itself gets neither."""
    bt, p = cfg.backtest, stats[spec.label]
    boot = None
    if benchmark:
        verdict = Verdict(outcome="benchmark", against=against, level=bt.significance_level, estimate=p.sharpe,
                          benchmark_value=p.sharpe)
    else:
        boot = _boot(sig.bootstrap_sharpe_diff(returns[spec.label].to_numpy()[1:], returns[bh_label].to_numpy()[1:],
                                               periods_per_year=ppy, n_boot=bt.bootstrap_samples,
                                               seed=cfg.run.seeds[0]))
        verdict = sharpe_verdict(boot, p.sharpe, stats[bh_label].sharpe, bt.significance_level, against)
    flags = [] if spec.strategy_type == "buy_and_hold" else flags_of(p, bt.min_trades, bt.min_exposure)
    return PortfolioResult(label=spec.label, model=spec.model, strategy=spec.strategy, strategy_type=spec.strategy_type,
                           seed=spec.seed, portfolio=p, verdict=verdict, classification=cls,
                           sharpe_vs_buy_and_hold=boot, flags=flags)


def _run_info(cfg: Config, timeframe: str, **fields: Any) -> RunInfo:
    """The run block: ``fields`` (market, test span, repairs) and what every run states from ``cfg``."""
    bt = cfg.backtest
    return RunInfo(name=cfg.run.name, timeframe=timeframe, periods_per_year=periods_per_year(timeframe), fees=bt.fees,
                   slippage=bt.slippage, init_cash=bt.init_cash, seeds=list(cfg.run.seeds),
                   significance_level=bt.significance_level, min_trades=bt.min_trades, min_exposure=bt.min_exposure,
                   bar_seconds=timeframe_seconds(timeframe), **fields)


def quote_of(symbol: str) -> str:
    """The quote currency of a market symbol: ``BTC/USDT`` -> ``USDT``, ``BTC/USDT:USDT`` -> ``USDT``."""
    return symbol.split("/")[-1].split(":")[0]


def evaluate(cfg: Config, predictions: pd.DataFrame, bars: dict[str, pd.DataFrame], timeframe: str,
             synthetic: dict[str, pd.Series] | None = None) -> Evaluation:
    """Every portfolio and forecast metric of a run, for one symbol or several (see the module docstring).

    ``predictions``: the ``predictions.csv`` table (``timestamp, [symbol,] model, seed, fold, y_true,
    y_pred, close, pred_close``; ``timestamp`` = decision bar t, ``y_true`` = r[t+1]); without a ``symbol``
    column the rows are the one symbol of ``bars``. ``bars``: validated OHLCV per symbol, in listing
    order. ``synthetic``: per symbol, the repair's mask (True = a bar inserted or price-replaced); no
    signal is decided on a synthetic bar. A one-symbol run's metrics are that symbol's
    (:func:`evaluate_symbol`) with ``universe = None``; its equity and trades are the symbol's.
    """
    predictions = _with_symbol(predictions, bars)
    symbols = [s for s in bars if (predictions["symbol"] == s).any()]
    if not symbols:
        raise DataError("predictions: no rows")
    for s in symbols:  # fail before any work, naming the symbol
        _check_executable(s, pd.DatetimeIndex(predictions.loc[predictions["symbol"] == s, "timestamp"]), bars[s])
    synthetic = synthetic or {}
    per: dict[str, SymbolEvaluation] = {}
    for s in symbols:
        preds = predictions[predictions["symbol"] == s].drop(columns="symbol")
        scfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"symbol": s})})
        per[s] = evaluate_symbol(scfg, preds, bars[s], timeframe, synthetic.get(s), symbol=s)
    if len(symbols) == 1:
        ev = per[symbols[0]]
        return Evaluation(RunMetrics(**vars(ev.metrics)), ev.equity, ev.trades, {symbols[0]: ev.signals},
                          {symbols[0]: ev.simulation})
    return _evaluate_several(cfg, predictions, bars, timeframe, per, synthetic)


def _with_symbol(predictions: pd.DataFrame, bars: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The predictions with a ``symbol`` column (added for a one-symbol table) and UTC timestamps."""
    if "symbol" not in predictions.columns:
        if len(bars) != 1:
            raise DataError(f"predictions: no 'symbol' column, but {len(bars)} symbols were loaded")
        predictions = predictions.assign(symbol=next(iter(bars)))
    if not isinstance(predictions["timestamp"].dtype, pd.DatetimeTZDtype):  # e.g. read back from predictions.csv
        predictions = predictions.assign(timestamp=pd.to_datetime(predictions["timestamp"], utc=True))
    unknown = sorted(set(predictions["symbol"]) - set(bars))
    if unknown:
        raise DataError(f"{unknown[0]}: in the predictions but no bars were loaded for it")
    return predictions


def _check_executable(symbol: str, decisions: pd.DatetimeIndex, bars: pd.DataFrame) -> None:
    """Every decision bar of ``symbol`` must be one of its bars, and so must the bar after its last one
    (where the last signal is executed); else a one-line :class:`DataError` naming the symbol."""
    missing = decisions.difference(bars.index)
    if len(missing):
        raise DataError(f"{symbol}: forecast at {missing[0].isoformat()} has no bar in the loaded data")
    if bars.index.get_loc(decisions.max()) + 1 >= len(bars):
        raise DataError(f"{symbol}: the bar after the last decision bar {decisions.max().isoformat()} is missing: "
                        "cannot execute the last signal")


def _evaluate_several(cfg: Config, predictions: pd.DataFrame, bars: dict[str, pd.DataFrame], timeframe: str,
                      per: dict[str, SymbolEvaluation], synthetic: dict[str, pd.Series]) -> Evaluation:
    """The universe portfolios, counts of symbols beaten, pooled forecast metrics and deflated Sharpe."""
    symbols = list(per)
    bt = cfg.backtest
    level = bt.significance_level
    ppy = periods_per_year(timeframe)
    sym_metrics = {s: e.metrics for s, e in per.items()}
    labels = list(sym_metrics[symbols[0]].portfolios)
    for s in symbols:
        if list(sym_metrics[s].portfolios) != labels:
            raise ValueError(f"{s}: portfolio labels differ from the other symbols'")
    ports0 = sym_metrics[symbols[0]].portfolios

    uni_signals, active = _universe_signals({s: e.signals for s, e in per.items()}, labels)
    usim = simulate_universe(uni_signals, {s: bars[s] for s in symbols}, bt, timeframe, active=active,
                             synthetic={s: synthetic[s] for s in symbols if s in synthetic})
    pf = usim.portfolio
    uret = pf.returns()  # type: ignore[attr-defined]
    uni_labels = [lab for lab in labels if lab != UNIVERSE_BH] + [UNIVERSE_BH]
    stats = {lab: build(PortfolioMetrics, portfolio_stats(pf, lab, ppy, usim.positions[lab].any(axis=1).iloc[1:]))
             for lab in uni_labels}
    bh = stats[UNIVERSE_BH]
    universe: dict[str, PortfolioResult] = {}
    rows: list[SummaryRow] = []
    for lab in uni_labels:
        spec = ports0[lab]
        cls = (build(ClassificationMetrics, _pooled_signal_classification(predictions, uni_signals[lab], active, spec))
               if spec.model is not None else None)
        b = universe[lab] = _judged(cfg, spec, stats, uret, UNIVERSE_BH, ppy, cls, benchmark=lab == UNIVERSE_BH,
                                    against=EW_BH)
        beats_bh, beats_pers = _beat_counts(cfg, spec, symbols, sym_metrics, level)
        boot = b.sharpe_vs_buy_and_hold
        rows.append(_row(b, strategy_type=spec.strategy_type, bh_total_return=bh.total_return, bh_sharpe=bh.sharpe,
                         bh_max_drawdown=bh.max_drawdown, sharpe_diff=boot.sharpe_diff if boot else None,
                         beats_buy_and_hold=beats_bh, beats_persistence=beats_pers))
    rows.sort(key=lambda r: _sort_key(r.sharpe))

    model_labels = [lab for lab in labels if ports0[lab].model is not None]
    sym_rets = {s: e.simulation.portfolio.returns() for s, e in per.items()}  # type: ignore[attr-defined]
    per_sym_rets = pd.DataFrame({f"{s}|{lab}": sym_rets[s][lab].iloc[1:] for s in symbols for lab in model_labels})
    per_sym_sharpes = {f"{s}|{lab}": sym_metrics[s].portfolios[lab].portfolio.sharpe for s in symbols for lab in model_labels}
    specs = [PortfolioSpec(label=lab, model=r.model, strategy=r.strategy, strategy_type=r.strategy_type, seed=r.seed)
             for lab, r in universe.items()]
    reps = {s: BarRepairs(m.run.synthetic_bars, m.run.signals_held, m.run.fills_moved) for s, m in sym_metrics.items()}
    quotes = {quote_of(s) for s in symbols}
    run = _run_info(
        cfg, timeframe, symbol=f"universe of {len(symbols)} symbols",
        quote=quotes.pop() if len(quotes) == 1 else "quote", first_test_bar=usim.equity.index[0].isoformat(),
        last_test_bar=active.index[-1].isoformat(), test_bars=len(active), symbols=symbols, n_symbols=len(symbols),
        pooled=bool(getattr(cfg.features, "pooled", False)),
        synthetic_bars=sum(r.synthetic_bars for r in reps.values()),
        signals_held=sum(r.signals_held for r in reps.values()),
        fills_moved=sum(r.fills_moved for r in reps.values()), bars_per_symbol=reps,
        rebalancing=("equal weight 1/n among the symbols long, cash shared, rebalanced at the next open only on "
                     "bars where the set of long symbols changes (sells before buys); weights drift in between"),
        baselines=("buy_and_hold: equal-weight buy & hold of every symbol that has started, rebalanced at the "
                   "next open when a symbol enters; buy_and_hold[<symbol>]: that symbol alone"),
        multiple_testing=(f"per model x strategy over its symbols: Holm (family-wise) and Benjamini-Hochberg "
                          f"(false discovery rate) adjusted two-sided p-values, a symbol counts as beaten when the "
                          f"adjusted p < {level:g} and the point estimate favours the model; an undefined test "
                          "counts as p = 1"),
    )
    metrics = RunMetrics(
        run=run, summary=rows, models=_pooled_models(cfg, predictions), portfolios=universe,
        deflated_sharpe=deflated_sharpe(uret.iloc[1:], model_labels, {lab: stats[lab].sharpe for lab in model_labels}),
        across_seeds=_seed_means(universe, specs),
        universe=UniverseBlock(symbols=sym_metrics, deflated_sharpe_symbols=deflated_sharpe(
            per_sym_rets, list(per_sym_rets.columns), per_sym_sharpes)))

    equity = usim.equity[uni_labels].copy()
    per_sym = pd.DataFrame({f"{lab}[{s}]": e.equity[lab] for s, e in per.items() for lab in e.equity.columns})
    equity = pd.concat([equity, per_sym.reindex(equity.index)], axis=1)
    equity.index.name = "timestamp"
    ut = _universe_trades(usim.portfolio.trades.records_readable)  # type: ignore[attr-defined]
    trades = [e.trades.assign(portfolio=e.trades["portfolio"].astype(str) + f"[{s}]", symbol=s) for s, e in per.items()]
    all_trades = pd.concat([ut] + trades, ignore_index=True)
    return Evaluation(metrics, equity, all_trades, {s: e.signals for s, e in per.items()},
                      {s: e.simulation for s, e in per.items()}, usim)


def deflated_sharpe(returns: pd.DataFrame, trials: list[str], sharpes: dict[str, float | None]) -> DeflatedSharpe:
    """DSR of the best (highest annualised Sharpe) of ``trials``, columns of per-bar ``returns``.

    ``trials`` must be every model x strategy x seed tried (in a sweep: of every grid point), baselines
    excluded; the count is ``n_trials`` in the result."""
    if not trials:
        return DeflatedSharpe(note="no model strategies")
    best = max(trials, key=lambda lab: sharpes.get(lab) if sharpes.get(lab) is not None else -np.inf)
    d = sig.deflated_sharpe_from_returns(returns[trials], best)
    return _test_block(DeflatedSharpe, {**d, "n_trials": int(d["n_trials"]), "trials": list(trials),
                                         "selected": str(best)})


def _sort_key(sharpe: float | None) -> float:
    return -(sharpe if sharpe is not None else -np.inf)


def _seed_block(models: dict[str, ModelMetrics], b: PortfolioResult) -> SeedModelMetrics | None:
    """The forecast metrics of ``b``'s model and seed (its first seed's for an ensemble); None for baselines."""
    if b.model not in models:
        return None
    seeds = models[b.model].per_seed
    return seeds.get(str(b.seed)) or next(iter(seeds.values()))


def _row(b: PortfolioResult, mb: SeedModelMetrics | None = None, **several: Any) -> SummaryRow:
    """``b``'s summary row; ``mb``: its model's forecast metrics (one symbol); ``several``: the fields only a run of
    several symbols has."""
    p, c, boot = b.portfolio, b.classification or ClassificationMetrics(), b.sharpe_vs_buy_and_hold
    return SummaryRow(
        portfolio=b.label, model=b.model, strategy=b.strategy, seed=b.seed, total_return=p.total_return, cagr=p.cagr,
        sharpe=p.sharpe, sortino=p.sortino, max_drawdown=p.max_drawdown, trades=p.trades, exposure=p.exposure,
        precision=c.precision, recall=c.recall, f1=c.f1, mse_ratio=mb.regression.mse_ratio if mb else None,
        sharpe_diff_p_value_two_sided=boot.p_value_two_sided if boot else None, verdict=b.verdict,
        forecast_verdict=mb.verdict_vs_persistence if mb else None, flags=list(b.flags), **several)


def _seed_means(portfolios: dict[str, PortfolioResult], specs: list[PortfolioSpec]) -> dict[str, AcrossSeeds]:
    """With several seeds, mean/std across seeds for each model x strategy."""
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


def beat_count(test: str, null: str, symbols: list[str], statistics: list[float | None],
               p_values: list[float | None], point_better: list[bool | None], level: float = 0.05,
               verdicts: list[Verdict | None] | None = None) -> BeatCount:
    """Count the symbols where a model beats a baseline: by point estimate, and where the two-sided
    ``p_values`` (raw, Holm-, BH-adjusted over ``symbols``) are below ``level`` with the point estimate in
    the model's favour."""
    adj = sig.adjust_pvalues(p_values)
    verdicts = verdicts if verdicts is not None else [None] * len(symbols)
    tests = [SymbolTest(s, finite(st), finite(p), adj["holm"][i], adj["bh"][i], pb, v)
             for i, (s, st, p, pb, v) in enumerate(zip(symbols, statistics, p_values, point_better, verdicts))]

    def n(get: Any) -> int:
        return sum(bool(t.point_better) and get(t) is not None and get(t) < level for t in tests)

    return BeatCount(test=test, null=null, level=level, n_symbols=len(symbols),
                     point=sum(bool(t.point_better) for t in tests), raw=n(lambda t: t.p_value_two_sided),
                     holm=n(lambda t: t.p_holm), bh=n(lambda t: t.p_bh), per_symbol=tests)


def _beat_counts(cfg: Config, spec: PortfolioResult, symbols: list[str], sym_metrics: dict[str, SymbolMetrics],
                 level: float) -> tuple[BeatCount | None, BeatCount | None]:
    """On how many symbols ``spec``'s model x strategy beats each symbol's buy & hold (bootstrap Sharpe
    difference) and persistence (DM); None for baselines, and against persistence for persistence itself."""
    if spec.model is None:
        return None, None
    lab = spec.label
    per = [sym_metrics[s].portfolios[lab] for s in symbols]
    sds = [x.sharpe_vs_buy_and_hold or SharpeDiffBootstrap() for x in per]
    beats_bh = beat_count(BOOTSTRAP_TEST + " vs the symbol's buy & hold, two-sided", "equal Sharpe ratios", symbols,
                          [d.sharpe_diff for d in sds], [d.p_value_two_sided for d in sds],
                          [None if d.sharpe_diff is None else d.sharpe_diff > 0 for d in sds], level,
                          [x.verdict for x in per])
    if spec.model not in cfg.models or cfg.models[spec.model].type == "persistence":
        return beats_bh, None
    blocks = [sym_metrics[s].models[spec.model].per_seed[str(spec.seed)] for s in symbols]
    dms = [b.significance.diebold_mariano for b in blocks]
    beats_pers = beat_count(DM_TEST + " vs persistence, two-sided", "equal expected squared error", symbols,
                            [d.statistic for d in dms], [d.p_value_two_sided for d in dms],
                            [None if b.regression.mse_ratio is None else b.regression.mse_ratio < 1 for b in blocks],
                            level, [b.verdict_vs_persistence for b in blocks])
    return beats_bh, beats_pers


def _universe_signals(per_symbol: dict[str, pd.DataFrame], labels: list[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """label -> (decision bars union x symbols) bool frame, False where a symbol has no forecast; and the active mask."""
    index = pd.DatetimeIndex(sorted(set().union(*(s.index for s in per_symbol.values()))), name="timestamp")
    active = pd.DataFrame({sym: index.isin(s.index) for sym, s in per_symbol.items()}, index=index)
    out = {lab: pd.DataFrame({sym: s[lab].reindex(index).fillna(False).astype(bool) for sym, s in per_symbol.items()},
                             index=index) for lab in labels}
    return out, active


def _pooled_models(cfg: Config, predictions: pd.DataFrame) -> dict[str, ModelMetrics]:
    """:func:`model_metrics` over every symbol's test bars stacked; price errors dropped (they would mix the
    symbols' price scales)."""
    out = model_metrics(cfg, predictions)
    for mm in out.values():
        for block in [*mm.per_seed.values(), mm.mean, mm.std]:
            if block is not None:
                for k in PRICE_FIELDS:
                    setattr(block.regression, k, None)
    return out


def _pooled_signal_classification(predictions: pd.DataFrame, signals: pd.DataFrame, active: pd.DataFrame,
                                  spec: PortfolioResult) -> dict[str, Any]:
    """Direction metrics of a label's long signals over every symbol's decision bars (predicted up = long)."""
    yt_all, sg_all = [], []
    seed_preds = predictions if spec.seed is None else predictions[predictions["seed"] == spec.seed]
    for sym in signals.columns:
        p = seed_preds[seed_preds["symbol"] == sym].drop_duplicates("timestamp").set_index("timestamp")["y_true"]
        idx = active.index[active[sym]]
        yt_all.append(p.reindex(idx).to_numpy())
        sg_all.append(signals.loc[idx, sym].to_numpy())
    return classification(np.concatenate(yt_all), np.concatenate(sg_all))


def _universe_trades(recs: pd.DataFrame) -> pd.DataFrame:
    cols = {"Size": "size", "Entry Timestamp": "entry_time", "Avg Entry Price": "entry_price", "Entry Fees": "entry_fees",
            "Exit Timestamp": "exit_time", "Avg Exit Price": "exit_price", "Exit Fees": "exit_fees", "PnL": "pnl",
            "Return": "return", "Status": "status"}
    out = recs.rename(columns=cols)
    col = out.pop("Column") if "Column" in out.columns else pd.Series([("", "")] * len(out))
    out.insert(0, "portfolio", [c[0] if isinstance(c, tuple) else str(c) for c in col])
    out.insert(1, "symbol", [c[1] if isinstance(c, tuple) else "" for c in col])
    return out[["portfolio", "symbol"] + [c for c in cols.values() if c in out.columns]]


def format_summary(metrics: RunMetrics) -> str:
    """The terminal table at the end of a run: each portfolio's total return [%], Sharpe (annualised),
    max drawdown [%] and verdict against buy & hold, best Sharpe first, flags shown; with several symbols
    also on how many symbols each beats its buy & hold and persistence (Holm); then the test span and
    the deflated Sharpe line."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:+.1f}"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def beat(bc: BeatCount | None) -> str:
        return "—" if bc is None else f"{bc.holm}/{bc.n_symbols}"

    several = metrics.universe is not None
    head: tuple[str, ...] = ("portfolio", "return [%]", "Sharpe", "max DD [%]",
                             "verdict vs EW buy & hold" if several else "verdict vs buy & hold")
    head += ("beats B&H (Holm)", "beats persistence (Holm)", "flags") if several else ("flags",)
    rows = []
    for r in metrics.summary:
        cells: tuple[str, ...] = (r.portfolio, pct(r.total_return), num(r.sharpe),
                                  "n/a" if r.max_drawdown is None else f"{100 * abs(r.max_drawdown):.1f}", r.verdict.short())
        if several:
            cells += (beat(r.beats_buy_and_hold), beat(r.beats_persistence))
        rows.append(cells + ("; ".join(r.flags),))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    right = {1, 2, 3, 5, 6} if several else {1, 2, 3}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    run = metrics.run
    out = [f"{run_subject(run)}, {run.timeframe} bars, {run.periods_per_year:g} bars/yr"] if several else []
    out += [line(head), line(tuple("-" * w for w in widths))] + [line(r) for r in rows]
    level = run.significance_level
    out.append(f"out of sample, {run.first_test_bar[:10]} .. {run.last_test_bar[:10]}; "
               + (f"'beats' only where the two-sided test rejects at {level:g} (symbols: Holm-adjusted)" if several
                  else f"'beats' only where the two-sided bootstrap p < {level:g}"))
    d = metrics.deflated_sharpe
    if d.n_trials:
        out.append(f"deflated Sharpe of the best ({d.selected}) over {d.n_trials} trials: "
                   + ("n/a" + (f" ({d.note})" if d.note else "") if d.dsr is None
                      else f"{d.dsr:.3f} (p = {d.p_value:.3f})"))
    return "\n".join(out)


def run_subject(run: RunInfo) -> str:
    """What a run is about, in words: the symbol, or ``universe of 3 symbols (A, B, C)``."""
    if run.n_symbols <= 1:
        return run.symbol
    return f"universe of {run.n_symbols} symbols ({', '.join(run.symbols)})"
