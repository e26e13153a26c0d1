"""From a universe's out-of-sample predictions to per-symbol and universe portfolios, metrics and significance.

:func:`evaluate_universe` is the universe counterpart of :func:`backtest.evaluate.evaluate`:

* **per symbol**: signals through :func:`strategies.build.build_signals`, one
  :func:`backtest.simulate.simulate` call (every model x strategy and the
  baselines), portfolio metrics (:func:`backtest.metrics.portfolio_stats`),
  direction and error metrics of each model, Diebold-Mariano against
  persistence, and the bootstrap Sharpe difference against that symbol's buy & hold;
* **universe**: every label as one equal-weight, cash-shared portfolio over the
  symbols (:func:`backtest.universe.portfolio.simulate_universe`, rebalancing
  rule stated there), against the equal-weight universe buy & hold;
* **pooled**: direction and log-return error metrics of each model over the
  test bars of every symbol together;
* **significance over symbols**: for each model x strategy, on how many symbols
  it beats persistence (DM, one-sided) and buy & hold (bootstrap Sharpe
  difference, one-sided), with the p-values of the symbols corrected for
  multiple testing by **Holm** (family-wise error) and by
  **Benjamini-Hochberg** (false discovery rate), at ``alpha = 0.05``; the family
  is the model x strategy's symbols (one test per symbol); a test that is
  undefined on a symbol (e.g. a constant return series) counts as p = 1;
* **deflated Sharpe** over every symbol x model x strategy tried, and separately
  over the universe portfolios of every model x strategy.

Units as in :mod:`backtest.metrics`: returns and drawdowns are fractions,
Sharpe ratios annualised with the timeframe's bars per year (365 for ``1d``,
2,190 for ``4h``, 8,760 for ``1h``), stated in ``metrics["run"]``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from backtest import significance as sig
from backtest.config import Config
from backtest.data.frame import periods_per_year, timeframe_seconds
from backtest.errors import DataError
from backtest.metrics import _f, classification, model_significance, portfolio_stats, regression
from backtest.simulate import simulate, trades_table
from backtest.universe.portfolio import UNIVERSE_BH, UniverseSimulation, simulate_universe
from strategies.build import PortfolioSpec, build_signals

#: Significance level of every "beats" count.
ALPHA = 0.05
#: Multiple-testing corrections applied over the symbols (statsmodels ``multipletests`` method names).
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}
#: The pooled regression metrics: log-return errors only (price errors mix the symbols' price scales).
POOLED_REGRESSION = ("mse", "rmse", "mae", "mse_ratio", "rmse_ratio", "mae_ratio")


# --------------------------------------------------------------------------- typed results


@dataclass
class SymbolTest:
    """One symbol's one-sided test of a model x strategy against a baseline.

    ``statistic``: DM statistic (HLN-corrected; negative favours the model) or
    the annualised Sharpe difference (strategy minus buy & hold).
    ``p_value``: one-sided, uncorrected; ``p_holm`` / ``p_bh``: adjusted over the symbols.
    ``point_better``: the point estimate favours the model (lower MSE, higher Sharpe).
    """

    symbol: str
    statistic: float | None
    p_value: float | None
    p_holm: float | None
    p_bh: float | None
    point_better: bool | None


@dataclass
class BeatCount:
    """On how many symbols a model x strategy beats a baseline.

    ``point``: symbols where the point estimate is better; ``raw``: p < alpha
    uncorrected; ``holm`` / ``bh``: adjusted p < alpha (Holm, Benjamini-Hochberg).
    """

    test: str
    null: str
    alpha: float
    n_symbols: int
    point: int
    raw: int
    holm: int
    bh: int
    per_symbol: list[SymbolTest] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> BeatCount | None:
        if d is None:
            return None
        kw = {f.name: d.get(f.name) for f in fields(cls)}
        kw["per_symbol"] = [SymbolTest(**t) for t in d.get("per_symbol") or []]
        return cls(**kw)


@dataclass
class SummaryRow:
    """One universe portfolio (a model x strategy, or a baseline) against the equal-weight universe buy & hold.

    Returns and drawdowns are fractions; Sharpe/Sortino annualised with
    ``run.periods_per_year``; ``exposure`` is the share of bars with at least one
    symbol held; ``f1``/``precision`` are of the long signals pooled over symbols.
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
    trades: int | None
    exposure: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    bh_total_return: float | None
    bh_sharpe: float | None
    bh_max_drawdown: float | None
    sharpe_diff: float | None
    sharpe_diff_p_value: float | None
    beats_universe_bh: bool | None
    beats_persistence: BeatCount | None
    beats_buy_and_hold: BeatCount | None
    verdict: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SummaryRow:
        kw = {f.name: d.get(f.name) for f in fields(cls)}
        kw["beats_persistence"] = BeatCount.from_json(d.get("beats_persistence"))
        kw["beats_buy_and_hold"] = BeatCount.from_json(d.get("beats_buy_and_hold"))
        return cls(**kw)


@dataclass
class UniverseMetrics:
    """``metrics.json`` of a universe run.

    ``run``: what was run (symbols, timeframe, bars per year, costs, test span,
    rebalancing and correction rules). ``summary``: one :class:`SummaryRow` per
    universe portfolio, best Sharpe first (the ``buy_and_hold`` row is the
    equal-weight benchmark). ``universe``: full portfolio statistics of each
    universe portfolio. ``symbols``: per symbol, its test span, model metrics and
    portfolios. ``pooled``: per model and seed, metrics over every symbol's test
    bars. ``deflated_sharpe``: ``per_symbol`` (trials = every symbol x model x
    strategy) and ``universe`` (trials = the universe portfolios of every model x strategy).
    """

    run: dict[str, Any]
    summary: list[SummaryRow]
    universe: dict[str, Any]
    symbols: dict[str, Any]
    pooled: dict[str, Any]
    deflated_sharpe: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN/inf as None, numpy scalars as Python numbers)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UniverseMetrics:
        return cls(run=d["run"], summary=[SummaryRow.from_json(r) for r in d.get("summary") or []],
                   universe=d.get("universe") or {}, symbols=d.get("symbols") or {}, pooled=d.get("pooled") or {},
                   deflated_sharpe=d.get("deflated_sharpe") or {})


@dataclass
class UniverseEvaluation:
    """Everything a universe report needs: ``metrics`` (JSON-ready dict of :class:`UniverseMetrics`),
    ``equity`` (value at each bar's close, quote currency: universe portfolios by label, per-symbol portfolios
    as ``label[symbol]``, NaN outside a symbol's span) and ``trades``."""

    metrics: dict[str, Any]
    equity: pd.DataFrame
    trades: pd.DataFrame
    typed: UniverseMetrics
    simulation: UniverseSimulation


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN/inf -> None, numpy scalars -> int/float/bool, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _f(obj)
    return obj


# --------------------------------------------------------------------------- multiple testing


def adjust_pvalues(p_values: list[float | None]) -> dict[str, list[float]]:
    """Holm and Benjamini-Hochberg adjusted p-values (statsmodels ``multipletests``); undefined p counts as 1."""
    from statsmodels.stats.multitest import multipletests

    p = np.array([1.0 if _f(v) is None else float(v) for v in p_values], dtype=float)
    if p.size == 0:
        return {k: [] for k in CORRECTIONS}
    return {k: [float(x) for x in multipletests(p, alpha=ALPHA, method=m)[1]] for k, m in CORRECTIONS.items()}


def beat_count(test: str, null: str, symbols: list[str], statistics: list[float | None],
               p_values: list[float | None], point_better: list[bool | None], alpha: float = ALPHA) -> BeatCount:
    """Count the symbols where a model beats a baseline: by point estimate, raw p, Holm and BH adjusted p."""
    adj = adjust_pvalues(p_values)
    tests = [SymbolTest(s, _f(st), _f(p), adj["holm"][i], adj["bh"][i], pb)
             for i, (s, st, p, pb) in enumerate(zip(symbols, statistics, p_values, point_better))]
    return BeatCount(
        test=test, null=null, alpha=alpha, n_symbols=len(symbols),
        point=sum(bool(t.point_better) for t in tests),
        raw=sum(t.p_value is not None and t.p_value < alpha for t in tests),
        holm=sum(t.p_holm is not None and t.p_holm < alpha for t in tests),
        bh=sum(t.p_bh is not None and t.p_bh < alpha for t in tests),
        per_symbol=tests,
    )


# --------------------------------------------------------------------------- pieces


def _model_block(cfg: Config, preds: pd.DataFrame, pooled: bool) -> dict[str, Any]:
    """Per model and seed: direction (predicted up = r̂ > 0), errors, DM vs persistence and PT."""
    out: dict[str, Any] = {}
    for model, g in preds.groupby("model", sort=False):
        per_seed = {}
        for seed, s in g.groupby("seed"):
            yt, yp = s["y_true"].to_numpy(), s["y_pred"].to_numpy()
            reg = regression(yt, yp, s["close"].to_numpy())
            if pooled:
                reg = {k: reg[k] for k in POOLED_REGRESSION}
            per_seed[str(seed)] = {"classification": classification(yt, yp > 0), "regression": reg,
                                   "significance": model_significance(yt, yp), "n": int(len(s))}
        mc = cfg.models.get(str(model))
        out[str(model)] = {"type": mc.type if mc is not None else None, "per_seed": per_seed}
    return out


def _symbol_eval(cfg: Config, preds: pd.DataFrame, bars: pd.DataFrame, timeframe: str):  # type: ignore[no-untyped-def]
    """One symbol, as a single-symbol run would see it: signals, one simulation, metrics per portfolio."""
    ppy = periods_per_year(timeframe)
    signals, specs = build_signals(cfg, preds, bars)
    sim = simulate(signals, bars, cfg.backtest, timeframe)
    returns = sim.portfolio.returns()  # type: ignore[attr-defined]
    bh = next(s.label for s in specs if s.strategy_type == "buy_and_hold")
    ports: dict[str, Any] = {}
    for spec in specs:
        block: dict[str, Any] = {"model": spec.model, "strategy": spec.strategy, "seed": spec.seed,
                                 "portfolio": portfolio_stats(sim.portfolio, spec.label, ppy, sim.positions[spec.label].iloc[1:])}
        if spec.model is not None:
            yt = preds[preds["seed"] == spec.seed].drop_duplicates("timestamp").set_index("timestamp")["y_true"]
            block["classification"] = classification(yt.reindex(signals.index).to_numpy(), signals[spec.label].to_numpy())
        if spec.strategy_type != "buy_and_hold":
            block["sharpe_diff_vs_buy_and_hold"] = sig.bootstrap_sharpe_diff(
                returns[spec.label].to_numpy()[1:], returns[bh].to_numpy()[1:], periods_per_year=ppy,
                n_boot=cfg.backtest.bootstrap_samples, seed=cfg.run.seeds[0])
        ports[spec.label] = block
    info = {"first_test_bar": signals.index[0].isoformat(), "last_test_bar": signals.index[-1].isoformat(),
            "test_bars": len(signals), "models": _model_block(cfg, preds, pooled=False), "portfolios": ports}
    return info, signals, specs, sim, returns


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


def _verdict(row: SummaryRow) -> str:
    if row.portfolio == UNIVERSE_BH:
        return "benchmark (equal-weight buy & hold of the universe)"
    s, b, p = row.sharpe, row.bh_sharpe, row.sharpe_diff_p_value
    head = ("beats" if row.beats_universe_bh else "does not beat") + " equal-weight buy & hold on Sharpe"
    parts = [f"{head} ({'n/a' if s is None else f'{s:.2f}'} vs {'n/a' if b is None else f'{b:.2f}'}"
             + (f", bootstrap p={p:.3f})" if p is not None else ")")]
    for name, bc in (("buy & hold", row.beats_buy_and_hold), ("persistence (DM)", row.beats_persistence)):
        if bc is not None:
            parts.append(f"beats {name} on {bc.holm}/{bc.n_symbols} symbols (Holm), {bc.bh}/{bc.n_symbols} (BH)")
    return "; ".join(parts)


def _dsr(returns: pd.DataFrame, sharpes: dict[str, float | None]) -> dict[str, Any]:
    if returns.shape[1] == 0:
        return {"note": "no model strategies"}
    best = max(returns.columns, key=lambda c: -np.inf if sharpes.get(c) is None else sharpes[c])
    out = sig.deflated_sharpe_from_returns(returns, best)
    out["trials"] = list(map(str, returns.columns))
    return out


# --------------------------------------------------------------------------- the evaluation


def evaluate_universe(cfg: Config, predictions: pd.DataFrame, bars: dict[str, pd.DataFrame], timeframe: str) -> UniverseEvaluation:
    """Per-symbol and universe portfolios of every model x strategy, the baselines, pooled metrics, significance.

    ``predictions``: the universe ``predictions.csv`` table (``timestamp, symbol, model, seed, fold, y_true,
    y_pred, close, pred_close``; ``timestamp`` = decision bar t, ``y_true`` = r[t+1]). ``bars``: validated OHLCV
    per symbol, in listing order. Every signal decided at the close of bar t is traded at the open of t+1.
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
    ppy = periods_per_year(timeframe)
    sym_info: dict[str, Any] = {}
    sym_signals: dict[str, pd.DataFrame] = {}
    sym_returns: dict[str, pd.DataFrame] = {}
    specs: list[PortfolioSpec] = []
    equity_cols: dict[str, pd.Series] = {}
    trades = []
    for s in symbols:
        preds = predictions[predictions["symbol"] == s].drop(columns="symbol")
        info, signals, sp, sim, rets = _symbol_eval(cfg, preds, bars[s], timeframe)
        if specs and [x.label for x in sp] != [x.label for x in specs]:
            raise ValueError(f"{s}: portfolio labels differ from the other symbols'")
        specs = sp
        sym_info[s], sym_signals[s], sym_returns[s] = info, signals, rets
        for lab in sim.equity.columns:
            equity_cols[f"{lab}[{s}]"] = sim.equity[lab]
        t = trades_table(sim)
        trades.append(t.assign(portfolio=t["portfolio"].astype(str) + f"[{s}]", symbol=s))

    labels = [x.label for x in specs]
    uni_signals, active = _universe_signals(sym_signals, labels)
    usim = simulate_universe(uni_signals, {s: bars[s] for s in symbols}, cfg.backtest, timeframe, active=active)
    pf = usim.portfolio
    uret = pf.returns()  # type: ignore[attr-defined]
    uni_labels = [lab for lab in labels if lab != UNIVERSE_BH] + [UNIVERSE_BH]
    universe: dict[str, Any] = {}
    for lab in uni_labels:
        any_held = usim.positions[lab].any(axis=1)
        block: dict[str, Any] = {"portfolio": portfolio_stats(pf, lab, ppy, any_held.iloc[1:])}
        if lab != UNIVERSE_BH:
            block["sharpe_diff_vs_buy_and_hold"] = sig.bootstrap_sharpe_diff(
                uret[lab].to_numpy()[1:], uret[UNIVERSE_BH].to_numpy()[1:], periods_per_year=ppy,
                n_boot=cfg.backtest.bootstrap_samples, seed=cfg.run.seeds[0])
        universe[lab] = block

    pooled = _model_block(cfg, predictions, pooled=True)
    bh_stats = universe[UNIVERSE_BH]["portfolio"]
    rows = []
    for spec in [x for x in specs if x.label != UNIVERSE_BH] + [next(x for x in specs if x.label == UNIVERSE_BH)]:
        lab = spec.label
        p = universe[lab]["portfolio"]
        sd = universe[lab].get("sharpe_diff_vs_buy_and_hold") or {}
        cls = _pooled_signal_classification(predictions, uni_signals[lab], active, spec) if spec.model else {}
        beats_bh = beats_pers = None
        if spec.model is not None:
            sds = [sym_info[s]["portfolios"][lab]["sharpe_diff_vs_buy_and_hold"] for s in symbols]
            beats_bh = beat_count(
                "stationary-bootstrap Sharpe difference vs the symbol's buy & hold, one-sided",
                "Sharpe of the strategy <= Sharpe of buy & hold", symbols,
                [d.get("sharpe_diff") for d in sds], [d.get("p_value") for d in sds],
                [None if _f(d.get("sharpe_diff")) is None else d["sharpe_diff"] > 0 for d in sds])
            mtype = cfg.models[spec.model].type if spec.model in cfg.models else None
            if mtype is not None and mtype != "persistence":
                dms, ratios = [], []
                for s in symbols:
                    block = sym_info[s]["models"][spec.model]["per_seed"][str(spec.seed)]
                    dms.append(block["significance"]["diebold_mariano"])
                    ratios.append(block["regression"]["mse_ratio"])
                beats_pers = beat_count(
                    "Diebold-Mariano (HLN, squared error) vs persistence, one-sided", "equal squared error",
                    symbols, [d.get("statistic") for d in dms], [d.get("p_value_less") for d in dms],
                    [None if r is None else r < 1 for r in ratios])
        diff_p = _f(sd.get("p_value"))
        row = SummaryRow(
            portfolio=lab, model=spec.model, strategy=spec.strategy, strategy_type=spec.strategy_type, seed=spec.seed,
            total_return=p["total_return"], cagr=p["cagr"], sharpe=p["sharpe"], sortino=p["sortino"],
            max_drawdown=p["max_drawdown"], trades=p["trades"], exposure=p["exposure"],
            precision=cls.get("precision"), recall=cls.get("recall"), f1=cls.get("f1"),
            bh_total_return=bh_stats["total_return"], bh_sharpe=bh_stats["sharpe"], bh_max_drawdown=bh_stats["max_drawdown"],
            sharpe_diff=_f(sd.get("sharpe_diff")), sharpe_diff_p_value=diff_p,
            beats_universe_bh=None if lab == UNIVERSE_BH else (diff_p is not None and diff_p < ALPHA),
            beats_persistence=beats_pers, beats_buy_and_hold=beats_bh, verdict="")
        row.verdict = _verdict(row)
        rows.append(row)
    rows.sort(key=lambda r: -(r.sharpe if r.sharpe is not None else -np.inf))

    model_labels = [x.label for x in specs if x.model is not None]
    per_sym_rets = pd.DataFrame({f"{s}|{lab}": sym_returns[s][lab].iloc[1:] for s in symbols for lab in model_labels})
    per_sym_sharpes = {f"{s}|{lab}": sym_info[s]["portfolios"][lab]["portfolio"]["sharpe"] for s in symbols for lab in model_labels}
    dsr = {"per_symbol": _dsr(per_sym_rets, per_sym_sharpes),
           "universe": _dsr(uret[model_labels].iloc[1:], {lab: universe[lab]["portfolio"]["sharpe"] for lab in model_labels})}

    quotes = {s.split("/")[-1].split(":")[0] for s in symbols}
    run = {
        "name": cfg.run.name, "universe": True, "symbols": symbols, "n_symbols": len(symbols),
        "symbol": f"universe of {len(symbols)} symbols", "quote": quotes.pop() if len(quotes) == 1 else "quote",
        "timeframe": timeframe, "bar_seconds": timeframe_seconds(timeframe), "periods_per_year": ppy,
        "first_test_bar": usim.equity.index[0].isoformat(), "last_test_bar": active.index[-1].isoformat(),
        "test_bars": len(active), "fees": cfg.backtest.fees, "slippage": cfg.backtest.slippage,
        "init_cash": cfg.backtest.init_cash, "seeds": cfg.run.seeds, "pooled": bool(getattr(cfg.features, "pooled", False)),
        "execution": "decision at close of bar t, filled at open of bar t+1",
        "rebalancing": ("equal weight 1/n among the symbols long, cash shared, rebalanced at the next open only on "
                        "bars where the set of long symbols changes (sells before buys); weights drift in between"),
        "baselines": ("buy_and_hold: equal-weight buy & hold of every symbol that has started, rebalanced at the "
                      "next open when a symbol enters; buy_and_hold[<symbol>]: that symbol alone"),
        "multiple_testing": (f"per model x strategy over its symbols: Holm (family-wise) and Benjamini-Hochberg "
                             f"(false discovery rate) adjusted one-sided p-values, alpha {ALPHA}; an undefined test counts as p = 1"),
    }
    typed = UniverseMetrics(run=run, summary=rows, universe=universe, symbols=sym_info, pooled=pooled, deflated_sharpe=dsr)

    equity = usim.equity[uni_labels].copy()
    per_sym = pd.DataFrame(equity_cols).reindex(equity.index)
    equity = pd.concat([equity, per_sym], axis=1)
    equity.index.name = "timestamp"
    ut = usim.portfolio.trades.records_readable  # type: ignore[attr-defined]
    ut = _universe_trades(ut)
    all_trades = pd.concat([ut] + trades, ignore_index=True) if trades else ut
    return UniverseEvaluation(typed.to_json(), equity, all_trades, typed, usim)


def _pooled_signal_classification(predictions: pd.DataFrame, signals: pd.DataFrame, active: pd.DataFrame,
                                  spec: PortfolioSpec) -> dict[str, Any]:
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


__all__ = ["ALPHA", "BeatCount", "SummaryRow", "SymbolTest", "UniverseEvaluation", "UniverseMetrics",
           "adjust_pvalues", "beat_count", "evaluate_universe"]
