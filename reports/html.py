"""The run report: one self-contained HTML page (inline CSS, PNGs embedded as base64).

The page opens offline: no scripts, no stylesheets or fonts from elsewhere, no
external URLs. Numbers are kept as fractions in ``metrics.json`` and converted
to percentages only here, for display; an undefined value (JSON ``null``, NaN)
is shown as "n/a".

Public surface:

* :func:`render_report` -- metrics + figures -> HTML string (pure).
* :func:`save_figures` -- figures -> ``folder/<name>.png`` (atomic writes).
* :func:`write_report` -- everything for one run directory: ``figures/*.png`` and ``report.html``.
"""
from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from backtest.atomic import write_bytes, write_text
from backtest.schema import RunMetrics, SeedModelMetrics, Verdict, finite

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
.scroll{overflow-x:auto}figure{margin:1rem 0 2rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444;max-width:1100px}.note{font-size:.85rem;color:#444}
dl.run{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;font-size:.9rem}dl.run dt{font-weight:600}
dl.run dd{margin:0}pre{font-size:.75rem;background:#f7f7f7;padding:.5rem;overflow-x:auto}
"""

# --------------------------------------------------------------------------- formatting


def _num(v: Any) -> float | None:
    """``v`` as a finite float, or None (None, NaN, inf, strings that are not numbers)."""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    return finite(v)


def fmt_pct(v: Any, digits: int = 1, *, magnitude: bool = False, signed: bool = False) -> str:
    """A fraction as a percentage: 0.1234 -> "12.3%"; None/NaN -> "n/a"."""
    f = _num(v)
    if f is None:
        return "n/a"
    f = abs(f) if magnitude else f
    return f"{100 * f:+.{digits}f}%" if signed else f"{100 * f:.{digits}f}%"


def fmt_num(v: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals (very small or large ones in scientific notation); "n/a" if undefined."""
    f = _num(v)
    if f is None:
        return "n/a"
    if f != 0 and (abs(f) < 10 ** (-digits) or abs(f) >= 1e7):
        return f"{f:.{max(digits, 2)}e}"
    return f"{f:.{digits}f}"


def fmt_p(v: Any) -> str:
    """A p-value: 3 decimals, "<0.001" below that."""
    f = _num(v)
    if f is None:
        return "n/a"
    return "<0.001" if f < 0.001 else f"{f:.3f}"


def fmt_int(v: Any) -> str:
    f = _num(v)
    if f is None:
        return "n/a"
    return f"{int(round(f)):,}" if float(f).is_integer() else f"{f:,.1f}"


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


def verdict_class(verdict: Verdict | None) -> str:
    """CSS class for a verdict: "good" for ``beats``, "bad" for ``worse``, none otherwise."""
    return "" if verdict is None else OUTCOME_CLASS.get(verdict.outcome, "")


def verdict_cell(verdict: Verdict | None) -> Cell:
    """Short verdict text, coloured by its outcome, the full sentence as a tooltip."""
    if verdict is None:
        return Cell("—", "l")
    return Cell(verdict.short(), "l " + verdict_class(verdict), title=verdict.text())


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


# --------------------------------------------------------------------------- sections


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
        ("Verdict level", f"{run.significance_level:g} (two-sided tests; backtest.significance_level)"),
        ("Flag thresholds", f"fewer than {run.min_trades} trades, or exposure under {fmt_pct(run.min_exposure, 1)} "
                            "(backtest.min_trades, backtest.min_exposure)"),
    ]
    if run.exchange:
        items.insert(1, ("Exchange", esc(run.exchange)))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return (f'<dl class="run">{dl}</dl>'
            '<p class="note"><strong>Every number on this page is out of sample:</strong> each forecast was made '
            "by a model trained only on bars before its walk-forward test block (with a gap of the forecast "
            "horizon), and every signal decided at the close of bar t is traded at the open of bar t+1, with "
            "the fees and slippage above.</p>")


def _dsr_note(metrics: RunMetrics) -> str:
    d = metrics.deflated_sharpe
    if not d.n_trials:
        return '<p class="note">Deflated Sharpe ratio: no model strategies were tried.</p>'
    return (f'<p class="note" id="dsr">Deflated Sharpe ratio of the best portfolio ({esc(d.selected)}) among '
            f"<strong>{d.n_trials} trials</strong> (every model × strategy × seed of the run; baselines not "
            f"counted): DSR = {fmt_num(d.dsr, 3)}, p (one-sided: real skill) = {fmt_p(d.p_value)}. "
            "The more trials, the higher a Sharpe ratio must be to count as skill."
            + (f" Note: {esc(d.note)}." if d.note else "") + "</p>")


def _summary_table(metrics: RunMetrics) -> str:
    rows = metrics.summary
    if not rows:
        return '<p class="note">No portfolios in the summary.</p>'
    bh = metrics.benchmark
    bh_ret = bh.total_return if bh else None
    headers = ["#", ("Portfolio", "l"), "Return [%]", "vs B&H [pp]", "Sharpe", "Sortino", "Max DD [%]",
               "Trades", "Exposure [%]", "Precision", "Recall", "F1", "MSE / pers.", "Boot. p (2-sided)",
               ("Verdict vs buy & hold", "l"), ("Flags", "l")]
    body, classes = [], []
    for i, r in enumerate(rows, 1):
        diff = "n/a" if r.total_return is None or bh_ret is None else f"{100 * (r.total_return - bh_ret):+.1f}"
        flags = (Cell("⚑ " + ", ".join(f.split(" (")[0] for f in r.flags), "l bad wrap", title="; ".join(r.flags))
                 if r.flags else Cell("", "l"))
        body.append([
            i, Cell(r.portfolio, "l"),
            fmt_pct(r.total_return, 1).rstrip("%"), diff, fmt_num(r.sharpe), fmt_num(r.sortino),
            fmt_pct(r.max_drawdown, 1, magnitude=True).rstrip("%"), fmt_int(r.trades),
            fmt_pct(r.exposure, 1).rstrip("%"), fmt_num(r.precision, 3), fmt_num(r.recall, 3), fmt_num(r.f1, 3),
            fmt_num(r.mse_ratio, 3), fmt_p(r.sharpe_diff_p_value_two_sided), verdict_cell(r.verdict), flags,
        ])
        classes.append("base" if r.is_baseline else "")
    level = metrics.run.significance_level
    note = ('<p class="note">Best Sharpe first (a portfolio that never trades has Sharpe 0). Returns and drawdowns in '
            '% of the starting value; "vs B&amp;H" is the difference in total return in percentage points; Sharpe '
            "and Sortino are annualised; exposure is the share of bars in the market; precision / recall / F1 are "
            "of the portfolio's long signals against the next bar's direction; MSE / pers. is the model's "
            "squared forecast error divided by the no-change forecast's (below 1 is lower). "
            f'<strong>Verdict</strong>: "beats" or "worse than" buy &amp; hold only when the stationary bootstrap of '
            f"the Sharpe difference rejects equal Sharpe ratios at level {level:g} (two-sided p in the column "
            '"Boot. p (2-sided)"); otherwise "≈ B&amp;H" (not distinguishable). Hover a verdict for the numbers. '
            "Flags mark results from too few trades or too little time in the market. Shaded rows are "
            "baselines.</p>")
    return html_table(headers, body, row_classes=classes, table_id="summary") + note + _dsr_note(metrics)


def _model_rows(metrics: RunMetrics) -> list[tuple[str, str, SeedModelMetrics, SeedModelMetrics | None, Verdict | None]]:
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
    s = _num(std)
    return value if s is None or value == "n/a" else f"{value} ± {fmt(s)}"


def _models_table(metrics: RunMetrics) -> str:
    rows = _model_rows(metrics)
    if not rows:
        return '<p class="note">No per-model metrics.</p>'
    cls_keys = [("accuracy", "Accuracy"), ("balanced_accuracy", "Bal. acc."), ("precision", "Precision"),
                ("recall", "Recall"), ("f1", "F1"), ("mcc", "MCC")]
    cnt_keys = [("tp", "TP"), ("fp", "FP"), ("tn", "TN"), ("fn", "FN")]
    headers = ([("Model", "l"), ("Seeds", "l")] + [h for _, h in cls_keys] + [h for _, h in cnt_keys]
               + ["Up share [%]", "RMSE [log ret]", "MAE [log ret]", "Price MAE", "Price RMSE",
                  "MSE / persistence", "DM stat", "DM p (two-sided)", "DM p (one-sided: model better)", "PT stat",
                  "PT p (one-sided: skill)", ("Verdict vs persistence", "l")])
    level = metrics.run.significance_level
    body = []
    for model, seeds, vals, std, verdict in rows:
        c, sc = vals.classification, (std.classification if std else None)
        reg, dm, pt = vals.regression, vals.significance.diebold_mariano, vals.significance.pesaran_timmermann
        row: list[Any] = [Cell(model, "l"), Cell(seeds, "l")]
        for k, _ in cls_keys:
            row.append(_with_std(fmt_num(getattr(c, k), 3), getattr(sc, k) if sc else None, lambda s: f"{s:.3f}"))
        for k, _ in cnt_keys:
            row.append(fmt_int(getattr(c, k)))
        row.append(fmt_pct(c.base_rate, 1).rstrip("%"))
        row += [fmt_num(reg.rmse, 5), fmt_num(reg.mae, 5), fmt_num(reg.price_mae, 2), fmt_num(reg.price_rmse, 2)]
        ratio = reg.mse_ratio
        row.append(Cell(fmt_num(ratio, 3), "" if ratio is None else ("good" if ratio < 1 else "bad")))
        row.append(fmt_num(dm.statistic, 2))
        for p in (dm.p_value_two_sided, dm.p_value_one_sided_model_better):
            row.append(Cell(fmt_p(p), "sig" if p is not None and p < level else ""))
        row.append(fmt_num(pt.statistic, 2))
        row.append(Cell(fmt_p(pt.p_value_one_sided_skill),
                        "sig" if pt.p_value_one_sided_skill is not None and pt.p_value_one_sided_skill < level else ""))
        row.append(verdict_cell(verdict) if verdict else Cell("— (the benchmark)", "l"))
        body.append(row)
    note = ('<p class="note">Direction metrics treat "up" as next-bar log return &gt; 0; TP/FP/TN/FN are counts of '
            "forecasts (means over seeds when several). RMSE/MAE are of the next-bar log return; price errors are "
            "in the quote currency. MSE / persistence &lt; 1 means a lower squared error than the no-change "
            "forecast. DM: Diebold–Mariano test (HLN-corrected) of equal squared error against persistence, "
            "two-sided and one-sided (H1: the model's error is lower); PT: Pesaran–Timmermann test of no "
            f"directional skill, one-sided (H1: skill). p-values below {level:g} (bold) reject the null. The verdict "
            f'says "beats" / "worse than" persistence only when the two-sided DM test rejects at {level:g}; with '
            "several seeds it is the lowest seed's.</p>")
    return html_table(headers, body, table_id="models") + note


def _figures_section(figures: Mapping[str, Figure | bytes]) -> str:
    parts = []
    for name, fig in figures.items():
        png = figure_png(fig)
        title = _FIGURE_TITLES.get(name, name.replace("_", " ").capitalize())
        caption = CAPTIONS.get(name, "")
        parts.append(f'<figure id="fig-{esc(name)}"><h3>{esc(title)}</h3>{img_tag(png, title)}'
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    return "\n".join(parts) if parts else '<p class="note">No figures.</p>'


def render_report(metrics: RunMetrics, figures: Mapping[str, Figure | bytes], *, title: str) -> str:
    """The run report as one self-contained HTML page.

    Sections, top to bottom: the summary table (``metrics.summary`` in its
    given order, best first, each portfolio against buy & hold with its
    verdict), run information, the per-model metrics table, then every figure
    (embedded as ``data:image/png;base64``) with a caption saying what it shows
    and how it is aligned in time. ``figures`` values may be Figures or PNG bytes.
    """
    body = [
        f"<h1>{esc(title)}</h1>",
        "<h2>Summary: every portfolio against buy &amp; hold</h2>",
        _summary_table(metrics),
        "<h2>Run</h2>",
        _run_info(metrics),
        "<h2>Forecast quality per model</h2>",
        _models_table(metrics),
        "<h2>Figures</h2>",
        _figures_section(figures),
    ]
    return page(title, "\n".join(body))


# --------------------------------------------------------------------------- files


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "figure"


def save_figures(figures: Mapping[str, Figure | bytes], folder: str | Path) -> list[Path]:
    """Write each figure to ``folder/<name>.png`` (dpi :data:`DPI`, atomic); return the paths in order."""
    folder = Path(folder)
    return [write_bytes(folder / f"{_safe_name(name)}.png", figure_png(fig)) for name, fig in figures.items()]


def write_report(run_dir: str | Path, metrics: RunMetrics, predictions: pd.DataFrame,
                 history: pd.DataFrame, equity: pd.DataFrame) -> Path:
    """Make every figure, write ``run_dir/figures/*.png`` and ``run_dir/report.html``; return the report path.

    Each figure is rendered to PNG once, saved and embedded, then cleared so its
    memory is released even when many runs are reported in one process.
    """
    from reports.figures import all_figures

    run_dir = Path(run_dir)
    figures = all_figures(predictions, history, equity, metrics)
    try:
        pngs = {name: figure_png(fig) for name, fig in figures.items()}
    finally:
        for fig in figures.values():
            fig.clear()
    save_figures(pngs, run_dir / "figures")
    name = metrics.run.name or run_dir.name
    text = render_report(metrics, pngs, title=f"walkforward report: {name}")
    return write_text(run_dir / "report.html", text)
