"""The sweep report: one self-contained HTML page (``out/sweep/report.html``, PNGs embedded, no scripts).

Sections, top to bottom: the verdict (in words, with the p-values it rests on); the sweep (grid, seeds, test
span, trainings); the grid table (one row per candidate: means and spreads over seeds, MCS membership, a link
to its grid point's run report) with the baselines beside it; the seed box plots; the walk-forward selection
(its rule, its record beside the best grid point in hindsight -- labelled not tradeable -- and buy & hold,
the choice per block); the overfitting diagnostics (PBO with its figures, SPA and the reality check, the
model confidence set, the deflated Sharpe ratio over every trial); notes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.atomic import write_text
from backtest.sweep_schema import SweepMetrics
from reports.html import Cell, esc, figure_png, fmt_num, fmt_p, fmt_pct, html_table, img_tag, page, save_figures

__all__ = ["render_sweep_report", "sweep_figures", "write_sweep_report"]


def _mean(v: list[Any]) -> float | None:
    x = [a for a in v if a is not None and np.isfinite(a)]
    return float(np.mean(x)) if x else None


def _sd(v: list[Any]) -> float | None:
    x = [a for a in v if a is not None and np.isfinite(a)]
    return float(np.std(x, ddof=1)) if len(x) > 1 else None


def _pm(v: list[Any], fmt) -> str:  # type: ignore[no-untyped-def]
    m, s = _mean(v), _sd(v)
    return fmt(m) + ("" if s is None else f" ± {fmt(s)}")


def _grid_table(m: SweepMetrics) -> str:
    strategies = sorted({s for c in m.candidates for s in c.sharpe})
    members = set(m.mcs.members) if m.mcs else set()
    run_of = {g.label: g.run_dir for g in m.grid}
    best = m.selection.hindsight_best if m.selection else None
    head = (["candidate", "grid point", "MSE / persistence", "direction accuracy"]
            + [f"Sharpe {s}" for s in strategies] + ["in MCS", "run report"])
    rows, classes = [], []
    for c in m.candidates:
        link = f'<a href="../{esc(run_of.get(c.grid_point, ""))}/report.html">report</a>'
        rows.append([Cell(c.candidate, "l"), Cell(c.grid_point, "l"), _pm(c.mse_ratio, fmt_num),
                     _pm(c.accuracy, lambda v: fmt_pct(v)), *[_pm(c.sharpe.get(s, []), fmt_num) for s in strategies],
                     "yes" if c.candidate in members else "no", Cell(link, "l", raw=True)])
        classes.append("base" if c.candidate == best else "")
    b = m.baselines
    rows.append([Cell("persistence (benchmark)", "l"), Cell("—", "l"), "1.00",
                 fmt_pct(b.up_share) + " (always up)", *["" for _ in strategies], "", ""])
    classes.append("")
    for lab, v in b.sharpe.items():
        rows.append([Cell(f"{lab} (baseline)", "l"), Cell("—", "l"), "", "", *[fmt_num(v) for _ in strategies], "", ""])
        classes.append("")
    return (html_table(head, rows, row_classes=classes, table_id="grid")
            + f'<p class="note">Mean ± standard deviation over {len(m.sweep.seeds)} seed(s), out of sample. '
              "The highlighted row is the best candidate in hindsight (by the selection's criterion over the whole "
              "span): not tradeable, as its choice used every test block.</p>")


def _selection_section(m: SweepMetrics, figs: dict[str, bytes]) -> str:
    from reports.sweep_figures import CAPTIONS

    s = m.selection
    if s is None:
        return '<p class="note">No walk-forward selection (see the notes).</p>'
    bh = m.baselines.sharpe.get(m.baselines.buy_and_hold or "")
    head = ["", "tradeable", "Sharpe", "total return", "max drawdown", "MSE / persistence", "direction accuracy",
            "vs buy & hold"]
    v = s.verdict
    rows = [
        [Cell("walk-forward selection", "l"), "yes", fmt_num(s.sharpe_mean) + ("" if s.sharpe_std is None else
                                                                             f" ± {fmt_num(s.sharpe_std)}"),
         fmt_pct(s.total_return_mean), fmt_pct(s.max_drawdown_mean, magnitude=True), fmt_num(s.mse_ratio_mean),
         fmt_pct(s.accuracy_mean), Cell(v.short() if v else "—", "l", title=v.text() if v else "")],
        [Cell(f"best in hindsight: {s.hindsight_best}", "l"), Cell("NO (not tradeable)", "bad"),
         fmt_num(s.hindsight_sharpe_mean), "", "", fmt_num(s.hindsight_mse_ratio_mean), "", ""],
        [Cell(f"buy & hold ({m.baselines.buy_and_hold})", "l"), "yes", fmt_num(bh), "", "", "", "", "benchmark"],
    ]
    blocks = html_table(["block", "first bar", "last bar", "chosen", "score before the block"],
                        [[b.block, b.first_bar[:10], b.last_bar[:10], Cell(b.chosen, "l"), fmt_num(b.score, 5)]
                         for b in s.blocks], table_id="choices")
    return "".join([
        f'<p id="rule">Rule: <b>{esc(s.criterion)}</b> — {esc(s.rule)}. Each block is traded with the forecasts '
        f"of the grid point chosen before it; {s.switches} switch(es) over {len(s.blocks)} blocks. Its "
        f"predictions, equity, trades and run metrics are in <code>selected/</code>.</p>",
        html_table(head, rows, table_id="selection"),
        _figure(figs, "selection_equity", CAPTIONS), _figure(figs, "selection_choices", CAPTIONS),
        "<details><summary>Choice per block</summary>", blocks, "</details>"])


def _figure(figs: dict[str, bytes], name: str, captions: dict[str, str]) -> str:
    if name not in figs:
        return ""
    return f"<figure>{img_tag(figs[name], name)}<figcaption>{esc(captions.get(name, ''))}</figcaption></figure>"


def _diagnostics(m: SweepMetrics, figs: dict[str, bytes]) -> str:
    from reports.sweep_figures import CAPTIONS

    out = []
    p = m.pbo
    out.append("<h3>Probability of backtest overfitting (CSCV)</h3>")
    if p is not None and p.pbo is not None:
        out.append(f'<p id="pbo">PBO = <b>{p.pbo:.3f}</b> over {p.n_splits} splits of {p.n_blocks} blocks '
                   f"({p.n_obs} bars, {p.n_candidates} candidates' long/flat returns, seed mean); out-of-sample "
                   f"degradation slope {fmt_num(p.slope)}; share of splits where the in-sample best lost out of "
                   f"sample {fmt_pct(p.prob_oos_loss)}.</p>")
        out += [_figure(figs, "pbo_logits", CAPTIONS), _figure(figs, "pbo_degradation", CAPTIONS)]
    else:
        out.append(f'<p id="pbo" class="note">Not computed: {esc(p.note if p else "no long/flat strategy or one candidate")}.</p>')
    out.append("<h3>Superior predictive ability (Hansen) and reality check (White)</h3>")
    rows = []
    for r in (m.spa_portfolio, m.spa_forecast):
        if r is None:
            continue
        rows.append([Cell(r.benchmark, "l"), Cell(r.loss, "l"), r.n_candidates, r.n_obs, fmt_p(r.spa_p_consistent),
                     fmt_p(r.spa_p_lower), fmt_p(r.spa_p_upper), fmt_p(r.rc_p), Cell(r.best or "—", "l"),
                     Cell(r.note or "", "l")])
    out.append(html_table(["benchmark", "loss", "candidates", "bars", "SPA p (consistent)", "SPA p (lower)",
                           "SPA p (upper)", "reality check p", "lowest mean loss", "note"], rows, table_id="spa"))
    out.append(f'<p class="note">Null: no candidate has a lower expected loss than the benchmark. Stationary '
               f"bootstrap ({(m.spa_portfolio or m.spa_forecast).reps if (m.spa_portfolio or m.spa_forecast) else 0} "
               "replications), arch.bootstrap.</p>")
    out.append("<h3>Model confidence set (forecast losses)</h3>")
    if m.mcs is not None:
        pv = html_table(["candidate", "MCS p-value", "in set"],
                        [[Cell(k, "l"), fmt_p(v), "yes" if k in m.mcs.members else "no"] for k, v in m.mcs.pvalues.items()])
        out.append(f'<p id="mcs">At size {m.mcs.size:g} on {esc(m.mcs.loss)}: '
                   f"<b>{esc(', '.join(m.mcs.members) or 'none')}</b>"
                   f"{'' if not m.mcs.note else ' (' + esc(m.mcs.note) + ')'}.</p>" + pv)
    d = m.deflated_sharpe
    out.append("<h3>Deflated Sharpe ratio over every trial</h3>")
    out.append(f'<p id="dsr">Best of {d.n_trials} trials (every grid point × model strategy × seed): '
               f"{esc(d.selected or 'n/a')}, DSR {fmt_num(d.dsr, 3)} (p = {fmt_p(d.p_value)})"
               f"{'' if not d.note else ' — ' + esc(d.note)}.</p>")
    return "".join(out)


def render_sweep_report(m: SweepMetrics, figs: dict[str, bytes], *, title: str) -> str:
    """The sweep report as one HTML page (see the module docstring)."""
    from reports.sweep_figures import CAPTIONS

    s = m.sweep
    grid = "; ".join(f"{k} ∈ {{{', '.join(v)}}}" for k, v in s.grid.items()) or "(no grid: the base config)"
    ok = m.verdict.portfolio == "beats" or m.verdict.forecast == "beats"
    info = (f'<dl class="run"><dt>market</dt><dd>{esc(s.symbol)} {esc(s.timeframe)}</dd><dt>grid</dt><dd>{esc(grid)}</dd>'
            f"<dt>seeds</dt><dd>{esc(s.seeds)}</dd><dt>test span</dt><dd>{esc(s.first_test_bar[:10])} .. "
            f"{esc(s.last_test_bar[:10])} ({s.test_bars} bars, {s.blocks} walk-forward blocks)</dd>"
            f"<dt>network trainings</dt><dd>{s.trainings:,} (grid points × seeds × folds, planned together, one executor call)</dd>"
            f"<dt>portfolio strategy</dt><dd>{esc(s.strategy or 'none')}</dd></dl>")
    body = [f"<h1>{esc(title)}</h1>", "<h2>Verdict</h2>",
            f'<p id="verdict" class="{"good" if ok else ""}">{esc(m.verdict.text)}</p>',
            "<h2>Sweep</h2>", info,
            "<h2>Grid: every candidate over its seeds, beside the baselines</h2>", _grid_table(m),
            _figure(figs, "seed_boxplots", CAPTIONS),
            "<h2>Walk-forward selection: tune, then trade</h2>", _selection_section(m, figs),
            "<h2>Overfitting diagnostics over the grid</h2>", _diagnostics(m, figs)]
    if m.notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in m.notes) + "</ul>")
    return page(title, "\n".join(body))


def sweep_figures(res: Any) -> dict[str, Any]:
    """Every figure of the report from a :class:`backtest.sweep_analysis.SweepAnalysis`."""
    from reports import sweep_figures as sf

    m = res.metrics
    figs = {"seed_boxplots": sf.seed_boxplots(m)}
    if m.selection is not None:
        sel = None
        if res.selection_eval is not None:
            eq = res.selection_eval.equity
            cols = [c for c in eq.columns if c.startswith(f"selected/{m.sweep.strategy}")]
            sel = eq[cols].pct_change().fillna(0.0).mean(axis=1) if cols else None
        hind = res.returns[m.selection.hindsight_best] if res.returns is not None else None
        figs["selection_equity"] = sf.selection_equity(
            sel, hind, res.benchmark_returns,
            ("walk-forward selection (tradeable)", f"best in hindsight: {m.selection.hindsight_best} (NOT tradeable)",
             "buy & hold"))
        figs["selection_choices"] = sf.selection_choices(m)
    if m.pbo is not None and m.pbo.pbo is not None:
        figs["pbo_logits"] = sf.pbo_logits(m)
        figs["pbo_degradation"] = sf.pbo_degradation(m)
    return figs


def write_sweep_report(folder: str | Path, res: Any) -> Path:
    """Render every figure once, save ``folder/figures/*.png``, write ``folder/report.html``; return its path."""
    folder = Path(folder)
    figures = sweep_figures(res)
    try:
        pngs = {k: figure_png(f) for k, f in figures.items()}
    finally:
        for f in figures.values():
            f.clear()
    save_figures(pngs, folder / "figures")
    return write_text(folder / "report.html",
                      render_sweep_report(res.metrics, pngs, title=f"walkforward sweep: {res.metrics.sweep.name}"))
