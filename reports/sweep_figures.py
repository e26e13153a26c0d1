"""The sweep report's figures (matplotlib): seed spread per grid point, the selection's record, PBO.

Every figure is a pure function of :class:`backtest.sweep_schema.SweepMetrics` (and, for the equity, the
selection's and candidates' per-bar returns) and returns a :class:`matplotlib.figure.Figure`. Every number
drawn is out of sample (walk-forward test bars).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from backtest.sweep_schema import SweepMetrics
from reports.figures import _date_axis, _log_y, _message, _naive_utc

__all__ = ["seed_boxplots", "selection_equity", "selection_choices", "pbo_logits", "pbo_degradation", "CAPTIONS"]

CAPTIONS = {
    "seed_boxplots": (
        "Each candidate (grid point / model) over its seeds, walk-forward and out of sample: MSE of the "
        "next-bar log-return forecast divided by persistence's (below the dashed 1 beats 'no change'), direction "
        "accuracy (dashed: the share of up bars, the accuracy of always saying 'up'), and the annualised Sharpe "
        "ratio of each long/flat strategy (dashed: buy & hold; dotted: the other baselines). A box is the "
        "inter-quartile range over seeds, its line the median, the dots the seeds."),
    "selection_equity": (
        "Value of 1 invested, log scale, fees and slippage paid: the walk-forward selection (each block traded "
        "with the grid point chosen from earlier blocks only; mean over seeds), the best grid point in hindsight "
        "(chosen with the whole span's results: NOT tradeable), and buy & hold. Decisions at the close of bar t "
        "are executed at the open of bar t+1."),
    "selection_choices": (
        "The candidate the selection traded in each walk-forward test block (chosen before the block, from "
        "earlier blocks' out-of-sample results only)."),
    "pbo_logits": (
        "CSCV: for every split of the test blocks into two halves, the logit of the out-of-sample relative rank "
        "of the in-sample best candidate (by per-bar Sharpe ratio). Mass at or left of 0 (red) is the probability "
        "of backtest overfitting."),
    "pbo_degradation": (
        "CSCV: in-sample against out-of-sample per-bar Sharpe ratio of the in-sample best candidate, one dot per "
        "split, with the least-squares line; a slope below 1 (dashed: y = x) is the degradation from choosing in "
        "sample."),
}


def _short(name: str, n: int = 38) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def seed_boxplots(m: SweepMetrics) -> Figure:
    """Box plots over seeds per candidate: MSE ratio, direction accuracy, each long/flat strategy's Sharpe."""
    cands = m.candidates
    if not cands:
        return _message("no candidates (every model is a benchmark)", "Seed spread")
    strategies = sorted({s for c in cands for s in c.sharpe})
    panels = [("MSE / persistence", [c.mse_ratio for c in cands], 1.0, None),
              ("direction accuracy", [c.accuracy for c in cands], m.baselines.up_share, None)]
    bh = m.baselines.sharpe.get(m.baselines.buy_and_hold or "")
    others = {k: v for k, v in m.baselines.sharpe.items() if k != m.baselines.buy_and_hold and v is not None}
    panels += [(f"Sharpe ({s})", [c.sharpe.get(s, []) for c in cands], bh, others) for s in strategies]
    h = max(3.0, 0.32 * len(cands) + 1.2)
    fig = Figure(figsize=(4.6 * len(panels), h), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    labels = [_short(c.candidate) for c in cands]
    for ax, (title, data, ref, extra) in zip(axes, panels):
        vals = [[v for v in d if v is not None and np.isfinite(v)] for d in data]
        pos = np.arange(len(vals))
        ax.boxplot([v if v else [np.nan] for v in vals], positions=pos, vert=False, widths=0.6)
        for i, v in enumerate(vals):
            ax.plot(v, [i] * len(v), "o", ms=3, alpha=0.6, color="tab:blue")
        if ref is not None:
            ax.axvline(ref, color="k", ls="--", lw=1)
        for j, (k, v) in enumerate((extra or {}).items()):
            ax.axvline(v, color="grey", ls=":", lw=1, label=k)
        if extra:
            ax.legend(fontsize="x-small", loc="best")
        ax.set_title(title, fontsize="medium")
        ax.set_yticks(pos, labels, fontsize="small")
        ax.invert_yaxis()
    fig.suptitle(f"Out of sample over {len(cands[0].seeds)} seed(s), {m.sweep.first_test_bar[:10]} .. "
                 f"{m.sweep.last_test_bar[:10]}", fontsize="medium")
    return fig


def selection_equity(selected: pd.Series | None, hindsight: pd.Series | None, benchmark: pd.Series | None,
                     labels: tuple[str, str, str]) -> Figure:
    """Growth of 1 from per-bar returns: the selection, the hindsight best (not tradeable), buy & hold."""
    if selected is None:
        return _message("no selection (see the notes)", "Selection")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax = fig.subplots()
    for s, lab, style in ((selected, labels[0], dict(color="tab:blue", lw=1.8)),
                          (hindsight, labels[1], dict(color="tab:orange", lw=1.2, ls="--")),
                          (benchmark, labels[2], dict(color="k", lw=1.2))):
        if s is None:
            continue
        growth = (1 + s.fillna(0.0)).cumprod()
        ax.plot(_naive_utc(growth.index), growth.to_numpy(), label=lab, **style)
    _log_y(ax)
    _date_axis(ax)
    ax.set_ylabel("value of 1")
    ax.legend(fontsize="small", loc="upper left")
    return fig


def selection_choices(m: SweepMetrics) -> Figure:
    """The candidate chosen per test block, as a step over time."""
    sel = m.selection
    if sel is None or not sel.blocks:
        return _message("no selection", "Selection")
    names = [c.candidate for c in m.candidates]
    fig = Figure(figsize=(11, max(2.2, 0.3 * len(names) + 1)), layout="constrained")
    ax = fig.subplots()
    x = _naive_utc(pd.to_datetime([b.first_bar for b in sel.blocks], utc=True))
    y = [names.index(b.chosen) if b.chosen in names else -1 for b in sel.blocks]
    ax.step(x, y, where="post", color="tab:blue")
    ax.plot(x, y, "o", color="tab:blue", ms=4)
    ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize="small")
    ax.set_ylim(-0.5, len(names) - 0.5)
    ax.invert_yaxis()
    _date_axis(ax)
    return fig


def pbo_logits(m: SweepMetrics) -> Figure:
    """Histogram of the CSCV logits; the PBO is the share at or below 0."""
    p = m.pbo
    if p is None or p.pbo is None:
        return _message(p.note if p is not None and p.note else "PBO not computed", "PBO")
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    lg = np.asarray(p.logits, dtype=float)
    lg = lg[np.isfinite(lg)]
    bins = np.linspace(lg.min() - 1e-9, lg.max() + 1e-9, 31)
    ax.hist(lg[lg > 0], bins=bins, color="tab:blue", alpha=0.8, label="in-sample best above the median OOS")
    ax.hist(lg[lg <= 0], bins=bins, color="tab:red", alpha=0.8, label="at or below the median OOS")
    ax.axvline(0, color="k", lw=1)
    ax.set_xlabel("logit of the OOS relative rank")
    ax.set_ylabel("splits")
    ax.set_title(f"PBO = {p.pbo:.2f} ({p.n_splits} splits of {p.n_blocks} blocks, {p.n_candidates} candidates)",
                 fontsize="medium")
    ax.legend(fontsize="x-small")
    return fig


def pbo_degradation(m: SweepMetrics) -> Figure:
    """In-sample vs out-of-sample per-bar Sharpe of the in-sample best, per CSCV split."""
    p = m.pbo
    if p is None or p.pbo is None:
        return _message(p.note if p is not None and p.note else "PBO not computed", "Degradation")
    x, y = np.asarray(p.is_perf, dtype=float), np.asarray(p.oos_perf, dtype=float)
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(x, y, ".", ms=3, alpha=0.4)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.any():
        lo, hi = float(np.nanmin(x[ok])), float(np.nanmax(x[ok]))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        if p.slope is not None:
            b = np.polyfit(x[ok], y[ok], 1)
            ax.plot([lo, hi], np.polyval(b, [lo, hi]), color="tab:red", lw=1.5, label=f"slope {p.slope:.2f}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("in-sample Sharpe (per bar)")
    ax.set_ylabel("out-of-sample Sharpe (per bar)")
    ax.legend(fontsize="x-small")
    return fig
