"""Report figures: pure functions from run data to :class:`matplotlib.figure.Figure`.

Every function takes the run-directory data as the engine writes it (see
DESIGN.md, "Run directory") and returns a new Figure built with the
object-oriented API (no pyplot, no global state, Agg-compatible), so it can be
called from worker processes and tests alike. Nothing here reads files.

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
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before anything touches pyplot; we never import pyplot ourselves

import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402

__all__ = [
    "FIGURE_NAMES",
    "BASELINES",
    "price_forecast",
    "pred_vs_actual",
    "training_loss",
    "equity_curves",
    "drawdown",
    "confusion_matrices",
    "fold_scores",
    "fold_score_table",
    "all_figures",
]

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
    """The ``i``-th colour of tab20, cycling (20 distinct colours, then repeats)."""
    cmap = matplotlib.colormaps["tab20"]
    return cmap(i % 20)


def _naive_utc(values: Any) -> np.ndarray:
    """Timestamps as tz-naive UTC ``datetime64[ns]`` (what matplotlib plots fastest)."""
    idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return idx.tz_convert("UTC").tz_localize(None).to_numpy()


def _date_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _ncols(n: int) -> int:
    if n <= 1:
        return 1
    if n <= 4:
        return 2
    if n <= 9:
        return 3
    return 4


def _grid(n: int, *, sharex: bool = True, sharey: bool | str = False, panel_h: float = _PANEL_H,
          ncols: int | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels in a grid; unused cells are hidden. Returns the first ``n`` axes."""
    ncols = ncols or _ncols(n)
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(_WIDTH, max(3.2, panel_h * nrows + 0.8)), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


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
    seeds = sorted(frame["seed"].unique())
    seed = seeds[0]
    return frame[frame["seed"] == seed], seed


def _legend_outside(fig: Figure, handles: list, labels: list[str], *, per_col: int = 22) -> None:
    """Figure legend to the right of the axes, in as many columns as the labels need."""
    if not handles:
        return
    ncol = max(1, math.ceil(len(labels) / per_col))
    fig.legend(handles, labels, loc="outside right upper", ncol=ncol, fontsize="small", frameon=False)


def _is_baseline(label: str) -> bool:
    return label in BASELINES


def _portfolio_style(label: str, i: int) -> dict[str, Any]:
    if label in _BASELINE_STYLE:
        return dict(_BASELINE_STYLE[label])
    return {"color": _color(i), "linewidth": 0.9, "linestyle": "-", "zorder": 3}


def _clean_equity(equity: pd.DataFrame) -> pd.DataFrame:
    eq = equity.copy()
    eq.index = pd.DatetimeIndex(_naive_utc(eq.index))
    eq.columns = [str(c) for c in eq.columns]
    return eq.apply(pd.to_numeric, errors="coerce").astype(float)


# --------------------------------------------------------------------------- 1. price forecast


def price_forecast(predictions: pd.DataFrame, *, quote: str = "quote") -> Figure:
    """Actual and predicted next close per model, over the whole test span.

    For row ``t``: actual next close ``close[t] * exp(y_true)`` (= ``close[t+1]``)
    and predicted next close ``pred_close`` (= ``close[t] * exp(y_pred)``), both
    plotted at ``t``, the bar whose close the forecast saw. One panel per model
    when there are more than four models, one overlay otherwise; log price axis.
    With several seeds the lowest seed is shown. ``quote`` names the price
    currency in the axis label (e.g. ``"USDT"``).
    """
    if predictions.empty:
        return _message("no predictions", "Predicted vs actual next close")
    preds = predictions.sort_values("timestamp")
    models = _models(preds)
    ylabel = f"Close [{quote}]"
    overlay = len(models) <= _MAX_OVERLAY
    if overlay:
        fig = Figure(figsize=(_WIDTH, 4.8), layout="constrained")
        axes = [fig.add_subplot()] * len(models)
    else:
        fig, axes = _grid(len(models), sharex=True, sharey=True)

    handles: list = []
    labels: list[str] = []
    actual_drawn: set[int] = set()
    for i, (model, ax) in enumerate(zip(models, axes)):
        rows, seed = _first_seed(preds[preds["model"].astype(str) == model])
        rows = rows.drop_duplicates("timestamp")
        x = _naive_utc(rows["timestamp"])
        actual = rows["close"].to_numpy(float) * np.exp(rows["y_true"].to_numpy(float))
        if id(ax) not in actual_drawn:  # the actual series once per axes (all models share it)
            (h_act,) = ax.plot(x, actual, color="black", linewidth=0.8, label="actual next close", zorder=2)
            actual_drawn.add(id(ax))
            if not labels:
                handles.append(h_act)
                labels.append("actual next close")
        (h,) = ax.plot(x, rows["pred_close"].to_numpy(float), color=_color(i), linewidth=0.7, alpha=0.9, zorder=3)
        seed_note = f" (seed {seed})" if preds.loc[preds["model"].astype(str) == model, "seed"].nunique() > 1 else ""
        if overlay:
            handles.append(h)
            labels.append(f"{model}: predicted{seed_note}")
        else:
            ax.set_title(f"{model}{seed_note}", fontsize="medium")
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        _date_axis(ax)
    if overlay:
        ax = axes[0]
        ax.set_ylabel(ylabel)
        ax.set_xlabel("Forecast time t = bar whose close the model saw [UTC]")
        ax.legend(handles, labels, loc="upper left", fontsize="small", frameon=False)
    else:
        for ax in axes:
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel(ylabel)
        _legend_outside(fig, [handles[0], Line2D([], [], color=_color(0), linewidth=0.8)],
                        ["actual next close", "predicted next close\n(panel colour)"])
        fig.supxlabel("Forecast time t = bar whose close the model saw [UTC]", fontsize="medium")
    fig.suptitle("Predicted vs actual next close (each plotted at its forecast time t)")
    return fig


# --------------------------------------------------------------------------- 2. predicted vs actual


def pred_vs_actual(predictions: pd.DataFrame) -> Figure:
    """Scatter of predicted vs actual next-bar change in %, one panel per model (all seeds).

    Both axes are ``100 * (exp(log return) - 1)``. The dashed line is y = x (a
    perfect forecast); points in the upper-right and lower-left quadrants have
    the right direction. The view is clipped to the 0.5-99.5 % quantiles so a
    few crash days do not squash the cloud; the panel says how many points fell
    outside. The note gives the count, the correlation and the direction hit rate.
    """
    if predictions.empty:
        return _message("no predictions", "Predicted vs actual next-bar change")
    models = _models(predictions)
    fig, axes = _grid(len(models), sharex=False, sharey=False, panel_h=3.0)
    for i, (model, ax) in enumerate(zip(models, axes)):
        rows = predictions[predictions["model"].astype(str) == model]
        act = 100.0 * np.expm1(rows["y_true"].to_numpy(float))
        pred = 100.0 * np.expm1(rows["y_pred"].to_numpy(float))
        ok = np.isfinite(act) & np.isfinite(pred)
        act, pred = act[ok], pred[ok]
        ax.set_title(model, fontsize="medium")
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
        note = f"n={act.size}  corr={corr:.2f}  hit={100 * hit:.1f}%"
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


def training_loss(history: pd.DataFrame) -> Figure:
    """Training and validation loss per epoch, folds laid end to end, one panel per model.

    x is the cumulative epoch over the folds (fold boundaries as faint vertical
    lines); solid = training loss, dashed = validation loss, dots = each fold's
    best (lowest) validation loss, i.e. the weights early stopping keeps. With
    several seeds the lowest seed is shown. Models without a training history
    (persistence, linear) have no rows and no panel.
    """
    if history is None or history.empty or "loss" not in history:
        return _message("no trained models (no per-epoch history)", "Training and validation loss")
    hist = history.copy()
    hist["model"] = hist["model"].astype(str)
    models = list(dict.fromkeys(hist["model"]))
    fig, axes = _grid(len(models), sharex=False, sharey=False)
    h_train = h_val = h_best = None
    for model, ax in zip(models, axes):
        rows, seed = _first_seed(hist[hist["model"] == model])
        rows = rows.sort_values(["fold", "epoch"])
        offset = 0
        xs, train, val, best_x, best_y, bounds = [], [], [], [], [], []
        for _, f in rows.groupby("fold", sort=True):
            n = len(f)
            x = np.arange(offset, offset + n)
            xs.append(x)
            train.append(f["loss"].to_numpy(float))
            v = f["val_loss"].to_numpy(float) if "val_loss" in f else np.full(n, np.nan)
            val.append(v)
            if np.isfinite(v).any():
                j = int(np.nanargmin(v))
                best_x.append(x[j])
                best_y.append(v[j])
            bounds.append(offset)
            offset += n
        # NaN between folds breaks the line at each boundary
        x_all = np.concatenate([np.append(x.astype(float), np.nan) for x in xs])
        t_all = np.concatenate([np.append(t, np.nan) for t in train])
        v_all = np.concatenate([np.append(v, np.nan) for v in val])
        for b in bounds[1:]:
            ax.axvline(b - 0.5, color="0.85", linewidth=0.5, zorder=1)
        (h_train,) = ax.plot(x_all, t_all, color="tab:blue", linewidth=0.8, zorder=3)
        if np.isfinite(v_all).any():
            (h_val,) = ax.plot(x_all, v_all, color="tab:orange", linewidth=0.8, linestyle="--", zorder=3)
            h_best = ax.scatter(best_x, best_y, s=10, color="tab:red", zorder=4)
        positive = np.concatenate([t_all[np.isfinite(t_all)], v_all[np.isfinite(v_all)]])
        if positive.size and (positive > 0).all():
            ax.set_yscale("log")
        seeds = hist.loc[hist["model"] == model, "seed"].nunique()
        ax.set_title(f"{model}: {len(xs)} folds" + (f" (seed {seed})" if seeds > 1 else ""), fontsize="medium")
        ax.grid(True, alpha=0.3)
    handles, labels = [h_train], ["training loss"]
    if h_val is not None:
        handles += [h_val, h_best]
        labels += ["validation loss", "best validation loss of the fold"]
    _legend_outside(fig, handles, labels)
    fig.supxlabel("Epoch, cumulative over folds (vertical lines: fold boundaries)", fontsize="medium")
    fig.supylabel("Loss [training objective, target units²]", fontsize="medium")
    fig.suptitle("Training and validation loss per fold")
    return fig


# --------------------------------------------------------------------------- 4./5. equity and drawdown


def equity_curves(equity: pd.DataFrame, *, quote: str = "quote") -> Figure:
    """Portfolio value over time, log scale; buy & hold in black and thicker.

    Up to 12 non-baseline portfolios are overlaid in one axes (legend outside);
    beyond that each gets its own panel with buy & hold drawn for reference.
    Values are the equity *after* each bar, with fees and slippage paid.
    """
    if equity is None or equity.empty:
        return _message("no equity curves", "Equity")
    eq = _clean_equity(equity).where(lambda d: d > 0)
    return _portfolio_figure(eq, ylabel=f"Equity [{quote}]", log=True,
                             title="Equity of every portfolio (log scale; black: buy & hold)")


def drawdown(equity: pd.DataFrame) -> Figure:
    """Underwater curves: ``100 * (equity / running max - 1)``, in % (0 = at a new high).

    Overlay up to 12 non-baseline portfolios, small multiples beyond; buy & hold
    in black for reference in every panel.
    """
    if equity is None or equity.empty:
        return _message("no equity curves", "Drawdown")
    eq = _clean_equity(equity)
    dd = 100.0 * (eq / eq.cummax() - 1.0)
    return _portfolio_figure(dd, ylabel="Drawdown [%]", log=False, fill=True,
                             title="Drawdown from the running high (underwater curves)")


def _portfolio_figure(frame: pd.DataFrame, *, ylabel: str, log: bool, title: str, fill: bool = False) -> Figure:
    labels = list(frame.columns)
    others = [c for c in labels if not _is_baseline(c)]
    bases = [c for c in BASELINES if c in labels]
    x = frame.index.to_numpy()
    if len(others) <= _MAX_OVERLAY_PORTFOLIOS:
        fig = Figure(figsize=(_WIDTH, 5.0), layout="constrained")
        ax = fig.add_subplot()
        handles, names = [], []
        for i, col in enumerate(others + bases):
            style = _portfolio_style(col, others.index(col) if col in others else 0)
            (h,) = ax.plot(x, frame[col].to_numpy(float), **style)
            handles.append(h)
            names.append(col)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("Bar [UTC]")
        ax.grid(True, which="major", alpha=0.3)
        _date_axis(ax)
        _legend_outside(fig, handles, names)
        fig.suptitle(title)
        return fig

    fig, axes = _grid(len(others), sharex=True, sharey=True)
    ref = "buy_and_hold" if "buy_and_hold" in labels else None
    for i, (col, ax) in enumerate(zip(others, axes)):
        if ref is not None:
            ax.plot(x, frame[ref].to_numpy(float), color="black", linewidth=1.0, zorder=2)
        y = frame[col].to_numpy(float)
        ax.plot(x, y, color=_color(i), linewidth=0.8, zorder=3)
        if fill:
            ax.fill_between(x, y, 0.0, color=_color(i), alpha=0.25, linewidth=0, zorder=3)
        ax.set_title(col, fontsize="small")
        if log:
            ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        _date_axis(ax)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(ylabel)
    fig.supxlabel("Bar [UTC]", fontsize="medium")
    fig.suptitle(title + ("; black in each panel: buy & hold" if ref else ""))
    return fig


# --------------------------------------------------------------------------- 6. confusion matrices


def confusion_matrices(metrics: Mapping[str, Any]) -> Figure:
    """One 2x2 direction confusion matrix per model, from ``metrics["models"]``.

    Rows = actual next-bar direction, columns = predicted ("up" means log
    return > 0, "down" means <= 0). Cells show the count and its share of all
    forecasts; colour is that share. With several seeds the mean counts over the
    seeds are shown (``metrics["models"][m]["mean"]``), else the single seed.
    """
    models = metrics.get("models") or {}
    entries: list[tuple[str, dict[str, Any], str]] = []
    for model, block in models.items():
        cls, note = _classification_block(block)
        if cls is not None and all(_finite(cls.get(k)) for k in ("tp", "fp", "tn", "fn")):
            entries.append((str(model), cls, note))
    if not entries:
        return _message("no classification counts in metrics", "Direction confusion matrices")
    ncols = min(5, max(1, len(entries)))
    fig, axes = _grid(len(entries), sharex=False, sharey=False, panel_h=2.7, ncols=ncols)
    fig.set_size_inches(min(_WIDTH, 2.6 * ncols + 1.0), fig.get_size_inches()[1])
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
        ax.set_title(f"{model}{note}\nF1={_fmt(f1)}  prec={_fmt(cls.get('precision'))}", fontsize="small")
    fig.suptitle("Direction confusion matrices (count, share of forecasts)")
    return fig


def _classification_block(block: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    per_seed = block.get("per_seed") or {}
    mean = (block.get("mean") or {}).get("classification")
    if len(per_seed) > 1 and mean:
        return dict(mean), f" (mean of {len(per_seed)} seeds)"
    if per_seed:
        seed = sorted(per_seed, key=_seed_key)[0]
        cls = (per_seed[seed] or {}).get("classification")
        return (dict(cls) if cls else None), (f" (seed {seed})" if len(per_seed) > 1 else "")
    if mean:
        return dict(mean), ""
    return None, ""


def _seed_key(s: Any) -> tuple[int, Any]:
    try:
        return (0, int(s))
    except (TypeError, ValueError):
        return (1, str(s))


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _fmt(v: Any, digits: int = 2) -> str:
    return f"{float(v):.{digits}f}" if _finite(v) else "n/a"


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
    rows = []
    for (model, seed, fold), g in predictions.groupby(["model", "seed", "fold"], sort=True):
        ok = np.isfinite(g["y_true"].to_numpy(float)) & np.isfinite(g["y_pred"].to_numpy(float))
        g = g[ok]
        if g.empty:
            continue
        t = g["y_true"].to_numpy(float) > 0
        p = g["y_pred"].to_numpy(float) > 0
        rows.append({"model": str(model), "seed": seed, "fold": int(fold),
                     "start": pd.to_datetime(g["timestamp"], utc=True).min(),
                     "accuracy": accuracy_score(t, p), "f1": f1_score(t, p, zero_division=0),
                     "base_rate": float(t.mean()), "n": len(g)})
    if not rows:
        return pd.DataFrame(columns=cols)
    per_seed = pd.DataFrame(rows)
    out = per_seed.groupby(["model", "fold"], sort=True).agg(
        start=("start", "min"), accuracy=("accuracy", "mean"), f1=("f1", "mean"),
        base_rate=("base_rate", "mean"), n=("n", "max")).reset_index()
    return out[cols].sort_values(["model", "start"]).reset_index(drop=True)


def fold_scores(predictions: pd.DataFrame) -> Figure:
    """Direction accuracy and F1 of each fold over time, one panel per model.

    Each point is one walk-forward test block, plotted at its first forecast
    time (mean over seeds). Grey dashed: the fold's share of up bars (the
    accuracy of always predicting up); dotted: 0.5.
    """
    table = fold_score_table(predictions)
    if table.empty:
        return _message("no predictions", "Accuracy and F1 per fold")
    models = list(dict.fromkeys(predictions["model"].astype(str)))
    models = [m for m in models if m in set(table["model"])]
    fig, axes = _grid(len(models), sharex=True, sharey=True)
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
        ax.set_title(f"{model}: mean acc {t['accuracy'].mean():.3f}, F1 {t['f1'].mean():.3f}", fontsize="small")
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
                metrics: Mapping[str, Any]) -> dict[str, Figure]:
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


def _quote(metrics: Mapping[str, Any]) -> str:
    """The quote currency from ``metrics["run"]`` ("quote", or the part after "/" of "symbol")."""
    run = metrics.get("run") or {}
    if run.get("quote"):
        return str(run["quote"])
    symbol = run.get("symbol")
    if isinstance(symbol, str) and "/" in symbol:
        return symbol.split("/", 1)[1].split(":")[0]
    if isinstance(symbol, Sequence) and not isinstance(symbol, str) and len(symbol) == 1 and "/" in str(symbol[0]):
        return str(symbol[0]).split("/", 1)[1].split(":")[0]
    return "quote"
