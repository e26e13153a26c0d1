"""Report figures: pure functions from run data to :class:`matplotlib.figure.Figure`.

Every function takes the run-directory data as the engine writes it (docs/design.md, "Run directory")
and returns a new Figure built with the object-oriented API (no pyplot, no global state, Agg-compatible),
so it can be called from worker processes and tests alike. Nothing here reads files.

Time alignment, as everywhere in the project: a prediction row is stamped with
bar ``t``, the last bar whose close the forecast saw; ``y_pred`` and ``y_true``
are log returns of the *next* bar, ``r[t+1] = ln(close[t+1] / close[t])``.
The figures plot each forecast at its stamp ``t`` (the decision time), so a
predicted next close and the actual next close share one x position.

Readability rules, for 8 years of daily bars and up to 20 models: thin lines,
colours cycling through ``tab20``, legends outside the axes, one panel per model
(small multiples) once overlaying would be unreadable, log scale for prices and
equity, concise date axes in UTC.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything touches pyplot; we never import pyplot ourselves

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from backtest.schema import ModelMetrics, RunMetrics, finite  # noqa: E402

__all__ = ["FIGURE_NAMES", "HEAT_METRICS", "heat_matrix", "heat_map", "universe_figures", "BASELINES", "price_forecast",
           "pred_vs_actual", "training_loss", "equity_curves", "drawdown", "confusion_matrices", "fold_scores",
           "fold_score_table", "all_figures"]

#: Stable figure names, in report order (also the PNG file stems).
FIGURE_NAMES = ("price_forecast", "pred_vs_actual", "training_loss", "equity", "drawdown", "confusion", "fold_scores")
#: Baseline portfolio labels in ``equity.csv`` and ``metrics["summary"]``.
BASELINES = ("buy_and_hold", "always_flat", "sma_cross")

_WIDTH = 12.0  # inches; with dpi 110 about 1,320 px, the width of a report page
_PANEL_H = 2.6  # inches per row of small multiples
_MAX_OVERLAY = 4  # models overlaid in one axes before switching to small multiples
_MAX_OVERLAY_PORTFOLIOS = 12  # equity / drawdown lines overlaid before small multiples
_BASELINE_STYLE = {
    "buy_and_hold": {"color": "black", "linewidth": 1.8, "linestyle": "-", "zorder": 5},
    "always_flat": {"color": "0.55", "linewidth": 1.0, "linestyle": "--", "zorder": 4},
    "sma_cross": {"color": "0.35", "linewidth": 1.0, "linestyle": ":", "zorder": 4},
}


# --------------------------------------------------------------------------- helpers


def _color(i: int) -> tuple[float, float, float, float]:
    """The ``i``-th series colour: tab20's ten dark shades first, then its ten light ones, cycling.

    So up to ten series get clearly distinct colours and twenty stay distinguishable.
    """
    k = i % 20
    return matplotlib.colormaps["tab20"](2 * k if k < 10 else 2 * (k - 10) + 1)


def _naive_utc(values: Any) -> np.ndarray:
    """Timestamps as tz-naive UTC ``datetime64[ns]`` (what matplotlib plots fastest)."""
    idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return idx.tz_convert("UTC").tz_localize(None).to_numpy()


def _date_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _ncols(n: int) -> int:
    return 1 if n <= 1 else 2 if n <= 4 else 3 if n <= 9 else 4


def _grid(n: int, *, sharex: bool = True, sharey: bool = False, panel_h: float = _PANEL_H,
          ncols: int | None = None, legend: bool = False, title_lines: int = 1, xlabels_each_row: bool = False,
          width: float = _WIDTH, square: bool = False) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels in a grid; unused cells are hidden. Returns the first ``n`` axes.

    Margins and gaps are fixed in inches (room for the suptitle, panel titles,
    tick labels, a figure-level x/y label and, with ``legend``, a legend on the
    right) instead of a layout engine (``square``: panels as tall as wide): constrained layout costs seconds per
    20-panel figure and the grid is regular anyway.
    """
    ncols = ncols or _ncols(n)
    nrows = max(1, math.ceil(n / ncols))
    left, right = 1.0, (2.0 if legend else 0.25)
    top, bottom = 0.6 + 0.2 * title_lines, 0.8
    row_gap = 0.1 + 0.22 * title_lines + (0.45 if (xlabels_each_row or not sharex) else 0.0)
    col_gap = 0.3 if sharey else 0.75
    axes_w = (width - left - right - (ncols - 1) * col_gap) / ncols
    panel_h = axes_w if square else panel_h
    height = top + bottom + nrows * panel_h + (nrows - 1) * row_gap
    fig = Figure(figsize=(width, height))
    grid = {"left": left / width, "right": 1 - right / width, "top": 1 - top / height, "bottom": bottom / height,
            "hspace": row_gap / panel_h, "wspace": col_gap / axes_w}
    cells = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False, gridspec_kw=grid)
    for k, ax in enumerate(cells.ravel()):
        if k >= n:
            ax.set_visible(False)
        elif sharex and k + ncols >= n:  # nothing visible below: this panel needs its own x tick labels
            ax.xaxis.set_tick_params(which="both", labelbottom=True)
            ax.xaxis.offsetText.set_visible(True)
    return fig, cells.ravel().tolist()[:n]


def _panel_title(ax: Axes, text: str, fontsize: str = "medium") -> None:
    # an explicit y turns off matplotlib's automatic title placement, which measures every
    # tick of the axes and costs about a second per 20-panel figure; our grids leave room for it
    ax.set_title(text, fontsize=fontsize, y=1.0, pad=3)


class _CompactLogFormatter(mticker.Formatter):
    """Tick labels like 500, 2k, 10k, 1.5M; minor ticks (2 and 5) labelled only over <= 3 decades."""

    def __init__(self, minor: bool) -> None:
        self.minor = minor

    def __call__(self, x: float, pos: int | None = None) -> str:
        if self.minor and self.axis is not None:
            lo, hi = self.axis.get_view_interval()
            if lo <= 0 or hi / lo > 1e3:
                return ""
        return _compact(x)


def _compact(x: float) -> str:
    a = abs(x)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def _log_y(ax: Axes) -> None:
    """Log y axis, ticks at 1, 2 and 5 per decade with compact plain-number labels (2k, 10k, ...)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_CompactLogFormatter(minor=False))
    ax.yaxis.set_minor_locator(mticker.LogLocator(base=10.0, subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(_CompactLogFormatter(minor=True))


def _message(text: str, title: str) -> Figure:
    """A small figure that says why there is nothing to plot."""
    fig = Figure(figsize=(_WIDTH * 0.6, 2.4), layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="0.3", transform=ax.transAxes)
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def _models(predictions: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(predictions["model"].astype(str)))  # order of first appearance


def _first_seed(frame: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
    """Rows of the lowest seed of one model's rows, and that seed."""
    seed = frame["seed"].min()
    return frame[frame["seed"] == seed], seed


def _legend_outside(fig: Figure, handles: list, labels: list[str], *, per_col: int = 22) -> None:
    """Figure legend to the right of the axes, in as many columns as the labels need."""
    if not handles:
        return
    ncol = max(1, math.ceil(len(labels) / per_col))
    kw = {"ncol": ncol, "fontsize": "small", "frameon": False}
    if fig.get_layout_engine() is not None:
        fig.legend(handles, labels, loc="outside right upper", **kw)
    else:  # a _grid figure: the legend goes in the right margin it reserved
        gs = fig.axes[0].get_gridspec()
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(gs.right + 0.01, gs.top), **kw)


def _clean_equity(equity: pd.DataFrame) -> pd.DataFrame:
    eq = equity.copy()
    eq.index = pd.DatetimeIndex(_naive_utc(eq.index))
    eq.columns = [str(c) for c in eq.columns]
    return eq.apply(pd.to_numeric, errors="coerce").astype(float)


# --------------------------------------------------------------------------- 1. price forecast


def price_forecast(predictions: pd.DataFrame, *, quote: str = "quote", zoom_bars: int = 120) -> Figure:
    """Actual and predicted next close per model, over the whole test span (lowest seed, log price axis).

    For row ``t``: actual next close ``close[t] * exp(y_true)`` (= ``close[t+1]``) and predicted next close
    ``pred_close`` (= ``close[t] * exp(y_pred)``), both plotted at ``t``, the bar whose close the forecast
    saw. Up to four models are overlaid, with a second panel on the last ``zoom_bars`` forecasts; more get
    one panel each. ``quote`` names the price currency in the axis label.
    """
    if predictions.empty:
        return _message("no predictions", "Predicted vs actual next close")
    models = _models(predictions)
    preds = predictions.sort_values("timestamp", kind="stable")
    series = []  # (model, seed note, x, actual next close, predicted next close)
    for model in models:
        own = preds[preds["model"].astype(str) == model]
        rows, seed = _first_seed(own)
        rows = rows.drop_duplicates("timestamp")
        actual = rows["close"].to_numpy(float) * np.exp(rows["y_true"].to_numpy(float))
        note = f" (seed {seed})" if own["seed"].nunique() > 1 else ""
        series.append((model, note, _naive_utc(rows["timestamp"]), actual, rows["pred_close"].to_numpy(float)))
    ylabel = f"Close [{quote}]"
    xlabel = "Forecast time t = bar whose close the model saw [UTC]"
    title = "Predicted vs actual next close (each plotted at its forecast time t)"

    if len(models) <= _MAX_OVERLAY:
        fig = Figure(figsize=(_WIDTH, 7.0), layout="constrained")
        full, zoom = fig.subplots(2, 1, height_ratios=[3, 2])
        longest = max(series, key=lambda s: len(s[2]))
        handles, labels = [], []
        for ax, last in ((full, None), (zoom, zoom_bars)):
            sl = slice(-last, None) if last else slice(None)
            (h_act,) = ax.plot(longest[2][sl], longest[3][sl], color="black", linewidth=0.6 if last else 0.5,
                               zorder=4, marker="." if last else None, markersize=3)
            for i, (model, note, x, _, pred) in enumerate(series):
                # predicted drawn wider and under the thin black actual line, so it shows where they differ
                (h,) = ax.plot(x[sl], pred[sl], color=_color(i), linewidth=1.2, alpha=0.85, zorder=3)
                if last is None:
                    handles.append(h)
                    labels.append(f"{model}: predicted{note}")
            _log_y(ax)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="major", alpha=0.3)
            _date_axis(ax)
        full.set_title("whole test span", fontsize="medium")
        zoom.set_title(f"last {min(zoom_bars, len(longest[2]))} forecasts", fontsize="medium")
        zoom.set_xlabel(xlabel)
        _legend_outside(fig, [h_act] + handles, ["actual next close"] + labels)
        fig.suptitle(title)
        return fig

    fig, axes = _grid(len(models), sharex=True, sharey=True, legend=True)
    for i, ((model, note, x, actual, pred), ax) in enumerate(zip(series, axes)):
        (h_act,) = ax.plot(x, actual, color="black", linewidth=0.5, zorder=4)
        ax.plot(x, pred, color=_color(i), linewidth=1.2, alpha=0.85, zorder=3)
        _panel_title(ax, f"{model}{note}")
        _log_y(ax)
        ax.grid(True, which="major", alpha=0.3)
        _date_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
    _legend_outside(fig, [h_act, Line2D([], [], color=_color(0), linewidth=1.2)],
                    ["actual next close", "predicted next close\n(panel colour)"])
    fig.supxlabel(xlabel, fontsize="medium")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- 2. predicted vs actual


def pred_vs_actual(predictions: pd.DataFrame) -> Figure:
    """Scatter of predicted vs actual next-bar change, ``100 * (exp(log return) - 1)`` in %, one panel per
    model (all seeds): dashed y = x, the view clipped to the 0.5-99.5 % quantiles (the panel says how many
    points fell outside), a note with the count, the correlation and the direction hit rate."""
    if predictions.empty:
        return _message("no predictions", "Predicted vs actual next-bar change")
    models = _models(predictions)
    fig, axes = _grid(len(models), sharex=False, sharey=False, panel_h=2.4)
    for i, (model, ax) in enumerate(zip(models, axes)):
        rows = predictions[predictions["model"].astype(str) == model]
        act = 100.0 * np.expm1(rows["y_true"].to_numpy(float))
        pred = 100.0 * np.expm1(rows["y_pred"].to_numpy(float))
        ok = np.isfinite(act) & np.isfinite(pred)
        act, pred = act[ok], pred[ok]
        _panel_title(ax, model)
        ax.axhline(0.0, color="0.5", linewidth=0.6)
        ax.axvline(0.0, color="0.5", linewidth=0.6)
        if act.size == 0:
            ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
            continue
        size = 4 if act.size > 1000 else 8
        ax.scatter(act, pred, s=size, alpha=0.35, color=_color(i), linewidths=0, rasterized=True)
        xlo, xhi = _robust_limits(act)
        ylo, yhi = _robust_limits(pred)
        lo, hi = min(xlo, ylo), max(xhi, yhi)
        ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=0.8)
        ax.set_xlim(xlo, xhi)
        ax.set_ylim(ylo, yhi)
        outside = int(np.sum((act < xlo) | (act > xhi) | (pred < ylo) | (pred > yhi)))
        corr = np.corrcoef(act, pred)[0, 1] if act.size > 2 and np.std(act) > 0 and np.std(pred) > 0 else float("nan")
        hit = float(np.mean((act > 0) == (pred > 0)))
        note = f"n={act.size}  corr={_fmt(corr)}  hit={100 * hit:.1f}%"
        if outside:
            note += f"\n{outside} outside view"
        ax.text(0.02, 0.98, note, ha="left", va="top", fontsize="x-small", transform=ax.transAxes,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.7, "linewidth": 0})
        ax.grid(True, alpha=0.3)
    fig.supxlabel("Actual next-bar change [%]", fontsize="medium")
    fig.supylabel("Predicted next-bar change [%]", fontsize="medium")
    fig.suptitle("Predicted vs actual next-bar change (dashed: y = x)")
    return fig


def _robust_limits(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(values, [0.005, 0.995])
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return float(lo - pad), float(hi + pad)


# --------------------------------------------------------------------------- 3. training loss


def training_loss(history: pd.DataFrame, *, max_curve_folds: int = 8) -> Figure:
    """Training and validation loss of every walk-forward fold, one panel per model (lowest seed).

    With up to ``max_curve_folds`` folds per model the per-epoch curves are laid end to end (x: cumulative
    epoch; dots: each fold's best validation loss, the weights early stopping keeps); with more, each fold
    is one point in time order (final training loss, best and final validation loss). Models without a
    training history (persistence, linear) have no panel.
    """
    if history is None or history.empty or "loss" not in history:
        return _message("no trained models (no per-epoch history)", "Training and validation loss")
    hist = history.copy()
    hist["model"] = hist["model"].astype(str)
    if "val_loss" not in hist:
        hist["val_loss"] = np.nan
    models = list(dict.fromkeys(hist["model"]))
    curves = hist.groupby("model")["fold"].nunique().max() <= max_curve_folds
    # one power of ten for the whole figure, named in the axis label, so ticks read 1.2 not 0.0012
    finite_all = np.abs(hist[["loss", "val_loss"]].to_numpy(float))
    finite_all = finite_all[np.isfinite(finite_all) & (finite_all > 0)]
    power = int(np.floor(np.log10(np.median(finite_all)))) if finite_all.size else 0
    power = power if power < -1 or power > 3 else 0
    hist[["loss", "val_loss"]] = hist[["loss", "val_loss"]].astype(float) / 10.0 ** power
    fig, axes = _grid(len(models), sharex=False, sharey=False, legend=True, title_lines=2)
    legend: dict[str, Any] = {}
    for model, ax in zip(models, axes):
        rows, seed = _first_seed(hist[hist["model"] == model])
        rows = rows.sort_values(["fold", "epoch"], kind="stable")
        fold_ids = rows["fold"].to_numpy()
        starts = np.flatnonzero(np.r_[True, fold_ids[1:] != fold_ids[:-1]])
        loss, val = rows["loss"].to_numpy(float), rows["val_loss"].to_numpy(float)
        folds = list(zip(np.split(loss, starts[1:]), np.split(val, starts[1:])))  # (loss, val_loss) per fold
        values = np.concatenate([loss, val])
        if curves:
            _loss_curves(ax, folds, legend)
        else:
            _loss_per_fold(ax, folds, legend)
        finite = values[np.isfinite(values)]
        if finite.size and (finite > 0).all() and finite.max() / finite.min() > 20:
            _log_y(ax)  # losses spanning decades (e.g. the first epochs of a fold)
        else:
            ax.yaxis.set_major_formatter(mticker.ScalarFormatter(useOffset=False))
        epochs_to_best = [int(np.nanargmin(v)) + 1 for _, v in folds if np.isfinite(v).any()]
        seeds = hist.loc[hist["model"] == model, "seed"].nunique()
        title = f"{model}: {len(folds)} folds" + (f", seed {seed}" if seeds > 1 else "")
        if epochs_to_best:
            title += f"\nmedian best epoch {np.median(epochs_to_best):g} of {np.median([len(t) for t, _ in folds]):g}"
        _panel_title(ax, title, "small")
        ax.grid(True, alpha=0.3)
    _legend_outside(fig, list(legend.values()), list(legend.keys()))
    fig.supxlabel("Epoch, cumulative over folds (vertical lines: fold boundaries)" if curves
                  else "Fold (walk-forward test block, in time order)", fontsize="medium")
    scale = f" × 1e{power}" if power else ""
    fig.supylabel(f"Loss [training objective{scale}, target units²]", fontsize="medium")
    fig.suptitle("Training and validation loss per fold")
    return fig


def _loss_curves(ax: Axes, folds: list[tuple[np.ndarray, np.ndarray]], legend: dict[str, Any]) -> None:
    offset = 0
    xs, best_x, best_y, bounds = [], [], [], []
    for t, v in folds:
        x = np.arange(offset, offset + len(t), dtype=float)
        xs.append(x)
        if np.isfinite(v).any():
            j = int(np.nanargmin(v))
            best_x.append(x[j])
            best_y.append(v[j])
        bounds.append(offset)
        offset += len(t)
    # a NaN after each fold breaks the line at the boundary
    x_all = np.concatenate([np.append(x, np.nan) for x in xs])
    t_all = np.concatenate([np.append(t, np.nan) for t, _ in folds])
    v_all = np.concatenate([np.append(v, np.nan) for _, v in folds])
    if len(bounds) > 1:
        ax.vlines(np.asarray(bounds[1:]) - 0.5, 0, 1, transform=ax.get_xaxis_transform(),
                  color="0.8", linewidth=0.6, zorder=1)
    (legend["training loss"],) = ax.plot(x_all, t_all, color="tab:blue", linewidth=0.9, zorder=3)
    if np.isfinite(v_all).any():
        (legend["validation loss"],) = ax.plot(x_all, v_all, color="tab:orange", linewidth=0.9, linestyle="--",
                                               zorder=3)
        legend["best validation loss"] = ax.scatter(best_x, best_y, s=12, color="tab:red", zorder=4)


def _loss_per_fold(ax: Axes, folds: list[tuple[np.ndarray, np.ndarray]], legend: dict[str, Any]) -> None:
    x = np.arange(len(folds))
    last_train = np.array([t[-1] for t, _ in folds])
    vals = [v for _, v in folds]
    best_val = np.array([np.nanmin(v) if np.isfinite(v).any() else np.nan for v in vals])
    last_val = np.array([v[-1] for v in vals])
    marker = "o" if len(folds) <= 60 else None
    (legend["final training loss"],) = ax.plot(x, last_train, color="tab:blue", linewidth=0.9, marker=marker,
                                               markersize=2.5)
    if np.isfinite(best_val).any():
        (legend["best validation loss"],) = ax.plot(x, best_val, color="tab:red", linewidth=0.9, marker=marker,
                                                    markersize=2.5)
        (legend["final validation loss"],) = ax.plot(x, last_val, color="tab:orange", linewidth=0.8,
                                                     linestyle="--")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True, nbins=6))


# --------------------------------------------------------------------------- 4./5. equity and drawdown


def equity_curves(equity: pd.DataFrame, *, quote: str = "quote") -> Figure:
    """Portfolio value after each bar (fees and slippage paid), log scale; buy & hold in black and thicker.
    Up to 12 non-baseline portfolios are overlaid, beyond that one panel each with buy & hold for reference."""
    if equity is None or equity.empty:
        return _message("no equity curves", "Equity")
    eq = _clean_equity(equity).where(lambda d: d > 0)
    return _portfolio_figure(eq, ylabel=f"Equity [{quote}]", log=True,
                             title="Equity of every portfolio (log scale)")


def drawdown(equity: pd.DataFrame) -> Figure:
    """Underwater curves: ``100 * (equity / running max - 1)``, in % (0 = at a new high); laid out as
    :func:`equity_curves`."""
    if equity is None or equity.empty:
        return _message("no equity curves", "Drawdown")
    eq = _clean_equity(equity)
    dd = 100.0 * (eq / eq.cummax() - 1.0)
    return _portfolio_figure(dd, ylabel="Drawdown [%]", log=False, fill=True,
                             title="Drawdown from the running high (underwater curves)")


def _portfolio_figure(frame: pd.DataFrame, *, ylabel: str, log: bool, title: str, fill: bool = False) -> Figure:
    labels = list(frame.columns)
    others = [c for c in labels if c not in BASELINES]
    bases = [c for c in BASELINES if c in labels]
    x = frame.index.to_numpy()
    if len(others) <= _MAX_OVERLAY_PORTFOLIOS:
        fig = Figure(figsize=(_WIDTH, 5.0), layout="constrained")
        ax = fig.add_subplot()
        handles = [ax.plot(x, frame[col].to_numpy(float), color=_color(i), linewidth=0.9, linestyle="-", zorder=3)[0]
                   for i, col in enumerate(others)]
        handles += [ax.plot(x, frame[col].to_numpy(float), **_BASELINE_STYLE[col])[0] for col in bases]
        if log:
            _log_y(ax)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("Bar [UTC]")
        ax.grid(True, which="major", alpha=0.3)
        _date_axis(ax)
        _legend_outside(fig, handles, others + bases)
        fig.suptitle(title + ("; black: buy & hold" if "buy_and_hold" in labels else ""))
        return fig

    fig, axes = _grid(len(others), sharex=True, sharey=True)
    ref = "buy_and_hold" if "buy_and_hold" in labels else None
    for i, (col, ax) in enumerate(zip(others, axes)):
        if ref is not None:
            ax.plot(x, frame[ref].to_numpy(float), color="black", linewidth=0.7, alpha=0.7, zorder=2)
        y = frame[col].to_numpy(float)
        ax.plot(x, y, color=_color(i), linewidth=0.8, zorder=3)
        if fill:
            ax.fill_between(x, y, 0.0, color=_color(i), alpha=0.25, linewidth=0, zorder=3)
        _panel_title(ax, col, "small")
        if log:
            _log_y(ax)
        ax.grid(True, which="major", alpha=0.3)
        _date_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
    fig.supxlabel("Bar [UTC]", fontsize="medium")
    fig.suptitle(title + ("; black in each panel: buy & hold" if ref else ""))
    return fig


# --------------------------------------------------------------------------- 6. confusion matrices


def confusion_matrices(metrics: RunMetrics) -> Figure:
    """One 2x2 direction confusion matrix per model, from ``metrics.models``: rows the actual next-bar
    direction, columns the predicted ("up": log return > 0), cells the count and its share of all forecasts
    (the colour); with several seeds the mean counts (``metrics.models[m].mean``)."""
    entries: list[tuple[str, dict[str, Any], str]] = []
    for model, block in metrics.models.items():
        cls, note = _classification_block(block)
        if cls is not None and all(finite(cls.get(k)) is not None for k in ("tp", "fp", "tn", "fn")):
            entries.append((str(model), cls, note))
    if not entries:
        return _message("no classification counts in metrics", "Direction confusion matrices")
    ncols = min(5, max(1, len(entries)))
    fig, axes = _grid(len(entries), sharex=False, sharey=False, square=True, ncols=ncols, title_lines=2,
                      width=min(_WIDTH, 2.4 * ncols + 1.6))
    for (model, cls, note), ax in zip(entries, axes):
        tp, fp, tn, fn = (float(cls[k]) for k in ("tp", "fp", "tn", "fn"))
        mat = np.array([[tn, fp], [fn, tp]])
        total = mat.sum()
        share = mat / total if total > 0 else np.zeros_like(mat)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=max(0.5, float(share.max())))
        integer = all(float(v).is_integer() for v in mat.ravel())
        for r in range(2):
            for c in range(2):
                count = f"{int(mat[r, c]):d}" if integer else f"{mat[r, c]:.1f}"
                ax.text(c, r, f"{count}\n{100 * share[r, c]:.1f}%", ha="center", va="center", fontsize="small",
                        color="white" if share[r, c] > 0.35 else "black")
        ax.set_xticks([0, 1], ["down", "up"])
        ax.set_yticks([0, 1], ["down", "up"])
        ax.set_xlabel("Predicted", fontsize="small")
        ax.set_ylabel("Actual", fontsize="small")
        f1 = cls.get("f1")
        _panel_title(ax, f"{model}{note}\nF1={_fmt(f1)}  prec={_fmt(cls.get('precision'))}", "small")
    fig.suptitle("Direction confusion matrices (count, share of forecasts)")
    return fig


def _classification_block(block: ModelMetrics) -> tuple[dict[str, Any] | None, str]:
    if len(block.per_seed) > 1 and block.mean is not None:
        return asdict(block.mean.classification), f" (mean of {len(block.per_seed)} seeds)"
    if block.per_seed:
        seed, m = block.first_seed()
        return asdict(m.classification), (f" (seed {seed})" if len(block.per_seed) > 1 else "")
    return None, ""


def _fmt(v: Any, digits: int = 2) -> str:
    return "n/a" if (f := finite(v)) is None else f"{f:.{digits}f}"


# --------------------------------------------------------------------------- 7. fold scores


def fold_score_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Direction accuracy and F1 per model and fold, averaged over seeds.

    "Up" is ``y > 0`` for both ``y_true`` and ``y_pred``; F1 is of the "up"
    class (0 when a fold never predicts up). Columns: ``model, fold, start``
    (the fold's first forecast time t, UTC), ``accuracy, f1, base_rate``
    (share of up bars in the fold: the accuracy of always predicting up), ``n``.
    """
    cols = ["model", "fold", "start", "accuracy", "f1", "base_rate", "n"]
    if predictions.empty:
        return pd.DataFrame(columns=cols)
    p = predictions[["model", "seed", "fold", "timestamp", "y_true", "y_pred"]].copy()
    p["model"] = p["model"].astype(str)
    p["timestamp"] = pd.to_datetime(p["timestamp"], utc=True)
    starts = p.groupby(["model", "fold"], sort=True)["timestamp"].min().rename("start")  # incl. rows without a forecast
    p = p[np.isfinite(p["y_true"].to_numpy(float)) & np.isfinite(p["y_pred"].to_numpy(float))]
    if p.empty:
        return pd.DataFrame(columns=cols)
    # the confusion counts of each (model, seed, fold) in one vectorised pass; the scores follow
    # sklearn's definitions (accuracy_score; f1_score of the positive class with zero_division=0)
    t = p["y_true"].to_numpy(float) > 0
    q = p["y_pred"].to_numpy(float) > 0
    p["tp"], p["fp"], p["fn"], p["hit"], p["up"] = t & q, ~t & q, t & ~q, t == q, t
    g = p.groupby(["model", "seed", "fold"], sort=True).agg(
        tp=("tp", "sum"), fp=("fp", "sum"), fn=("fn", "sum"),
        accuracy=("hit", "mean"), base_rate=("up", "mean"), n=("hit", "size"))
    denom = (2 * g["tp"] + g["fp"] + g["fn"]).to_numpy(float)
    g["f1"] = np.divide(2 * g["tp"].to_numpy(float), denom, out=np.zeros(len(g)), where=denom > 0)
    out = g.reset_index().groupby(["model", "fold"], sort=True).agg(
        accuracy=("accuracy", "mean"), f1=("f1", "mean"), base_rate=("base_rate", "mean"), n=("n", "max"))
    out = out.join(starts).reset_index()
    return out[cols].sort_values(["model", "start"]).reset_index(drop=True)


def fold_scores(predictions: pd.DataFrame) -> Figure:
    """Direction accuracy and F1 of each fold, one panel per model: each point one walk-forward test block at
    its first forecast time (mean over seeds); grey dashed: the fold's share of up bars; dotted: 0.5."""
    table = fold_score_table(predictions)
    if table.empty:
        return _message("no predictions", "Accuracy and F1 per fold")
    models = [m for m in _models(predictions) if m in set(table["model"])]
    fig, axes = _grid(len(models), sharex=True, sharey=True, legend=True, title_lines=2)
    h = {}
    for model, ax in zip(models, axes):
        t = table[table["model"] == model]
        x = _naive_utc(t["start"])
        marker = "o" if len(t) <= 60 else None
        (h["accuracy"],) = ax.plot(x, t["accuracy"], color="tab:blue", linewidth=0.9, marker=marker, markersize=2.5)
        (h["F1 (up class)"],) = ax.plot(x, t["f1"], color="tab:orange", linewidth=0.9, marker=marker, markersize=2.5)
        (h["share of up bars"],) = ax.plot(x, t["base_rate"], color="0.5", linewidth=0.7, linestyle="--")
        ax.axhline(0.5, color="0.3", linewidth=0.6, linestyle=":")
        ax.set_ylim(-0.02, 1.02)
        _panel_title(ax, f"{model}\nmean accuracy {t['accuracy'].mean():.3f}, F1 {t['f1'].mean():.3f}", "small")
        ax.grid(True, alpha=0.3)
        _date_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("Score [0-1]")
    _legend_outside(fig, list(h.values()), list(h.keys()))
    fig.supxlabel("Fold start: first forecast time t of the test block [UTC]", fontsize="medium")
    fig.suptitle("Direction accuracy and F1 per walk-forward fold")
    return fig


# --------------------------------------------------------------------------- all


def all_figures(predictions: pd.DataFrame, history: pd.DataFrame, equity: pd.DataFrame,
                metrics: RunMetrics) -> dict[str, Figure]:
    """Every report figure, keyed by the stable names of :data:`FIGURE_NAMES`, in that order."""
    quote = _quote(metrics)
    return {
        "price_forecast": price_forecast(predictions, quote=quote),
        "pred_vs_actual": pred_vs_actual(predictions),
        "training_loss": training_loss(history),
        "equity": equity_curves(equity, quote=quote),
        "drawdown": drawdown(equity),
        "confusion": confusion_matrices(metrics),
        "fold_scores": fold_scores(predictions),
    }


def _quote(metrics: RunMetrics) -> str:
    """The quote currency of the run (``metrics.run.quote``)."""
    return metrics.run.quote or "quote"


# --------------------------------------------------------------------------- several symbols

#: Metrics the per-symbol heat map can show (key -> title).
HEAT_METRICS: dict[str, str] = {
    "sharpe_diff": "Sharpe minus the symbol's buy & hold Sharpe (annualised)",
    "sharpe": "Sharpe ratio (annualised)",
    "total_return": "Total return [%]",
    "sharpe_p": "Bootstrap p-value (two-sided), Sharpe vs the symbol's buy & hold",
    "mse_ratio": "MSE / persistence MSE (below 1 beats 'no change')",
}


def heat_matrix(m: RunMetrics, metric: str = "sharpe_diff") -> pd.DataFrame:
    """Model x strategy labels (rows) by symbol (columns) of one :data:`HEAT_METRICS` metric; NaN where undefined.

    ``sharpe_diff`` is the portfolio's Sharpe minus the symbol's buy & hold Sharpe, both as reported in the
    symbol's table (a portfolio that never trades has Sharpe 0, so its cell is ``-bh``, never undefined
    while buy & hold's Sharpe is defined)."""
    if metric not in HEAT_METRICS:
        raise ValueError(f"heat map metric {metric!r} is not one of {', '.join(HEAT_METRICS)}")
    labels = [r.portfolio for r in m.summary if r.model is not None]
    symbols = list(m.run.symbols)
    out = pd.DataFrame(np.nan, index=labels, columns=symbols)
    per = m.universe.symbols if m.universe is not None else {}
    for s in symbols:
        info = per.get(s)
        if info is None:
            continue
        bh = info.benchmark
        for lab in labels:
            b = info.portfolios.get(lab)
            if b is None:
                continue
            sd = b.sharpe_vs_buy_and_hold
            sharpe = b.portfolio.sharpe
            if metric == "sharpe_diff":
                v = None if sharpe is None or bh is None or bh.sharpe is None else sharpe - bh.sharpe
            elif metric == "sharpe":
                v = sharpe
            elif metric == "total_return":
                v = None if b.portfolio.total_return is None else 100 * b.portfolio.total_return
            elif metric == "sharpe_p":
                v = sd.p_value_two_sided if sd else None
            else:
                mm = info.models.get(str(b.model))
                sb = (mm.per_seed.get(str(b.seed)) or mm.first_seed()[1]) if mm else None
                v = sb.regression.mse_ratio if sb else None
            out.loc[lab, s] = np.nan if v is None or not np.isfinite(v) else float(v)
    return out


def heat_map(matrix: pd.DataFrame, metric: str) -> Figure:
    """A labelled heat map with the value written in each cell (grey: undefined)."""
    rows, cols = matrix.shape
    fig = Figure(figsize=(max(5.0, 1.1 * cols + 3.5), max(2.5, 0.45 * rows + 1.6)), layout="constrained")
    ax = fig.add_subplot()
    vals = matrix.to_numpy(float)
    fin = vals[np.isfinite(vals)]
    centre = {"sharpe_diff": 0.0, "sharpe": 0.0, "total_return": 0.0, "mse_ratio": 1.0}.get(metric)
    if metric == "sharpe_p":
        cmap, vmin, vmax = "RdYlGn_r", 0.0, 1.0
    else:
        span = float(np.max(np.abs(fin - centre))) if fin.size else 1.0
        span = span or 1.0
        cmap, vmin, vmax = ("RdYlGn_r" if metric == "mse_ratio" else "RdYlGn"), centre - span, centre + span
    cm = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
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


def _symbol_equity(equity: pd.DataFrame, symbol: str) -> pd.DataFrame:
    suffix = f"[{symbol}]"
    cols = [c for c in equity.columns if str(c).endswith(suffix)]
    out = equity[cols].dropna(how="all")
    out.columns = [str(c)[: -len(suffix)] for c in cols]
    return out


def universe_figures(m: RunMetrics, equity: pd.DataFrame, heat_metric: str = "sharpe_diff") -> dict[str, Figure]:
    """The figures of a run of several symbols: ``heatmap``, ``universe_equity``, ``universe_drawdown`` and
    ``equity_<i>`` per symbol (i = position in ``run.symbols``). ``equity``: universe portfolios by label,
    each symbol's own as ``label[SYMBOL]``."""
    quote = _quote(m)
    uni_cols = [r.portfolio for r in m.summary if r.portfolio in equity.columns]
    if "buy_and_hold" in uni_cols:
        uni_cols = [c for c in uni_cols if c != "buy_and_hold"] + ["buy_and_hold"]
    figures: dict[str, Figure] = {
        "heatmap": heat_map(heat_matrix(m, heat_metric), heat_metric),
        "universe_equity": equity_curves(equity[uni_cols], quote=quote),
        "universe_drawdown": drawdown(equity[uni_cols]),
    }
    for i, s in enumerate(m.run.symbols):
        eq = _symbol_equity(equity, s)
        if not eq.empty:
            figures[f"equity_{i}"] = equity_curves(eq, quote=quote)
    return figures
