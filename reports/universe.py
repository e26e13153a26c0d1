"""The universe run report: one self-contained HTML page answering "on how many symbols does this model beat the baselines?".

Sections, top to bottom:

1. **Symbols beaten** (table ``id="symbols-beaten"``): one row per universe
   portfolio (model x strategy, and the baselines): universe-portfolio Sharpe,
   total return and max drawdown beside the equal-weight universe buy & hold,
   the bootstrap p-value of the Sharpe difference, and on how many symbols the
   model x strategy beats that symbol's buy & hold (Sharpe difference) and
   persistence (Diebold-Mariano): by point estimate, raw p < alpha, Holm and
   Benjamini-Hochberg adjusted p < alpha.
2. Run information: symbols and their test spans, bar length and bars per year,
   costs, the rebalancing rule and the multiple-testing rule.
3. A heat map of one metric, model x strategy (rows) by symbol (columns).
4. Universe equity and drawdown; pooled forecast quality; deflated Sharpe.
5. One folded section (``<details>``) per symbol: its portfolios, its models'
   forecast quality, its equity curves.

Every annualised figure is labelled with the bar length and bars per year it
was annualised with. Reads ``metrics`` through :class:`backtest.universe.evaluate.UniverseMetrics`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from backtest.atomic import write_text
from backtest.universe.evaluate import BeatCount, UniverseMetrics
from backtest.universe.portfolio import UNIVERSE_BH
from reports.html import (Cell, esc, figure_png, fmt_int, fmt_num, fmt_p, fmt_pct, html_table, img_tag, page, save_figures,
                          verdict_cell)

__all__ = ["HEAT_METRICS", "heat_matrix", "heat_map", "render_universe_report", "write_universe_report"]

#: Metrics the heat map can show: key -> (title, how the value is read from a symbol's portfolio/model block).
HEAT_METRICS: dict[str, str] = {
    "sharpe_diff": "Sharpe minus the symbol's buy & hold Sharpe (annualised)",
    "sharpe": "Sharpe ratio (annualised)",
    "total_return": "Total return [%]",
    "sharpe_p": "Bootstrap p-value (two-sided), Sharpe vs the symbol's buy & hold",
    "mse_ratio": "MSE / persistence MSE (below 1 beats 'no change')",
}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _annual(m: UniverseMetrics) -> str:
    run = m.run
    return f"ann., {run.timeframe} bars, {fmt_int(run.periods_per_year)} bars/yr"


def heat_matrix(m: UniverseMetrics, metric: str = "sharpe_diff") -> pd.DataFrame:
    """Model x strategy labels (rows) by symbol (columns) of one :data:`HEAT_METRICS` metric; NaN where undefined."""
    if metric not in HEAT_METRICS:
        raise ValueError(f"heat map metric {metric!r} is not one of {', '.join(HEAT_METRICS)}")
    labels = [r.portfolio for r in m.summary if r.model is not None]
    symbols = list(m.run.symbols or m.symbols)
    out = pd.DataFrame(np.nan, index=labels, columns=symbols)
    for s in symbols:
        info = m.symbols.get(s)
        if info is None:
            continue
        for lab in labels:
            b = info.portfolios.get(lab)
            if b is None:
                continue
            sd = b.sharpe_vs_buy_and_hold
            row = next(r for r in m.summary if r.portfolio == lab)
            if metric == "sharpe_diff":
                v = sd.sharpe_diff if sd else None
            elif metric == "sharpe":
                v = b.portfolio.sharpe
            elif metric == "total_return":
                v = None if b.portfolio.total_return is None else 100 * b.portfolio.total_return
            elif metric == "sharpe_p":
                v = sd.p_value_two_sided if sd else None
            else:
                mm = info.models.get(str(row.model))
                sb = (mm.per_seed.get(str(row.seed)) or mm.first_seed()[1]) if mm else None
                v = sb.regression.mse_ratio if sb else None
            out.loc[lab, s] = np.nan if _num(v) is None else float(v)
    return out


def heat_map(matrix: pd.DataFrame, metric: str) -> Figure:
    """A labelled heat map with the value written in each cell (grey: undefined)."""
    rows, cols = matrix.shape
    fig = Figure(figsize=(max(5.0, 1.1 * cols + 3.5), max(2.5, 0.45 * rows + 1.6)), layout="constrained")
    ax = fig.add_subplot()
    vals = matrix.to_numpy(float)
    finite = vals[np.isfinite(vals)]
    centre = {"sharpe_diff": 0.0, "sharpe": 0.0, "total_return": 0.0, "mse_ratio": 1.0}.get(metric)
    if metric == "sharpe_p":
        cmap, vmin, vmax = "RdYlGn_r", 0.0, 1.0
    else:
        span = float(np.max(np.abs(finite - centre))) if finite.size else 1.0
        span = span or 1.0
        cmap, vmin, vmax = ("RdYlGn_r" if metric == "mse_ratio" else "RdYlGn"), centre - span, centre + span
    import matplotlib as mpl

    cm = mpl.colormaps[cmap].with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cm, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(cols), [str(c) for c in matrix.columns], rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(rows), [str(r) for r in matrix.index], fontsize="small")
    for i in range(rows):
        for j in range(cols):
            v = vals[i, j]
            ax.text(j, i, "n/a" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize="small")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(HEAT_METRICS[metric] + ", per symbol")
    return fig


def _beat_cells(bc: BeatCount | None) -> list[Any]:
    if bc is None:
        return ["—"] * 4
    n = bc.n_symbols
    return [f"{bc.point}/{n}", f"{bc.raw}/{n}", Cell(f"{bc.holm}/{n}", "sig" if bc.holm else ""),
            Cell(f"{bc.bh}/{n}", "sig" if bc.bh else "")]


def _summary_table(m: UniverseMetrics) -> str:
    ann = _annual(m)
    headers = [("Portfolio", "l"), ("Model", "l"), ("Strategy", "l"), ("Verdict vs EW B&H", "l"), f"Sharpe ({ann})", "EW B&H Sharpe",
               "Boot. p (2-sided)", "Return [%]", "EW B&H return [%]", "Max DD [%]", "EW B&H max DD [%]",
               "Beats B&H: point", "raw p", "Holm", "BH", "Beats persistence (DM): point", "raw p", "Holm", "BH",
               ("Flags", "l")]
    body, classes = [], []
    for r in m.summary:
        body.append([Cell(r.portfolio, "l"), Cell(r.model or "—", "l"), Cell(r.strategy, "l"), verdict_cell(r.verdict),
                     fmt_num(r.sharpe),
                     fmt_num(r.bh_sharpe), fmt_p(r.sharpe_diff_p_value_two_sided),
                     fmt_pct(r.total_return).rstrip("%"), fmt_pct(r.bh_total_return).rstrip("%"),
                     fmt_pct(r.max_drawdown, magnitude=True).rstrip("%"),
                     fmt_pct(r.bh_max_drawdown, magnitude=True).rstrip("%")]
                    + _beat_cells(r.beats_buy_and_hold) + _beat_cells(r.beats_persistence)
                    + [Cell(("⚑ " + "; ".join(r.flags)) if r.flags else "", "l bad" if r.flags else "l")])
        classes.append("base" if r.model is None else "")
    alpha = m.run.significance_level
    note = (f'<p class="note">Universe portfolios, best Sharpe first; EW B&amp;H is the equal-weight buy &amp; hold of '
            f"the universe. \"Beats B&amp;H\": symbols on which the strategy's own portfolio has a higher Sharpe ratio "
            f"than that symbol's buy &amp; hold (two-sided stationary-bootstrap test); \"Beats persistence\": symbols on "
            f"which the model's squared error is lower than the no-change forecast's (two-sided Diebold-Mariano). "
            f"<em>point</em>: the point estimate is better; <em>raw p</em>: two-sided p &lt; {alpha:g} without correction, "
            f"point estimate better; <em>Holm</em> (family-wise error) and <em>BH</em> (Benjamini-Hochberg, false "
            f"discovery rate): the same with the adjusted two-sided p, the family being the symbols of that row. "
            f"The verdict is coloured by its outcome: \"beats\" only when the two-sided bootstrap rejects at {alpha:g}. Shaded rows are baselines; — : not applicable "
            f"(baselines, the persistence model itself, ensembles for DM).</p>")
    table = html_table(headers, body, row_classes=classes, table_id="symbols-beaten")
    return f'<div style="overflow-x:auto">{table}</div>' + note


def _run_info(m: UniverseMetrics) -> str:
    run = m.run

    def span(s: str) -> str:
        info = m.symbols.get(s)
        if info is None:
            return f"{esc(s)}: n/a"
        return (f"{esc(s)}: {esc(info.run.first_test_bar[:10])} → {esc(info.run.last_test_bar[:10])} "
                f"({fmt_int(info.run.test_bars)} test bars)")

    items = [
        ("Run", esc(run.name)),
        ("Symbols", f"{fmt_int(run.n_symbols)}: " + "; ".join(span(s) for s in run.symbols)),
        ("Universe test span", f"{esc(run.first_test_bar)} → {esc(run.last_test_bar)} (decision bars t, UTC)"),
        ("Bar length", f"{esc(run.timeframe)} ({fmt_int(run.bar_seconds)} s); annualised with "
                       f"{fmt_int(run.periods_per_year)} bars a year (365-day year)"),
        ("Fees", f"{fmt_pct(run.fees, 3)} of the order value per fill"),
        ("Slippage", f"{fmt_pct(run.slippage, 3)} of the price per fill"),
        ("Models", "pooled: one model per network type trained on every symbol" if run.pooled
         else "one model per symbol"),
        ("Rebalancing", esc(run.rebalancing)),
        ("Baselines", esc(run.baselines)),
        ("Multiple testing", esc(run.multiple_testing)),
        ("Flags", f"fewer than {run.min_trades} trades, or exposure below {fmt_pct(run.min_exposure, 1)} of the bars"),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return (f'<dl class="run">{dl}</dl><p class="note"><strong>Every number on this page is out of sample:</strong> '
            "each forecast was made by a model trained only on bars before its walk-forward test block, and every "
            "signal decided at the close of bar t is traded at the open of bar t+1, with the fees and slippage above.</p>")


def _pooled_table(m: UniverseMetrics) -> str:
    headers = [("Model", "l"), ("Seed", "l"), "Forecasts", "Accuracy", "F1", "MCC", "RMSE [log ret]",
               "MSE / persistence", "DM stat", "DM p (2-sided)"]
    body = []
    for model, block in m.pooled.items():
        for seed, v in block.per_seed.items():
            c, r, d = v.classification, v.regression, v.significance.diebold_mariano
            body.append([Cell(model, "l"), Cell(seed, "l"), fmt_int(d.n), fmt_num(c.accuracy, 3),
                         fmt_num(c.f1, 3), fmt_num(c.mcc, 3), fmt_num(r.rmse, 5),
                         fmt_num(r.mse_ratio, 3), fmt_num(d.statistic), fmt_p(d.p_value_two_sided)])
    note = ('<p class="note">Every symbol\'s test bars together. Price errors are left out (they would mix the '
            "symbols' price scales). The pooled DM test treats the stacked loss differentials as one sample "
            "(cross-symbol correlation is ignored); the per-symbol tests and their corrected counts are above.</p>")
    return html_table(headers, body, table_id="pooled") + note


def _dsr_table(m: UniverseMetrics) -> str:
    ppy = m.run.periods_per_year
    headers = [("Trials", "l"), ("Selected (best Sharpe)", "l"), f"Sharpe ({_annual(m)})", "Trials tried",
               "Deflated Sharpe", "p (selection luck)", ("Note", "l")]
    body = []
    for key, title in (("per_symbol", "every symbol × model × strategy"), ("universe", "universe portfolios")):
        d = getattr(m.deflated_sharpe, key)
        body.append([Cell(title, "l"), Cell(d.selected or "—", "l"),
                     fmt_num(None if d.sharpe is None else d.sharpe * np.sqrt(ppy)), fmt_int(d.n_trials),
                     fmt_num(d.dsr, 3), fmt_p(d.p_value), Cell(d.note or "", "l")])
    note = ('<p class="note">Deflated Sharpe ratio (Bailey &amp; López de Prado 2014): the probability that the best '
            "of the trials has a true Sharpe ratio above the best of as many skill-less trials; above 0.95 rejects "
            "selection luck at 5%.</p>")
    return html_table(headers, body, table_id="deflated") + note


def _symbol_section(m: UniverseMetrics, symbol: str, png: bytes | None) -> str:
    info = m.symbols.get(symbol)
    if info is None:
        return ""
    ann = _annual(m)
    headers = [("Portfolio", "l"), f"Sharpe ({ann})", "Return [%]", "Max DD [%]", "Trades", "Exposure [%]",
               f"Sharpe − B&H ({ann})", "Boot. p (2-sided)", ("Verdict vs B&H", "l"), ("Flags", "l")]
    body, classes = [], []
    for lab, b in info.portfolios.items():
        p, sd = b.portfolio, b.sharpe_vs_buy_and_hold
        body.append([Cell(lab, "l"), fmt_num(p.sharpe), fmt_pct(p.total_return).rstrip("%"),
                     fmt_pct(p.max_drawdown, magnitude=True).rstrip("%"), fmt_int(p.trades),
                     fmt_pct(p.exposure).rstrip("%"), fmt_num(sd.sharpe_diff if sd else None),
                     fmt_p(sd.p_value_two_sided if sd else None), verdict_cell(b.verdict),
                     Cell(("⚑ " + "; ".join(b.flags)) if b.flags else "", "l bad" if b.flags else "l")])
        classes.append("base" if b.model is None else "")
    mh = [("Model", "l"), ("Seed", "l"), "Accuracy", "F1", "RMSE [log ret]", "Price MAE", "MSE / persistence",
          "DM stat", "DM p (2-sided)", "PT p (1-sided, skill)", ("Verdict vs persistence", "l")]
    mb = []
    for model, block in info.models.items():
        for seed, v in block.per_seed.items():
            c, r, s = v.classification, v.regression, v.significance
            mb.append([Cell(model, "l"), Cell(seed, "l"), fmt_num(c.accuracy, 3), fmt_num(c.f1, 3),
                       fmt_num(r.rmse, 5), fmt_num(r.price_mae, 4), fmt_num(r.mse_ratio, 3),
                       fmt_num(s.diebold_mariano.statistic), fmt_p(s.diebold_mariano.p_value_two_sided),
                       fmt_p(s.pesaran_timmermann.p_value_one_sided_skill), verdict_cell(v.verdict_vs_persistence)])
    fig = (f'<figure>{img_tag(png, f"equity {symbol}")}<figcaption>Equity of every portfolio of {esc(symbol)} alone '
           "(its own cash), log scale; signals decided at the close of bar t are traded at the open of t+1."
           "</figcaption></figure>") if png else ""
    span = f"{esc(info.run.first_test_bar[:10])} → {esc(info.run.last_test_bar[:10])}"
    return (f'<details id="symbol-{esc(symbol)}"><summary><strong>{esc(symbol)}</strong> — test bars {span}</summary>'
            + html_table(headers, body, row_classes=classes) + html_table(mh, mb) + fig + "</details>")


def _symbol_equity(equity: pd.DataFrame, symbol: str) -> pd.DataFrame:
    suffix = f"[{symbol}]"
    cols = [c for c in equity.columns if str(c).endswith(suffix)]
    out = equity[cols].dropna(how="all")
    out.columns = [str(c)[: -len(suffix)] for c in cols]
    return out


def render_universe_report(metrics: UniverseMetrics | Mapping[str, Any], pngs: Mapping[str, bytes], *, title: str,
                           heat_metric: str = "sharpe_diff") -> str:
    """The universe report as one HTML string (pure): ``pngs`` holds ``heatmap``, ``universe_equity``,
    ``universe_drawdown`` and ``equity_<i>`` per symbol (i = position in ``run.symbols``)."""
    m = metrics if isinstance(metrics, UniverseMetrics) else UniverseMetrics.from_json(dict(metrics))

    def fig(name: str, caption: str) -> str:
        return (f'<figure id="fig-{name}">{img_tag(pngs[name], name)}<figcaption>{caption}</figcaption></figure>'
                if name in pngs else "")

    body = [
        f"<h1>{esc(title)}</h1>",
        "<h2>On how many symbols does each model beat the baselines?</h2>",
        _summary_table(m),
        "<h2>Run</h2>", _run_info(m),
        f"<h2>Per symbol: {esc(HEAT_METRICS[heat_metric])}</h2>",
        fig("heatmap", f"{esc(HEAT_METRICS[heat_metric])}, for each model × strategy (rows) on each symbol "
                       f"(columns), each symbol over its own test bars ({_annual(m)} where annualised). Grey: undefined "
                       "(e.g. a test that could not run); a portfolio that never trades has Sharpe 0."),
        "<h2>Universe portfolio</h2>",
        fig("universe_equity", "Value of each universe portfolio after every bar, fees and slippage paid, log scale; "
                               "black: equal-weight buy &amp; hold of the universe. Equal weight among the symbols "
                               "long, cash shared, rebalanced at the next open when the long set changes."),
        fig("universe_drawdown", "Drawdown from the running high, 100·(equity / running maximum − 1) in %."),
        "<h2>Forecast quality pooled over symbols</h2>", _pooled_table(m),
        "<h2>Deflated Sharpe</h2>", _dsr_table(m),
        "<h2>Symbols</h2>",
    ]
    for i, s in enumerate(m.run.symbols):
        body.append(_symbol_section(m, s, pngs.get(f"equity_{i}")))
    return page(title, "\n".join(body))


def write_universe_report(run_dir: str | Path, metrics: UniverseMetrics | Mapping[str, Any], predictions: pd.DataFrame,
                          equity: pd.DataFrame, *, heat_metric: str = "sharpe_diff") -> Path:
    """Make the figures, write ``run_dir/figures/*.png`` and ``run_dir/report.html``; return the report path.

    ``metrics``: the ``metrics.json`` dict of a universe run (or its typed form); ``equity``: the universe
    ``equity.csv`` frame (universe portfolios by label, per-symbol portfolios as ``label[symbol]``);
    ``predictions`` is accepted for the agreed interface (the figures here need only metrics and equity).
    """
    from reports.figures import drawdown, equity_curves

    m = metrics if isinstance(metrics, UniverseMetrics) else UniverseMetrics.from_json(dict(metrics))
    run_dir = Path(run_dir)
    quote = m.run.quote
    uni_cols = [r.portfolio for r in m.summary if r.portfolio in equity.columns]
    if UNIVERSE_BH in uni_cols:
        uni_cols = [c for c in uni_cols if c != UNIVERSE_BH] + [UNIVERSE_BH]
    figures: dict[str, Figure] = {
        "heatmap": heat_map(heat_matrix(m, heat_metric), heat_metric),
        "universe_equity": equity_curves(equity[uni_cols], quote=quote),
        "universe_drawdown": drawdown(equity[uni_cols]),
    }
    for i, s in enumerate(m.run.symbols):
        eq = _symbol_equity(equity, s)
        if not eq.empty:
            figures[f"equity_{i}"] = equity_curves(eq, quote=quote)
    try:
        pngs = {name: figure_png(f) for name, f in figures.items()}
    finally:
        for f in figures.values():
            f.clear()
    save_figures(pngs, run_dir / "figures")
    name = m.run.name or run_dir.name
    return write_text(run_dir / "report.html", render_universe_report(m, pngs, title=f"walkforward universe report: {name}",
                                                                      heat_metric=heat_metric))
