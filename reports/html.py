"""The run report: one self-contained HTML page (inline CSS, PNGs embedded as base64), for one symbol or several.

The page opens offline: no scripts, no stylesheets or fonts from elsewhere, no external URLs. Numbers are
kept as fractions in ``metrics.json`` and converted to percentages only here, for display; an undefined
value (JSON ``null``, NaN) is shown as "n/a". Each column has one number format (fixed decimals, never a
mix of fixed and scientific notation). Sections adapt to the number of symbols (:func:`render_report`).
Every table puts the columns that answer its question first (cells of class ``ans``) so that they are on
screen at 1,400 px; the other columns fold away in a ``<details>`` below it.

:func:`render_report` (metrics + figures -> HTML string, pure), :func:`save_figures` (figures ->
``folder/<name>.png``, atomic), :func:`write_report` (``figures/*.png`` and ``report.html`` of a run directory).
"""
from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from backtest.atomic import write_bytes, write_text
from backtest.schema import (BeatCount, DeflatedSharpe, RunInfo, RunMetrics, SeedModelMetrics, SymbolMetrics, Verdict,
                             finite)

__all__ = ["CAPTIONS", "DPI", "render_report", "save_figures", "write_report", "figure_png", "verdict_cell"]

#: Resolution of every saved and embedded PNG [dots per inch].
DPI = 110

#: What each figure shows and how it is aligned in time (keys = figure names).
CAPTIONS: dict[str, str] = {
    "price_forecast": (
        "Predicted and actual next close over the whole out-of-sample span. Each forecast is plotted at its "
        "forecast time t, the bar whose close the model had seen: the predicted next close is "
        "close[t]·exp(y_pred), the actual next close is close[t]·exp(y_true) = close[t+1]. With up to four models "
        "a second panel zooms on the last forecasts, where a one-bar-ahead forecast that merely trails the price "
        "shows as a copy shifted one bar right. Log price axis; with several seeds the lowest seed is shown."
    ),
    "pred_vs_actual": (
        "Predicted against realised next-bar change, 100·(exp(log return) − 1) in %, every out-of-sample "
        "forecast of every seed. Dashed: y = x (a perfect forecast). Points in the upper-right and lower-left "
        "quadrants called the direction right; 'hit' is that share. The view is clipped to the 0.5–99.5 % "
        "quantiles; the panel notes how many points fall outside."
    ),
    "training_loss": (
        "Training (solid) and validation (dashed) loss per epoch of every walk-forward fold, folds laid end to "
        "end; dots mark each fold's lowest validation loss (the weights early stopping keeps). With more than "
        "eight folds each fold is one point in time order instead: final training loss, best and final "
        "validation loss. Validation is the chronological tail of the fold's training rows, before the test block."
    ),
    "equity": (
        "Portfolio value after each bar, fees and slippage paid, log scale. Signals decided at the close of "
        "bar t are executed at the open of bar t+1. Buy & hold is black; always-flat and SMA-cross are grey."
    ),
    "drawdown": (
        "Drawdown from the running high, 100·(equity / running maximum − 1) in %: 0 means a new high, −50 % "
        "means half of the best value so far is lost. Same portfolios and alignment as the equity figure."
    ),
    "confusion": (
        "Direction confusion matrix per model over all out-of-sample forecasts: rows are the realised next-bar "
        "direction, columns the predicted one ('up' = log return > 0). With several seeds, mean counts."
    ),
    "fold_scores": (
        "Direction accuracy and F1 (of the 'up' class) of each walk-forward test block, plotted at the block's "
        "first forecast time; grey dashed is the block's share of up bars, the accuracy of always saying 'up'."
    ),
}

_FIGURE_TITLES = {
    "price_forecast": "Predicted vs actual next close",
    "pred_vs_actual": "Predicted vs actual next-bar change",
    "training_loss": "Training and validation loss",
    "equity": "Equity curves",
    "drawdown": "Drawdowns",
    "confusion": "Confusion matrices",
    "fold_scores": "Accuracy and F1 per fold",
}

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0 auto;max-width:1400px;padding:1rem 1.5rem;color:#1b1b1b;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0 1rem 0}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}tr.base td{background:#eef2f7;font-weight:600}
td.good{color:#116b2e}td.bad{color:#9a1c1c}td.sig{font-weight:700}td.wrap{white-space:normal;min-width:6rem}
details.more{margin:-.5rem 0 1rem 0}details.more>summary{cursor:pointer;font-size:.85rem;color:#333}
.scroll{overflow-x:auto}figure{margin:1rem 0 2rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444;max-width:1100px}.note{font-size:.85rem;color:#444}
dl.run{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;font-size:.9rem}dl.run dt{font-weight:600}
dl.run dd{margin:0}pre{font-size:.75rem;background:#f7f7f7;padding:.5rem;overflow-x:auto}
"""

# --------------------------------------------------------------------------- formatting


def fmt_pct(v: Any, digits: int = 1, *, magnitude: bool = False, signed: bool = False) -> str:
    """A fraction as a percentage: 0.1234 -> "12.3%"; None/NaN -> "n/a"."""
    if (f := finite(v)) is None:
        return "n/a"
    f = abs(f) if magnitude else f
    return f"{100 * f:+.{digits}f}%" if signed else f"{100 * f:.{digits}f}%"


def fmt_num(v: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals, always fixed-point so that a column reads in one format
    (-0.00137 with 2 digits is "-0.00" beside "0.17", never "-1.37e-03"); "n/a" if undefined."""
    return "n/a" if (f := finite(v)) is None else f"{f:.{digits}f}"


def fmt_p(v: Any) -> str:
    """A p-value: 3 decimals, "<0.001" below that."""
    return "n/a" if (f := finite(v)) is None else "<0.001" if f < 0.001 else f"{f:.3f}"


def fmt_int(v: Any) -> str:
    return "n/a" if (f := finite(v)) is None else f"{int(round(f)):,}" if float(f).is_integer() else f"{f:,.1f}"


def esc(v: Any) -> str:
    return html.escape("n/a" if v is None else str(v), quote=True)


class Cell:
    """One table cell: already-escaped HTML text plus CSS classes."""

    __slots__ = ("html", "cls", "title")

    def __init__(self, text: Any, cls: str = "", *, raw: bool = False, title: str = "") -> None:
        self.html = str(text) if raw else esc(text)
        self.cls = cls
        self.title = title


def _attr(name: str, value: str) -> str:
    return f' {name}="{esc(value)}"' if value else ""


def html_table(headers: Sequence[str | tuple[str, str]], rows: Iterable[Sequence[Any]],
               *, row_classes: Sequence[str] | None = None, table_id: str = "") -> str:
    """An HTML table; a header may be ``(text, css_class)``; a cell may be a :class:`Cell` or a plain value."""
    out = [f'<div class="scroll"><table{_attr("id", table_id)}>', "<thead><tr>"]
    for h in headers:
        text, cls = (h if isinstance(h, tuple) else (h, ""))
        out.append(f"<th{_attr('class', cls)}>{esc(text)}</th>")
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes and i < len(row_classes) else ""
        out.append(f"<tr{_attr('class', rc)}>")
        for c in row:
            cell = c if isinstance(c, Cell) else Cell(c)
            out.append(f"<td{_attr('class', cell.cls.strip())}{_attr('title', cell.title)}>{cell.html}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


#: CSS class of each verdict outcome (the colour comes from the data, never from the text).
OUTCOME_CLASS = {"beats": "good", "worse": "bad", "not_distinguishable": "", "undefined": "", "benchmark": ""}


def verdict_cell(verdict: Verdict | None, cls: str = "") -> Cell:
    """Short verdict text, coloured by its outcome (the benchmark's own row: no colour), the full sentence
    as a tooltip; ``cls``: extra CSS classes."""
    if verdict is None:
        return Cell("—", f"l {cls}".strip())
    return Cell(verdict.short(), " ".join(c for c in ("l", OUTCOME_CLASS.get(verdict.outcome, ""), cls) if c),
                title=verdict.text())


def figure_png(fig: Figure | bytes, *, dpi: int = DPI) -> bytes:
    """PNG bytes of a figure (bytes are passed through unchanged)."""
    if isinstance(fig, (bytes, bytearray)):
        return bytes(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline stylesheet."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


# --------------------------------------------------------------------------- sections: shared

#: CSS class of the cells that answer a table's question (kept in the first columns, on screen at 1,400 px).
ANSWER = "ans"


def folded(summary: str, table: str) -> str:
    """Detail columns folded away under the table they belong to."""
    return f'<details class="more"><summary>{summary}</summary>{table}</details>'


def plural(n: int, word: str) -> str:
    """``1 symbol``, ``3 symbols``."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _repairs_line(run: RunInfo) -> str:
    """The repair counts of ``run`` in words: "N bars repaired; M signals held, K fills moved to the next ..."."""
    return (f"{plural(run.synthetic_bars, 'bar')} repaired; {plural(run.signals_held, 'signal')} held, "
            f"{plural(run.fills_moved, 'fill')} moved to the next real bar's open")


def repairs_text(run: RunInfo) -> str:
    """The run-information line on repaired bars (:func:`_repairs_line`; each symbol's counts follow with
    several symbols)."""
    text = esc(_repairs_line(run))
    if run.bars_per_symbol:
        text += " (" + "; ".join(f"{esc(s)}: {r.synthetic_bars}, {r.signals_held}, {r.fills_moved}"
                                 for s, r in run.bars_per_symbol.items()) + ")"
    return (text + ". A repaired bar was inserted or price-replaced by the data loader (data.repair); no decision is "
            "taken at its close (every portfolio keeps its previous signal), so no order is placed on it.")


def _flags_cell(flags: list[str], cls: str = "") -> Cell:
    if not flags:
        return Cell("", f"l {cls}")
    return Cell("⚑ " + ", ".join(f.split(" (")[0] for f in flags), f"l bad wrap {cls}", title="; ".join(flags))


def _ratio_cell(ratio: float | None, benchmark: bool, cls: str = "") -> Cell:
    """MSE / persistence: green below 1, red above; the persistence model itself (ratio 1 by definition)
    gets no colour: it is the benchmark, not a loser against itself."""
    if benchmark:
        return Cell(fmt_num(ratio, 3) + " (benchmark)" if ratio is not None else "— (benchmark)", cls)
    colour = "" if ratio is None else ("good" if ratio < 1 else "bad")
    return Cell(fmt_num(ratio, 3), f"{colour} {cls}".strip())


def dsr_reason(d: DeflatedSharpe) -> str:
    """Why a deflated Sharpe ratio is n/a, in words (empty when it is defined)."""
    if d.dsr is not None:
        return ""
    if not d.n_trials:
        return "no model strategies were tried"
    return d.note or (f"undefined with {plural(d.n_trials, 'trial')} and {plural(d.n_obs or 0, 'observation')}")


def _dsr_note(metrics: SymbolMetrics) -> str:
    d = metrics.deflated_sharpe
    if not d.n_trials:
        return '<p class="note" id="dsr">Deflated Sharpe ratio: n/a (no model strategies were tried).</p>'
    value = (f"DSR = {fmt_num(d.dsr, 3)}, p (one-sided: real skill) = {fmt_p(d.p_value)}" if d.dsr is not None
             else f"DSR = n/a, because {esc(dsr_reason(d))}")
    note = f" Note: {esc(d.note)}." if d.note and d.dsr is not None else ""
    return (f'<p class="note" id="dsr">Deflated Sharpe ratio of the best portfolio ({esc(d.selected)}) among '
            f"<strong>{d.n_trials} trials</strong> (every model × strategy × seed of the run; baselines not "
            f"counted; {plural(d.n_obs or 0, 'bar')}): {value}. "
            "The more trials, the higher a Sharpe ratio must be to count as skill." + note + "</p>")


# --------------------------------------------------------------------------- sections: one symbol


def _run_info(metrics: RunMetrics) -> str:
    run = metrics.run
    items = [
        ("Run", esc(run.name)),
        ("Symbol", esc(run.symbol)),
        ("Test span", f"{esc(run.first_test_bar)} → {esc(run.last_test_bar)} ({run.test_bars} bars; "
                      "forecast times t, UTC)"),
        ("Timeframe", f"{esc(run.timeframe)}; annualised with {run.periods_per_year:g} bars a year"),
        ("Fees", f"{fmt_pct(run.fees, 3)} of the order value per fill ({esc(run.fees)})"),
        ("Slippage", f"{fmt_pct(run.slippage, 3)} of the price per fill ({esc(run.slippage)})"),
        ("Repaired bars", repairs_text(run)),
        ("Verdict level", f"{run.significance_level:g} (two-sided tests; backtest.significance_level)"),
        ("Flag thresholds", f"fewer than {run.min_trades} trades, or exposure under {fmt_pct(run.min_exposure, 1)} "
                            "(backtest.min_trades, backtest.min_exposure)"),
    ]
    if run.exchange:
        items.insert(1, ("Exchange", esc(run.exchange)))
    return _run_list(items, " (with a gap of the forecast horizon)")


def _run_list(items: list[tuple[str, str]], gap: str = "") -> str:
    """The run-information list and the out-of-sample note below it (``gap``: training's end before a test block)."""
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return (f'<dl class="run" id="run-info">{dl}</dl><p class="note"><strong>Every number on this page is out of '
            f"sample:</strong> each forecast was made by a model trained only on bars before its walk-forward test "
            f"block{gap}, and every signal decided at the close of bar t is traded at the open of bar t+1, with the "
            "fees and slippage above.</p>")


def _summary_table(metrics: RunMetrics) -> str:
    rows = metrics.summary
    if not rows:
        return '<p class="note">No portfolios in the summary.</p>'
    bh = metrics.benchmark
    bh_ret = bh.total_return if bh else None
    a = ANSWER
    headers = ["#", ("Portfolio", "l"), ("Verdict vs buy & hold", f"l {a}"), ("Boot. p (2-sided)", a),
               ("Flags", f"l {a}"), "Return [%]", "vs B&H [pp]", "Sharpe", "Max DD [%]", "Trades", "Exposure [%]"]
    more_headers = [("Portfolio", "l"), "Sortino", "Precision", "Recall", "F1", "MSE / pers."]
    body, more, classes = [], [], []
    for i, r in enumerate(rows, 1):
        diff = "n/a" if r.total_return is None or bh_ret is None else f"{100 * (r.total_return - bh_ret):+.1f}"
        body.append([
            i, Cell(r.portfolio, "l"), verdict_cell(r.verdict, a), Cell(fmt_p(r.sharpe_diff_p_value_two_sided), a),
            _flags_cell(r.flags, a), fmt_pct(r.total_return, 1).rstrip("%"), diff, fmt_num(r.sharpe),
            fmt_pct(r.max_drawdown, 1, magnitude=True).rstrip("%"), fmt_int(r.trades),
            fmt_pct(r.exposure, 1).rstrip("%"),
        ])
        more.append([Cell(r.portfolio, "l"), fmt_num(r.sortino), fmt_num(r.precision, 3), fmt_num(r.recall, 3),
                     fmt_num(r.f1, 3), fmt_num(r.mse_ratio, 3)])
        classes.append("base" if r.is_baseline else "")
    level = metrics.run.significance_level
    note = ('<p class="note">Best Sharpe first (a portfolio that never trades has Sharpe 0). Returns and drawdowns in '
            '% of the starting value; "vs B&amp;H" is the difference in total return in percentage points; Sharpe '
            "and Sortino are annualised; exposure is the share of bars in the market; precision / recall / F1 are "
            "of the portfolio's long signals against the next bar's direction (n/a where undefined: a portfolio "
            "that is never long has no precision, 0/0); MSE / pers. is the model's "
            "squared forecast error divided by the no-change forecast's (below 1 is lower). "
            f'<strong>Verdict</strong>: "beats" or "worse than" buy &amp; hold only when the stationary bootstrap of '
            f"the Sharpe difference rejects equal Sharpe ratios at level {level:g} (two-sided p in the column "
            '"Boot. p (2-sided)"); otherwise "≈ B&amp;H" (not distinguishable); the buy &amp; hold row is the '
            "benchmark and gets no verdict colour. Hover a verdict for the numbers. "
            "Flags mark results from too few trades or too little time in the market. Shaded rows are "
            "baselines.</p>")
    return (html_table(headers, body, row_classes=classes, table_id="summary")
            + folded("More columns: Sortino, precision, recall, F1, MSE / persistence",
                     html_table(more_headers, more, row_classes=classes, table_id="summary-more"))
            + note + _dsr_note(metrics))


def _model_rows(metrics: SymbolMetrics) -> list[tuple[str, str, SeedModelMetrics, SeedModelMetrics | None, Verdict | None]]:
    """(model, seeds label, values block, std block or None, verdict vs persistence of the first seed) per model."""
    out = []
    for model, block in metrics.models.items():
        seed, first = block.first_seed()
        if len(block.per_seed) > 1 and block.mean is not None:
            out.append((model, f"{len(block.per_seed)} (mean ± std)", block.mean, block.std, first.verdict_vs_persistence))
        else:
            out.append((model, seed, first, None, first.verdict_vs_persistence))
    return out


def _with_std(value: str, std: Any, fmt) -> str:
    s = finite(std)
    return value if s is None or value == "n/a" else f"{value} ± {fmt(s)}"


def _models_table(metrics: SymbolMetrics, *, pooled: bool = False) -> str:
    rows = _model_rows(metrics)
    if not rows:
        return '<p class="note">No per-model metrics.</p>'
    a = ANSWER
    cls_keys = [("accuracy", "Accuracy"), ("balanced_accuracy", "Bal. acc."), ("precision", "Precision"),
                ("recall", "Recall"), ("f1", "F1"), ("mcc", "MCC")]
    cnt_keys = [("tp", "TP"), ("fp", "FP"), ("tn", "TN"), ("fn", "FN")]
    headers = [("Model", "l"), ("Seeds", "l"), ("Verdict vs persistence", f"l {a}"), ("MSE / persistence", a),
               ("DM p (two-sided)", a), ("PT p (one-sided: skill)", a), "Accuracy", "F1", "RMSE [log ret]"]
    more_headers = ([("Model", "l")] + [h for k, h in cls_keys if k not in ("accuracy", "f1")] + [h for _, h in cnt_keys]
                    + ["Up share [%]", "MAE [log ret]"] + ([] if pooled else ["Price MAE", "Price RMSE"])
                    + ["DM stat", "DM p (one-sided: model better)", "PT stat"])
    level = metrics.run.significance_level
    body, more = [], []
    for model, seeds, vals, std, verdict in rows:
        c, sc = vals.classification, (std.classification if std else None)
        reg, dm, pt = vals.regression, vals.significance.diebold_mariano, vals.significance.pesaran_timmermann
        is_bench = metrics.models[model].type == "persistence"

        def with_std(k: str) -> str:
            return _with_std(fmt_num(getattr(c, k), 3), getattr(sc, k) if sc else None, lambda s: f"{s:.3f}")

        def p_cell(p: float | None, cls: str = "") -> Cell:
            return Cell(fmt_p(p), ("sig " if p is not None and p < level else "") + cls)

        body.append([Cell(model, "l"), Cell(seeds, "l"),
                     verdict_cell(verdict, a) if verdict else Cell("— (the benchmark)", f"l {a}"),
                     _ratio_cell(reg.mse_ratio, is_bench, a), p_cell(dm.p_value_two_sided, a),
                     p_cell(pt.p_value_one_sided_skill, a), with_std("accuracy"), with_std("f1"), fmt_num(reg.rmse, 5)])
        row: list[Any] = [Cell(model, "l")] + [with_std(k) for k, _ in cls_keys if k not in ("accuracy", "f1")]
        row += [fmt_int(getattr(c, k)) for k, _ in cnt_keys]
        row += [fmt_pct(c.base_rate, 1).rstrip("%"), fmt_num(reg.mae, 5)]
        if not pooled:
            row += [fmt_num(reg.price_mae, 2), fmt_num(reg.price_rmse, 2)]
        row += [fmt_num(dm.statistic, 2), p_cell(dm.p_value_one_sided_model_better), fmt_num(pt.statistic, 2)]
        more.append(row)
    note = ('<p class="note">Direction metrics treat "up" as next-bar log return &gt; 0; TP/FP/TN/FN are counts of '
            "forecasts (means over seeds when several). RMSE/MAE are of the next-bar log return"
            + ("; pooled over every symbol's test bars (price errors left out: they would mix the symbols' price "
               "scales; the pooled DM test treats the stacked loss differentials as one sample)" if pooled
               else "; price errors are in the quote currency")
            + ". MSE / persistence &lt; 1 means a lower squared error than the no-change "
            "forecast; the persistence model is that benchmark (no colour). DM: Diebold–Mariano test (HLN-corrected) "
            "of equal squared error against persistence, two-sided and one-sided (H1: the model's error is lower); "
            "PT: Pesaran–Timmermann test of no "
            f"directional skill, one-sided (H1: skill). p-values below {level:g} (bold) reject the null. The verdict "
            f'says "beats" / "worse than" persistence only when the two-sided DM test rejects at {level:g}; with '
            "several seeds it is the lowest seed's.</p>")
    tid = "pooled" if pooled else "models"
    return (html_table(headers, body, table_id=tid)
            + folded("More columns: balanced accuracy, precision, recall, MCC, confusion counts, MAE"
                     + ("" if pooled else ", price errors") + ", DM and PT statistics",
                     html_table(more_headers, more, table_id=f"{tid}-more")) + note)


def _figures_section(figures: Mapping[str, Figure | bytes]) -> str:
    parts = []
    for name, fig in figures.items():
        png = figure_png(fig)
        title = _FIGURE_TITLES.get(name, name.replace("_", " ").capitalize())
        caption = CAPTIONS.get(name, "")
        parts.append(f'<figure id="fig-{esc(name)}"><h3>{esc(title)}</h3>{img_tag(png, title)}'
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    return "\n".join(parts) if parts else '<p class="note">No figures.</p>'


# --------------------------------------------------------------------------- sections: several symbols


def _annual(run: RunInfo) -> str:
    return f"ann., {run.timeframe} bars, {fmt_int(run.periods_per_year)} bars/yr"


def _beat_cells(bc: BeatCount | None) -> list[Any]:
    a = ANSWER
    if bc is None:
        return [Cell("—", a) for _ in range(4)]
    n = bc.n_symbols
    return [Cell(f"{bc.point}/{n}", a), Cell(f"{bc.raw}/{n}", a), Cell(f"{bc.holm}/{n}", ("sig " if bc.holm else "") + a),
            Cell(f"{bc.bh}/{n}", ("sig " if bc.bh else "") + a)]


def _universe_summary(m: RunMetrics) -> str:
    ann = _annual(m.run)
    a = ANSWER
    headers = [("Portfolio", "l"), ("Verdict vs EW B&H", f"l {a}"),
               ("B&H beaten: point", a), ("raw p", a), ("Holm", a), ("BH", a),
               ("Persistence beaten: point", a), ("raw p", a), ("Holm", a), ("BH", a), ("Flags", f"l {a}"),
               f"Sharpe ({ann})"]
    more_headers = [("Portfolio", "l"), ("Model", "l"), ("Strategy", "l"), "Sharpe", "EW B&H Sharpe",
                    "Boot. p (2-sided)", "Return [%]", "EW B&H return [%]", "Max DD [%]", "EW B&H max DD [%]",
                    "Precision", "Recall", "F1"]
    body, more, classes = [], [], []
    for r in m.summary:
        body.append([Cell(r.portfolio, "l"), verdict_cell(r.verdict, a)]
                    + _beat_cells(r.beats_buy_and_hold) + _beat_cells(r.beats_persistence)
                    + [_flags_cell(r.flags, a), fmt_num(r.sharpe)])
        more.append([Cell(r.portfolio, "l"), Cell(r.model or "—", "l"), Cell(r.strategy, "l"), fmt_num(r.sharpe),
                     fmt_num(r.bh_sharpe), fmt_p(r.sharpe_diff_p_value_two_sided),
                     fmt_pct(r.total_return).rstrip("%"), fmt_pct(r.bh_total_return).rstrip("%"),
                     fmt_pct(r.max_drawdown, magnitude=True).rstrip("%"),
                     fmt_pct(r.bh_max_drawdown, magnitude=True).rstrip("%"),
                     fmt_num(r.precision, 3), fmt_num(r.recall, 3), fmt_num(r.f1, 3)])
        classes.append("base" if r.model is None else "")
    alpha = m.run.significance_level
    note = (f'<p class="note">Universe portfolios, best Sharpe first; EW B&amp;H is the equal-weight buy &amp; hold of '
            f"the universe (the benchmark row: no verdict colour). \"B&amp;H beaten\": symbols on which the strategy's "
            f"own portfolio has a higher Sharpe ratio than that symbol's buy &amp; hold (two-sided stationary-bootstrap "
            f"test); \"Persistence beaten\": symbols on which the model's squared error is lower than the no-change "
            f"forecast's (two-sided Diebold-Mariano). "
            f"<em>point</em>: the point estimate is better; <em>raw p</em>: two-sided p &lt; {alpha:g} without correction, "
            f"point estimate better; <em>Holm</em> (family-wise error) and <em>BH</em> (Benjamini-Hochberg, false "
            f"discovery rate): the same with the adjusted two-sided p, the family being the symbols of that row. "
            f"The verdict is coloured by its outcome: \"beats\" only when the two-sided bootstrap rejects at {alpha:g}. "
            f"Shaded rows are baselines; — : not applicable (baselines, the persistence model itself).</p>")
    return (html_table(headers, body, row_classes=classes, table_id="symbols-beaten")
            + folded("More columns: Sharpe, return and drawdown beside the equal-weight buy &amp; hold, bootstrap p, "
                     "precision, recall, F1",
                     html_table(more_headers, more, row_classes=classes, table_id="symbols-beaten-more")) + note)


def _universe_run_info(m: RunMetrics) -> str:
    run = m.run
    syms = m.universe.symbols if m.universe else {}

    def span(s: str) -> str:
        info = syms.get(s)
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
        ("Repaired bars", repairs_text(run) + " Per symbol: bars repaired, signals held, fills moved."),
        ("Models", "pooled: one model per network type trained on every symbol" if run.pooled
         else "one model per symbol"),
        ("Rebalancing", esc(run.rebalancing)),
        ("Baselines", esc(run.baselines)),
        ("Multiple testing", esc(run.multiple_testing)),
        ("Flags", f"fewer than {run.min_trades} trades, or exposure below {fmt_pct(run.min_exposure, 1)} of the bars"),
    ]
    return _run_list(items)


def _dsr_table(m: RunMetrics) -> str:
    ppy = m.run.periods_per_year
    headers = [("Trials", "l"), ("Selected (best Sharpe)", "l"), f"Sharpe ({_annual(m.run)})", "Trials tried",
               "Deflated Sharpe", "p (selection luck)", ("Why n/a / note", "l wrap")]
    body = []
    blocks = [("universe portfolios", m.deflated_sharpe)]
    if m.universe is not None:
        blocks.insert(0, ("every symbol × model × strategy", m.universe.deflated_sharpe_symbols))
    for title, d in blocks:
        why = dsr_reason(d) if d.dsr is None else (d.note or "")
        body.append([Cell(title, "l"), Cell(d.selected or "—", "l"),
                     fmt_num(None if d.sharpe is None else d.sharpe * np.sqrt(ppy)), fmt_int(d.n_trials),
                     fmt_num(d.dsr, 3), fmt_p(d.p_value), Cell(why, "l wrap")])
    note = ('<p class="note">Deflated Sharpe ratio (Bailey &amp; López de Prado 2014): the probability that the best '
            "of the trials has a true Sharpe ratio above the best of as many skill-less trials; above 0.95 rejects "
            "selection luck at 5%. Where it is n/a the last column says why.</p>")
    return html_table(headers, body, table_id="deflated") + note


def _symbol_section(m: RunMetrics, symbol: str, png: bytes | None) -> str:
    info = m.universe.symbols.get(symbol) if m.universe else None
    if info is None:
        return ""
    ann = _annual(m.run)
    headers = [("Portfolio", "l"), ("Verdict vs B&H", "l"), "Boot. p (2-sided)", ("Flags", "l"), f"Sharpe ({ann})",
               f"Sharpe − B&H ({ann})", "Return [%]", "Max DD [%]", "Trades", "Exposure [%]"]
    bh = info.benchmark
    body, classes = [], []
    for lab, b in info.portfolios.items():
        p, sd = b.portfolio, b.sharpe_vs_buy_and_hold
        diff = None if p.sharpe is None or bh is None or bh.sharpe is None else p.sharpe - bh.sharpe
        body.append([Cell(lab, "l"), verdict_cell(b.verdict), fmt_p(sd.p_value_two_sided if sd else None),
                     _flags_cell(b.flags), fmt_num(p.sharpe), fmt_num(diff), fmt_pct(p.total_return).rstrip("%"),
                     fmt_pct(p.max_drawdown, magnitude=True).rstrip("%"), fmt_int(p.trades),
                     fmt_pct(p.exposure).rstrip("%")])
        classes.append("base" if b.model is None else "")
    mh = [("Model", "l"), ("Seed", "l"), ("Verdict vs persistence", "l"), "MSE / persistence", "DM p (2-sided)",
          "PT p (1-sided, skill)", "Accuracy", "F1", "RMSE [log ret]", "Price MAE", "DM stat"]
    mb = []
    for model, block in info.models.items():
        for seed, v in block.per_seed.items():
            c, r, s = v.classification, v.regression, v.significance
            mb.append([Cell(model, "l"), Cell(seed, "l"),
                       verdict_cell(v.verdict_vs_persistence) if v.verdict_vs_persistence else Cell("— (the benchmark)", "l"),
                       _ratio_cell(r.mse_ratio, block.type == "persistence"),
                       fmt_p(s.diebold_mariano.p_value_two_sided), fmt_p(s.pesaran_timmermann.p_value_one_sided_skill),
                       fmt_num(c.accuracy, 3), fmt_num(c.f1, 3), fmt_num(r.rmse, 5), fmt_num(r.price_mae, 4),
                       fmt_num(s.diebold_mariano.statistic)])
    fig = (f'<figure>{img_tag(png, f"equity {symbol}")}<figcaption>Equity of every portfolio of {esc(symbol)} alone '
           "(its own cash), log scale; signals decided at the close of bar t are traded at the open of t+1."
           "</figcaption></figure>") if png else ""
    span = f"{esc(info.run.first_test_bar[:10])} → {esc(info.run.last_test_bar[:10])}"
    return (f'<details id="symbol-{esc(symbol)}"><summary><strong>{esc(symbol)}</strong> — test bars {span}</summary>'
            f'<p class="note">{_repairs_line(info.run)}.</p>'
            + html_table(headers, body, row_classes=classes) + html_table(mh, mb) + fig + "</details>")


# --------------------------------------------------------------------------- the page


def render_report(metrics: RunMetrics, figures: Mapping[str, Figure | bytes], *, title: str,
                  heat_metric: str = "sharpe_diff") -> str:
    """The run report as one self-contained HTML page (pure); sections adapt to the number of symbols.

    One symbol, top to bottom: the summary table (``metrics.summary`` in its given order, best first, each
    portfolio against buy & hold with its verdict), run information, the per-model metrics table, then
    every figure (embedded as ``data:image/png;base64``) with a caption saying what it shows and how it
    is aligned in time. Several symbols: the universe portfolios against the equal-weight buy & hold with
    the counts of symbols beaten (table ``symbols-beaten``), run information, a heat map per symbol,
    universe equity and drawdown, forecast quality pooled over the symbols, the deflated Sharpe and one
    folded section per symbol; ``figures`` then holds ``heatmap``, ``universe_equity``,
    ``universe_drawdown`` and ``equity_<i>`` per symbol (i = position in ``run.symbols``). ``figures``
    values may be Figures or PNG bytes.
    """
    if metrics.universe is None:
        body = [
            f"<h1>{esc(title)}</h1>",
            f"<h2>Summary: every portfolio of {esc(metrics.run.symbol)} against buy &amp; hold</h2>",
            _summary_table(metrics),
            "<h2>Run</h2>",
            _run_info(metrics),
            "<h2>Forecast quality per model</h2>",
            _models_table(metrics),
            "<h2>Figures</h2>",
            _figures_section(figures),
        ]
        return page(title, "\n".join(body))
    from reports.figures import HEAT_METRICS

    m = metrics
    pngs = {k: figure_png(v) for k, v in figures.items()}

    def fig(name: str, caption: str) -> str:
        return (f'<figure id="fig-{name}">{img_tag(pngs[name], name)}<figcaption>{caption}</figcaption></figure>'
                if name in pngs else "")

    body = [
        f"<h1>{esc(title)}</h1>",
        f"<h2>On how many of the {plural(m.run.n_symbols, 'symbol')} does each model beat the baselines?</h2>",
        _universe_summary(m),
        "<h2>Run</h2>", _universe_run_info(m),
        f"<h2>Per symbol: {esc(HEAT_METRICS[heat_metric])}</h2>",
        fig("heatmap", f"{esc(HEAT_METRICS[heat_metric])}, for each model × strategy (rows) on each symbol "
                       f"(columns), each symbol over its own test bars ({_annual(m.run)} where annualised). The Sharpe "
                       "ratios are those of the symbol tables below: a portfolio that never trades has Sharpe 0, so its "
                       "cell shows 0 minus buy &amp; hold's Sharpe. Grey: undefined."),
        "<h2>Universe portfolio</h2>",
        fig("universe_equity", "Value of each universe portfolio after every bar, fees and slippage paid, log scale; "
                               "black: equal-weight buy &amp; hold of the universe. Equal weight among the symbols "
                               "long, cash shared, rebalanced at the next open when the long set changes."),
        fig("universe_drawdown", "Drawdown from the running high, 100·(equity / running maximum − 1) in %."),
        "<h2>Forecast quality pooled over symbols</h2>", _models_table(m, pooled=True),
        "<h2>Deflated Sharpe</h2>", _dsr_table(m),
        "<h2>Symbols</h2>",
    ]
    for i, s in enumerate(m.run.symbols):
        body.append(_symbol_section(m, s, pngs.get(f"equity_{i}")))
    return page(title, "\n".join(body))


# --------------------------------------------------------------------------- files


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "figure"


def save_figures(figures: Mapping[str, Figure | bytes], folder: str | Path) -> list[Path]:
    """Write each figure to ``folder/<name>.png`` (dpi :data:`DPI`, atomic); return the paths in order."""
    folder = Path(folder)
    return [write_bytes(folder / f"{_safe_name(name)}.png", figure_png(fig)) for name, fig in figures.items()]


def write_report(run_dir: str | Path, metrics: RunMetrics, predictions: pd.DataFrame,
                 history: pd.DataFrame, equity: pd.DataFrame, *, heat_metric: str = "sharpe_diff") -> Path:
    """Make every figure, write ``run_dir/figures/*.png`` and ``run_dir/report.html``; return the report path.

    One symbol: the figures of :func:`reports.figures.all_figures`. Several symbols: the heat map of
    ``heat_metric`` (:data:`reports.figures.HEAT_METRICS`), the universe equity and drawdown (``equity``
    columns named by label) and each symbol's equity (columns ``label[SYMBOL]``). Each figure is rendered
    to PNG once, saved and embedded, then cleared so its memory is released even when many runs are
    reported in one process.
    """
    from reports.figures import all_figures, universe_figures

    run_dir = Path(run_dir)
    figures = (all_figures(predictions, history, equity, metrics) if metrics.universe is None
               else universe_figures(metrics, equity, heat_metric))
    try:
        pngs = {name: figure_png(fig) for name, fig in figures.items()}
    finally:
        for fig in figures.values():
            fig.clear()
    save_figures(pngs, run_dir / "figures")
    name = metrics.run.name or run_dir.name
    text = render_report(metrics, pngs, title=f"walkforward report: {name}", heat_metric=heat_metric)
    return write_text(run_dir / "report.html", text)
