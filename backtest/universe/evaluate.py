"""From a universe's out-of-sample predictions to per-symbol and universe portfolios, metrics and significance.

:func:`evaluate_universe` is the universe counterpart of :func:`backtest.evaluate.evaluate`:

* **per symbol**: exactly what a single-symbol run computes
  (:func:`backtest.evaluate.evaluate`: signals with no decision on a synthetic
  bar, one simulation, portfolio metrics, verdicts as
  :class:`backtest.schema.Verdict`, flags, a flat Sharpe of 0);
* **universe**: every label as one equal-weight, cash-shared portfolio over the
  symbols (:func:`backtest.universe.portfolio.simulate_universe`, rebalancing
  rule stated there), judged against the equal-weight universe buy & hold with
  the same verdict function (two-sided bootstrap at ``backtest.significance_level``)
  and flagged for few trades / low exposure;
* **pooled**: direction and log-return error metrics of each model over the
  test bars of every symbol together;
* **significance over symbols**: for each model x strategy, on how many symbols
  it beats persistence (DM) and buy & hold (bootstrap Sharpe difference): the
  two-sided p-values of its symbols adjusted for multiple testing by **Holm**
  (family-wise error) and by **Benjamini-Hochberg** (false discovery rate); a
  symbol counts when the adjusted p < ``backtest.significance_level`` and the
  point estimate favours the model; a test that is undefined on a symbol counts as p = 1;
* **deflated Sharpe** over every symbol x model x strategy tried, and separately
  over the universe portfolios of every model x strategy.

Units as in :mod:`backtest.metrics`: returns and drawdowns are fractions,
Sharpe ratios annualised with the timeframe's bars per year (365 for ``1d``,
2,190 for ``4h``, 8,760 for ``1h``), stated in ``UniverseMetrics.run``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest import significance as sig
from backtest.atomic import write_text
from backtest.config import Config
from backtest.data.frame import periods_per_year, timeframe_seconds
from backtest.errors import DataError
from backtest.evaluate import (BOOTSTRAP_TEST, DM_TEST, _boot, deflated_sharpe, evaluate, flags_of, model_metrics,
                               sharpe_verdict)
from backtest.metrics import classification, portfolio_stats
from backtest.schema import (SCHEMA_VERSION, ClassificationMetrics, DeflatedSharpe, ModelMetrics, PortfolioMetrics,
                             PortfolioResult, RunInfo, RunMetrics, SchemaError, SharpeDiffBootstrap, Verdict, _build,
                             _clean, build, finite)
from backtest.universe.portfolio import UNIVERSE_BH, UniverseSimulation, simulate_universe

#: Default significance level of :func:`beat_count` (runs use ``backtest.significance_level``).
ALPHA = 0.05
#: Multiple-testing corrections applied over the symbols (statsmodels ``multipletests`` method names).
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}
#: Regression fields left out of the pooled metrics (price errors would mix the symbols' price scales).
PRICE_FIELDS = ("price_mae", "price_rmse", "price_mae_ratio", "price_rmse_ratio")
#: Who the universe portfolios are judged against.
EW_BH = "equal-weight buy & hold"


# --------------------------------------------------------------------------- typed results


@dataclass
class SymbolTest:
    """One symbol's two-sided test of a model x strategy against a baseline (issue 8's rule, per symbol).

    ``statistic``: DM statistic (HLN-corrected; negative favours the model) or the annualised Sharpe
    difference (strategy minus buy & hold). ``p_value_two_sided``: uncorrected; ``p_holm`` / ``p_bh``:
    two-sided p adjusted over the symbols. ``point_better``: the point estimate favours the model
    (lower MSE, higher Sharpe). ``verdict``: that symbol's own verdict, from the same function as a
    single-symbol run (:func:`backtest.evaluate.sharpe_verdict` / :func:`~backtest.evaluate.forecast_verdict`).
    """

    symbol: str
    statistic: float | None
    p_value_two_sided: float | None
    p_holm: float | None
    p_bh: float | None
    point_better: bool | None
    verdict: Verdict | None = None


@dataclass
class BeatCount:
    """On how many symbols a model x strategy beats a baseline.

    ``point``: symbols where the point estimate is better; ``raw``: two-sided p < ``level`` uncorrected
    and the point estimate better; ``holm`` / ``bh``: the same with the Holm / Benjamini-Hochberg
    adjusted two-sided p (family: this row's symbols).
    """

    test: str
    null: str
    level: float
    n_symbols: int
    point: int
    raw: int
    holm: int
    bh: int
    sided: str = "two-sided"
    per_symbol: list[SymbolTest] = field(default_factory=list)


@dataclass
class UniverseRunInfo(RunInfo):
    """:class:`backtest.schema.RunInfo` of a universe run (``symbol`` = "universe of N symbols"), plus the
    symbols (listing order), the bar length in seconds, whether models were pooled, and the rebalancing,
    baseline and multiple-testing rules in words. Test span = the union of the symbols' decision bars."""

    symbols: list[str] = field(default_factory=list)
    n_symbols: int = 0
    bar_seconds: int = 0
    pooled: bool = False
    rebalancing: str = ""
    baselines: str = ""
    multiple_testing: str = ""


@dataclass
class UniverseRow:
    """One universe portfolio (a model x strategy, or a baseline) against the equal-weight universe buy & hold.

    Returns and drawdowns are fractions; Sharpe/Sortino annualised with ``run.periods_per_year``;
    ``exposure`` is the share of bars with at least one symbol held; ``precision``/``recall``/``f1``
    are of the long signals pooled over symbols. ``verdict``: against the equal-weight buy & hold on
    Sharpe, two-sided bootstrap at ``backtest.significance_level`` (``benchmark`` for that row);
    ``flags``: few trades / low exposure (``backtest.min_trades`` / ``min_exposure``).
    """

    portfolio: str
    model: str | None
    strategy: str
    strategy_type: str
    seed: int | None
    total_return: float | None
    cagr: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float | None
    trades: float | None
    exposure: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    bh_total_return: float | None
    bh_sharpe: float | None
    bh_max_drawdown: float | None
    sharpe_diff: float | None
    sharpe_diff_p_value_two_sided: float | None
    verdict: Verdict
    beats_persistence: BeatCount | None = None
    beats_buy_and_hold: BeatCount | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def beats_universe_bh(self) -> bool:
        return self.verdict.outcome == "beats"


#: Former name of :class:`UniverseRow`.
SummaryRow = UniverseRow


@dataclass
class UniverseDeflatedSharpe:
    """Deflated Sharpe over every symbol x model x strategy x seed tried (``per_symbol``) and over the universe
    portfolios of every model x strategy x seed (``universe``)."""

    per_symbol: DeflatedSharpe
    universe: DeflatedSharpe


@dataclass
class UniverseMetrics:
    """``metrics.json`` of a universe run; ``kind = "universe"`` tells it from a single-symbol
    :class:`backtest.schema.RunMetrics` (which refuses to read it), same ``schema_version``.

    ``run``: what was run. ``summary``: one :class:`UniverseRow` per universe portfolio, best Sharpe
    first (the ``buy_and_hold`` row is the equal-weight benchmark). ``universe``: full statistics,
    verdict and flags of each universe portfolio. ``symbols``: per symbol, exactly the metrics a
    single-symbol run on its test bars has (:class:`RunMetrics`, its own verdicts and flags).
    ``pooled``: per model and seed, forecast metrics over every symbol's test bars (price errors left
    out). ``deflated_sharpe``: see :class:`UniverseDeflatedSharpe`.
    """

    run: UniverseRunInfo
    summary: list[UniverseRow]
    universe: dict[str, PortfolioResult]
    symbols: dict[str, RunMetrics]
    pooled: dict[str, ModelMetrics]
    deflated_sharpe: UniverseDeflatedSharpe
    kind: str = "universe"
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN/inf as None)."""
        return _clean(dataclasses.asdict(self))

    def write(self, path: str | Path) -> Path:
        """Write ``metrics.json`` atomically."""
        return write_text(Path(path), json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_json(cls, d: Any) -> UniverseMetrics:
        """Read a parsed ``metrics.json``; :class:`SchemaError` (one line) when it is not a universe run's."""
        if not isinstance(d, dict):
            raise SchemaError("metrics.json: not a JSON object")
        if d.get("kind") != "universe":
            raise SchemaError("metrics.json: not a universe run's (no kind = 'universe')")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(f"metrics.json: schema_version {d.get('schema_version')!r}, this version reads "
                              f"{SCHEMA_VERSION} (re-run the run to rewrite it)")
        return _build(cls, d, "metrics")  # type: ignore[no-any-return]

    @classmethod
    def read(cls, path: str | Path) -> UniverseMetrics:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"metrics.json: not JSON ({str(exc).splitlines()[0]})") from None

    def row(self, portfolio: str) -> UniverseRow | None:
        return next((r for r in self.summary if r.portfolio == portfolio), None)


@dataclass
class UniverseEvaluation:
    """Everything a universe report needs: ``metrics`` (:class:`UniverseMetrics`), ``equity`` (value at each
    bar's close, quote currency: universe portfolios by label, per-symbol portfolios as ``label[symbol]``,
    NaN outside a symbol's span) and ``trades``."""

    metrics: UniverseMetrics
    equity: pd.DataFrame
    trades: pd.DataFrame
    simulation: UniverseSimulation

    @property
    def typed(self) -> UniverseMetrics:
        return self.metrics


# --------------------------------------------------------------------------- multiple testing


def adjust_pvalues(p_values: list[float | None]) -> dict[str, list[float]]:
    """Holm and Benjamini-Hochberg adjusted p-values (statsmodels ``multipletests``); undefined p counts as 1."""
    from statsmodels.stats.multitest import multipletests

    p = np.array([1.0 if finite(v) is None else float(v) for v in p_values], dtype=float)
    if p.size == 0:
        return {k: [] for k in CORRECTIONS}
    return {k: [float(x) for x in multipletests(p, alpha=ALPHA, method=m)[1]] for k, m in CORRECTIONS.items()}


def beat_count(test: str, null: str, symbols: list[str], statistics: list[float | None],
               p_values: list[float | None], point_better: list[bool | None], level: float = ALPHA,
               verdicts: list[Verdict | None] | None = None) -> BeatCount:
    """Count the symbols where a model beats a baseline: by point estimate, and where the two-sided
    ``p_values`` (raw, Holm-, BH-adjusted) are below ``level`` with the point estimate in the model's favour."""
    adj = adjust_pvalues(p_values)
    verdicts = verdicts if verdicts is not None else [None] * len(symbols)
    tests = [SymbolTest(s, finite(st), finite(p), adj["holm"][i], adj["bh"][i], pb, v)
             for i, (s, st, p, pb, v) in enumerate(zip(symbols, statistics, p_values, point_better, verdicts))]

    def n(get: Any) -> int:
        return sum(bool(t.point_better) and get(t) is not None and get(t) < level for t in tests)

    return BeatCount(
        test=test, null=null, level=level, n_symbols=len(symbols),
        point=sum(bool(t.point_better) for t in tests),
        raw=n(lambda t: t.p_value_two_sided), holm=n(lambda t: t.p_holm), bh=n(lambda t: t.p_bh),
        per_symbol=tests,
    )


# --------------------------------------------------------------------------- pieces


def _universe_signals(per_symbol: dict[str, pd.DataFrame], labels: list[str]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """label -> (decision bars union x symbols) bool frame, False where a symbol has no forecast; and the active mask."""
    index = pd.DatetimeIndex(sorted(set().union(*(s.index for s in per_symbol.values()))), name="timestamp")
    active = pd.DataFrame({sym: index.isin(s.index) for sym, s in per_symbol.items()}, index=index)
    out = {lab: pd.DataFrame({sym: s[lab].reindex(index).fillna(False).astype(bool) for sym, s in per_symbol.items()},
                             index=index) for lab in labels}
    return out, active


def _check_executable(symbol: str, decisions: pd.DatetimeIndex, bars: pd.DataFrame) -> None:
    """Every decision bar of ``symbol`` must be one of its bars, and so must the bar after its last one
    (where the last signal is executed); else a one-line :class:`DataError` naming the symbol."""
    missing = decisions.difference(bars.index)
    if len(missing):
        raise DataError(f"{symbol}: forecast at {missing[0].isoformat()} has no bar in the loaded data")
    if bars.index.get_loc(decisions.max()) + 1 >= len(bars):
        raise DataError(f"{symbol}: the bar after the last decision bar {decisions.max().isoformat()} is missing: "
                        "cannot execute the last signal")


def _pooled_models(cfg: Config, predictions: pd.DataFrame) -> dict[str, ModelMetrics]:
    """:func:`backtest.evaluate.model_metrics` over every symbol's test bars stacked; price errors dropped
    (they would mix the symbols' price scales)."""
    out = model_metrics(cfg, predictions)
    for mm in out.values():
        for block in [*mm.per_seed.values(), mm.mean, mm.std]:
            if block is not None:
                for k in PRICE_FIELDS:
                    setattr(block.regression, k, None)
    return out


# --------------------------------------------------------------------------- the evaluation


def evaluate_universe(cfg: Config, predictions: pd.DataFrame, bars: dict[str, pd.DataFrame], timeframe: str,
                      synthetic: dict[str, pd.Series] | None = None) -> UniverseEvaluation:
    """Per-symbol and universe portfolios of every model x strategy, the baselines, pooled metrics, significance.

    ``predictions``: the universe ``predictions.csv`` table (``timestamp, symbol, model, seed, fold, y_true,
    y_pred, close, pred_close``; ``timestamp`` = decision bar t, ``y_true`` = r[t+1]). ``bars``: validated OHLCV
    per symbol, in listing order. ``synthetic``: per symbol, its ``ValidationReport.synthetic`` mask; no
    signal is decided on a synthetic bar of that symbol. Every signal decided at the close of bar t is
    traded at the open of t+1. Each symbol is evaluated exactly as a single-symbol run
    (:func:`backtest.evaluate.evaluate`: same verdicts, flags, Sharpe 0 when flat).
    """
    if "symbol" not in predictions.columns:
        raise DataError("universe predictions: no 'symbol' column")
    if not isinstance(predictions["timestamp"].dtype, pd.DatetimeTZDtype):  # e.g. read back from predictions.csv
        predictions = predictions.assign(timestamp=pd.to_datetime(predictions["timestamp"], utc=True))
    unknown = sorted(set(predictions["symbol"]) - set(bars))
    if unknown:
        raise DataError(f"{unknown[0]}: in the predictions but no bars were loaded for it")
    symbols = [s for s in bars if (predictions["symbol"] == s).any()]
    if not symbols:
        raise DataError("universe predictions: no rows")
    for s in symbols:  # fail before any work, naming the symbol
        _check_executable(s, pd.DatetimeIndex(predictions.loc[predictions["symbol"] == s, "timestamp"]), bars[s])
    synthetic = synthetic or {}
    bt = cfg.backtest
    level = bt.significance_level
    ppy = periods_per_year(timeframe)
    sym_metrics: dict[str, RunMetrics] = {}
    sym_signals: dict[str, pd.DataFrame] = {}
    sym_returns: dict[str, pd.DataFrame] = {}
    labels: list[str] = []
    equity_cols: dict[str, pd.Series] = {}
    trades = []
    for s in symbols:
        preds = predictions[predictions["symbol"] == s].drop(columns="symbol")
        scfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"symbol": s})})
        ev = evaluate(scfg, preds, bars[s], timeframe, synthetic=synthetic.get(s))
        if labels and list(ev.metrics.portfolios) != labels:
            raise ValueError(f"{s}: portfolio labels differ from the other symbols'")
        labels = list(ev.metrics.portfolios)
        sym_metrics[s], sym_signals[s] = ev.metrics, ev.signals
        sym_returns[s] = ev.simulation.portfolio.returns()  # type: ignore[attr-defined]
        for lab in ev.equity.columns:
            equity_cols[f"{lab}[{s}]"] = ev.equity[lab]
        t = ev.trades
        trades.append(t.assign(portfolio=t["portfolio"].astype(str) + f"[{s}]", symbol=s))
    ports0 = sym_metrics[symbols[0]].portfolios

    uni_signals, active = _universe_signals(sym_signals, labels)
    usim = simulate_universe(uni_signals, {s: bars[s] for s in symbols}, bt, timeframe, active=active,
                             synthetic=synthetic)
    pf = usim.portfolio
    uret = pf.returns()  # type: ignore[attr-defined]
    uni_labels = [lab for lab in labels if lab != UNIVERSE_BH] + [UNIVERSE_BH]
    stats = {lab: build(PortfolioMetrics, portfolio_stats(pf, lab, ppy, usim.positions[lab].any(axis=1).iloc[1:]))
             for lab in uni_labels}
    bh = stats[UNIVERSE_BH]
    universe: dict[str, PortfolioResult] = {}
    rows: list[UniverseRow] = []
    for lab in uni_labels:
        spec, p = ports0[lab], stats[lab]
        boot = None
        if lab == UNIVERSE_BH:
            verdict = Verdict(outcome="benchmark", against=EW_BH, level=level, estimate=p.sharpe, benchmark_value=p.sharpe)
        else:
            boot = _boot(sig.bootstrap_sharpe_diff(uret[lab].to_numpy()[1:], uret[UNIVERSE_BH].to_numpy()[1:],
                                                   periods_per_year=ppy, n_boot=bt.bootstrap_samples, seed=cfg.run.seeds[0]))
            verdict = sharpe_verdict(boot, p.sharpe, bh.sharpe, level)
            verdict.against = EW_BH
        cls = (build(ClassificationMetrics, _pooled_signal_classification(predictions, uni_signals[lab], active, spec))
               if spec.model is not None else None)
        flags = [] if spec.strategy_type == "buy_and_hold" else flags_of(p, bt.min_trades, bt.min_exposure)
        universe[lab] = PortfolioResult(label=lab, model=spec.model, strategy=spec.strategy,
                                        strategy_type=spec.strategy_type, seed=spec.seed, portfolio=p, verdict=verdict,
                                        classification=cls, sharpe_vs_buy_and_hold=boot, flags=flags)
        beats_bh = beats_pers = None
        if spec.model is not None:
            per = [sym_metrics[s].portfolios[lab] for s in symbols]
            sds = [x.sharpe_vs_buy_and_hold or SharpeDiffBootstrap() for x in per]
            beats_bh = beat_count(BOOTSTRAP_TEST + " vs the symbol's buy & hold, two-sided",
                                  "equal Sharpe ratios", symbols, [d.sharpe_diff for d in sds],
                                  [d.p_value_two_sided for d in sds],
                                  [None if d.sharpe_diff is None else d.sharpe_diff > 0 for d in sds], level,
                                  [x.verdict for x in per])
            if cfg.models[spec.model].type != "persistence":
                blocks = [sym_metrics[s].models[spec.model].per_seed[str(spec.seed)] for s in symbols]
                dms = [b.significance.diebold_mariano for b in blocks]
                beats_pers = beat_count(DM_TEST + " vs persistence, two-sided", "equal expected squared error",
                                        symbols, [d.statistic for d in dms], [d.p_value_two_sided for d in dms],
                                        [None if b.regression.mse_ratio is None else b.regression.mse_ratio < 1
                                         for b in blocks], level, [b.verdict_vs_persistence for b in blocks])
        c = cls or ClassificationMetrics()
        rows.append(UniverseRow(
            portfolio=lab, model=spec.model, strategy=spec.strategy, strategy_type=spec.strategy_type, seed=spec.seed,
            total_return=p.total_return, cagr=p.cagr, sharpe=p.sharpe, sortino=p.sortino, max_drawdown=p.max_drawdown,
            trades=p.trades, exposure=p.exposure, precision=c.precision, recall=c.recall, f1=c.f1,
            bh_total_return=bh.total_return, bh_sharpe=bh.sharpe, bh_max_drawdown=bh.max_drawdown,
            sharpe_diff=boot.sharpe_diff if boot else None,
            sharpe_diff_p_value_two_sided=boot.p_value_two_sided if boot else None,
            verdict=verdict, beats_persistence=beats_pers, beats_buy_and_hold=beats_bh, flags=flags))
    rows.sort(key=lambda r: -(r.sharpe if r.sharpe is not None else -np.inf))

    model_labels = [lab for lab in labels if ports0[lab].model is not None]
    per_sym_rets = pd.DataFrame({f"{s}|{lab}": sym_returns[s][lab].iloc[1:] for s in symbols for lab in model_labels})
    per_sym_sharpes = {f"{s}|{lab}": sym_metrics[s].portfolios[lab].portfolio.sharpe for s in symbols for lab in model_labels}
    dsr = UniverseDeflatedSharpe(
        per_symbol=deflated_sharpe(per_sym_rets, list(per_sym_rets.columns), per_sym_sharpes),
        universe=deflated_sharpe(uret.iloc[1:], model_labels, {lab: stats[lab].sharpe for lab in model_labels}))

    quotes = {s.split("/")[-1].split(":")[0] for s in symbols}
    run = UniverseRunInfo(
        name=cfg.run.name, symbol=f"universe of {len(symbols)} symbols",
        quote=quotes.pop() if len(quotes) == 1 else "quote", timeframe=timeframe, periods_per_year=ppy,
        first_test_bar=usim.equity.index[0].isoformat(), last_test_bar=active.index[-1].isoformat(),
        test_bars=len(active), fees=bt.fees, slippage=bt.slippage, init_cash=bt.init_cash, seeds=list(cfg.run.seeds),
        significance_level=level, min_trades=bt.min_trades, min_exposure=bt.min_exposure,
        symbols=symbols, n_symbols=len(symbols), bar_seconds=timeframe_seconds(timeframe),
        pooled=bool(getattr(cfg.features, "pooled", False)),
        rebalancing=("equal weight 1/n among the symbols long, cash shared, rebalanced at the next open only on "
                     "bars where the set of long symbols changes (sells before buys); weights drift in between"),
        baselines=("buy_and_hold: equal-weight buy & hold of every symbol that has started, rebalanced at the "
                   "next open when a symbol enters; buy_and_hold[<symbol>]: that symbol alone"),
        multiple_testing=(f"per model x strategy over its symbols: Holm (family-wise) and Benjamini-Hochberg "
                          f"(false discovery rate) adjusted two-sided p-values, a symbol counts as beaten when the "
                          f"adjusted p < {level:g} and the point estimate favours the model; an undefined test "
                          "counts as p = 1"),
    )
    metrics = UniverseMetrics(run=run, summary=rows, universe=universe, symbols=sym_metrics,
                              pooled=_pooled_models(cfg, predictions), deflated_sharpe=dsr)

    equity = usim.equity[uni_labels].copy()
    per_sym = pd.DataFrame(equity_cols).reindex(equity.index)
    equity = pd.concat([equity, per_sym], axis=1)
    equity.index.name = "timestamp"
    ut = _universe_trades(usim.portfolio.trades.records_readable)  # type: ignore[attr-defined]
    all_trades = pd.concat([ut] + trades, ignore_index=True) if trades else ut
    return UniverseEvaluation(metrics, equity, all_trades, usim)


def format_universe_summary(m: UniverseMetrics) -> str:
    """The terminal table at the end of a universe run: each universe portfolio's return [%], Sharpe
    (annualised), max drawdown [%], verdict against the equal-weight buy & hold, symbols beaten (Holm)
    against each symbol's buy & hold and persistence, and flags; then the test span line."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:+.1f}"

    def beat(bc: BeatCount | None) -> str:
        return "—" if bc is None else f"{bc.holm}/{bc.n_symbols}"

    head = ("portfolio", "return [%]", "Sharpe", "max DD [%]", "verdict vs EW buy & hold", "beats B&H (Holm)",
            "beats persistence (Holm)", "flags")
    rows = [(r.portfolio, pct(r.total_return), "n/a" if r.sharpe is None else f"{r.sharpe:.2f}",
             "n/a" if r.max_drawdown is None else f"{100 * abs(r.max_drawdown):.1f}", r.verdict.short(),
             beat(r.beats_buy_and_hold), beat(r.beats_persistence), "; ".join(r.flags)) for r in m.summary]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in (1, 2, 3, 5, 6) else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [f"universe of {m.run.n_symbols} symbols ({', '.join(m.run.symbols)}), {m.run.timeframe} bars, "
           f"{m.run.periods_per_year:g} bars/yr", line(head), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    out.append(f"out of sample, {m.run.first_test_bar[:10]} .. {m.run.last_test_bar[:10]}; 'beats' only where the "
               f"two-sided test rejects at {m.run.significance_level:g} (symbols: Holm-adjusted)")
    d = m.deflated_sharpe.per_symbol
    if d.n_trials:
        out.append(f"deflated Sharpe of the best ({d.selected}) over {d.n_trials} symbol x model x strategy trials: "
                   + ("n/a" if d.dsr is None else f"{d.dsr:.3f} (p = {d.p_value:.3f})"))
    return "\n".join(out)


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


__all__ = ["ALPHA", "BeatCount", "SummaryRow", "SymbolTest", "UniverseDeflatedSharpe", "UniverseEvaluation",
           "UniverseMetrics", "UniverseRow", "UniverseRunInfo", "adjust_pvalues", "beat_count", "evaluate_universe",
           "format_universe_summary"]
