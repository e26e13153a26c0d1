"""Compare finished runs: one ranked table, an equity overlay and seed-spread box plots.

:func:`compare_runs` reads, from each run directory, ``metrics.json``,
``equity.csv`` (wide, index column ``timestamp``) and ``config.toml`` (as text;
the configuration's label is the run folder's name), and writes to ``out_dir``:

* ``compare.html`` -- self-contained page (images embedded, no external URLs);
* ``compare.json`` -- the ranked table;
* ``figures/equity.png`` and, when some run has several seeds, ``figures/seeds.png``.

Ranking is by annualised Sharpe ratio, highest first (undefined Sharpe last).
Runs with different test spans are not strictly comparable; the table shows
each run's span so that is visible.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from backtest.atomic import write_json, write_text
from backtest.errors import RunDirError
from reports.figures import BASELINES, _color, _date_axis, _log_y, _message, _naive_utc, _quote
from reports.html import (Cell, esc, figure_png, fmt_num, fmt_pct, html_table, img_tag, page, save_figures,
                          verdict_class)

__all__ = ["RunData", "load_run", "ranked_table", "seed_samples", "equity_overlay", "seed_boxplots", "compare_runs"]

_SEED_RE = re.compile(r"^(?P<base>.+)/seed=(?P<seed>-?\d+)$")


@dataclass(frozen=True)
class RunData:
    """What the comparison needs from one finished run directory."""

    name: str
    path: Path
    metrics: dict[str, Any]
    equity: pd.DataFrame
    config_text: str


def load_run(run_dir: str | Path) -> RunData:
    """Read one run directory, or raise a one-line :class:`RunDirError` naming it and what is wrong."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunDirError(f"{d}: run directory not found")
    for fname in ("metrics.json", "equity.csv", "config.toml"):
        if not (d / fname).is_file():
            raise RunDirError(f"{d}: not a finished run ({fname} missing)")
    try:
        metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        if not isinstance(metrics, dict) or not isinstance(metrics.get("summary"), list):
            raise ValueError('no "summary" list')
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{d}: corrupt metrics.json ({_first_line(exc)})") from None
    try:
        eq = pd.read_csv(d / "equity.csv")
        if "timestamp" not in eq.columns:
            raise ValueError("no timestamp column")
        eq.index = pd.DatetimeIndex(pd.to_datetime(eq.pop("timestamp"), utc=True), name="timestamp")
        eq = eq.apply(pd.to_numeric, errors="raise").astype(float)
    except (ValueError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunDirError(f"{d}: corrupt equity.csv ({_first_line(exc)})") from None
    try:
        config_text = (d / "config.toml").read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirError(f"{d}: corrupt config.toml ({_first_line(exc)})") from None
    return RunData(name=d.resolve().name or str(d), path=d, metrics=metrics, equity=eq, config_text=config_text)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _f(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _unique_names(runs: list[RunData]) -> list[RunData]:
    """Give runs with the same folder name distinct labels ("name", "name (2)", ...)."""
    seen: dict[str, int] = {}
    out = []
    for r in runs:
        n = seen.get(r.name, 0) + 1
        seen[r.name] = n
        out.append(r if n == 1 else RunData(f"{r.name} ({n})", r.path, r.metrics, r.equity, r.config_text))
    return out


# --------------------------------------------------------------------------- tables


def ranked_table(runs: list[RunData]) -> pd.DataFrame:
    """Every run × portfolio of ``metrics["summary"]``, ranked by Sharpe (highest first, undefined last).

    Columns: ``rank, run, portfolio, model, strategy, total_return, sharpe,
    max_drawdown, f1, verdict, first_test_bar, last_test_bar, symbols,
    symbols_beaten`` (fractions as in metrics.json; max_drawdown as a
    non-negative magnitude). For a universe run the rows are its universe
    portfolios (``buy_and_hold`` = equal-weight buy & hold of the universe),
    ``symbols`` lists its symbols and ``symbols_beaten`` says on how many it
    beats buy & hold and persistence (Holm-adjusted counts).
    """
    rows = []
    for r in runs:
        info = r.metrics.get("run") or {}
        for s in r.metrics.get("summary") or []:
            if not isinstance(s, dict):
                continue
            dd = _f(s.get("max_drawdown"))
            rows.append({
                "run": r.name, "portfolio": str(s.get("portfolio")), "model": s.get("model"),
                "strategy": s.get("strategy"), "total_return": _f(s.get("total_return")),
                "sharpe": _f(s.get("sharpe")), "max_drawdown": None if dd is None else abs(dd),
                "f1": _f(s.get("f1")), "verdict": s.get("verdict"),
                "first_test_bar": info.get("first_test_bar"), "last_test_bar": info.get("last_test_bar"),
                "symbols": _scope(info), "symbols_beaten": _symbols_beaten(s),
            })
    cols = ["rank", "run", "portfolio", "model", "strategy", "total_return", "sharpe", "max_drawdown", "f1",
            "verdict", "first_test_bar", "last_test_bar", "symbols", "symbols_beaten"]
    if not rows:
        return pd.DataFrame(columns=cols)
    table = pd.DataFrame(rows)
    key = table["sharpe"].astype(float).fillna(-np.inf)
    table = table.iloc[np.argsort(-key.to_numpy(), kind="stable")].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table[cols]


def _scope(info: dict[str, Any]) -> str | None:
    """The market(s) of a run: its symbol, or "universe: A, B, C" for a universe run."""
    if info.get("universe"):
        return "universe: " + ", ".join(map(str, info.get("symbols") or []))
    return info.get("symbol")


def _symbols_beaten(row: dict[str, Any]) -> str | None:
    """For a universe run's row: on how many symbols it beats buy & hold and persistence (Holm-adjusted)."""
    parts = []
    for key, name in (("beats_buy_and_hold", "buy & hold"), ("beats_persistence", "persistence")):
        bc = row.get(key)
        if isinstance(bc, dict) and bc.get("n_symbols"):
            parts.append(f"{name} {bc.get('holm')}/{bc.get('n_symbols')}")
    return ", ".join(parts) + " (Holm)" if parts else None


def seed_samples(runs: list[RunData]) -> pd.DataFrame:
    """One row per configuration × seed for runs with several seeds: ``config, seed, sharpe, total_return, f1``.

    ``config`` is ``"<run>: <portfolio without /seed=N>"``. Taken from summary
    rows labelled ``.../seed=N``; failing those, from ``equity.csv`` columns
    with that suffix (total return = last / first - 1; Sharpe = mean / std of
    per-bar returns × sqrt(periods_per_year)) with F1 from the model's
    ``per_seed`` classification; failing those, per-seed F1 of each model
    (``config = "<run>: <model>"``) when ``per_seed`` has more than one seed.
    """
    rows: list[dict[str, Any]] = []
    for r in runs:
        got = []
        for s in r.metrics.get("summary") or []:
            m = _SEED_RE.match(str(s.get("portfolio", ""))) if isinstance(s, dict) else None
            if m:
                got.append({"config": f"{r.name}: {m['base']}", "seed": int(m["seed"]),
                            "sharpe": _f(s.get("sharpe")), "total_return": _f(s.get("total_return")),
                            "f1": _f(s.get("f1"))})
        if not got:
            ppy = _f((r.metrics.get("run") or {}).get("periods_per_year"))
            for col in r.equity.columns:
                m = _SEED_RE.match(str(col))
                if not m:
                    continue
                values = r.equity[col].dropna()
                rets = values.pct_change().dropna()
                total = float(values.iloc[-1] / values.iloc[0] - 1) if len(values) > 1 and values.iloc[0] else None
                sd = float(rets.std()) if len(rets) > 1 else 0.0
                sharpe = float(rets.mean() / sd * math.sqrt(ppy)) if sd > 0 and ppy else None
                model = m["base"].split("/")[0]
                cls = _per_seed(r.metrics, model, m["seed"])
                got.append({"config": f"{r.name}: {m['base']}", "seed": int(m["seed"]), "sharpe": sharpe,
                            "total_return": total, "f1": _f((cls or {}).get("f1"))})
        if not got:
            for model, block in (r.metrics.get("models") or {}).items():
                per_seed = (block or {}).get("per_seed") or {}
                if len(per_seed) > 1:
                    for seed, vals in per_seed.items():
                        got.append({"config": f"{r.name}: {model}", "seed": seed, "sharpe": None,
                                    "total_return": None, "f1": _f(((vals or {}).get("classification") or {}).get("f1"))})
        rows += got
    return pd.DataFrame(rows, columns=["config", "seed", "sharpe", "total_return", "f1"])


def _per_seed(metrics: dict[str, Any], model: str, seed: str) -> dict[str, Any] | None:
    per_seed = ((metrics.get("models") or {}).get(model) or {}).get("per_seed") or {}
    block = per_seed.get(str(seed)) or per_seed.get(int(seed))  # type: ignore[call-overload]
    return (block or {}).get("classification")


# --------------------------------------------------------------------------- figures


def _best_portfolio(run: RunData) -> str | None:
    """The run's best non-baseline portfolio present in equity.csv (summary is sorted best first)."""
    cols = set(map(str, run.equity.columns))
    summary = [s for s in run.metrics.get("summary") or [] if isinstance(s, dict)]
    for s in summary:
        label = str(s.get("portfolio"))
        if label not in BASELINES and s.get("model") is not None and label in cols:
            return label
    for s in summary:
        label = str(s.get("portfolio"))
        if label not in BASELINES and label in cols:
            return label
    return None


def equity_overlay(runs: list[RunData]) -> Figure:
    """Log-scale equity of each run's best portfolio, plus buy & hold of the first run (black)."""
    fig = Figure(figsize=(12.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    handles, labels = [], []
    for i, r in enumerate(runs):
        best = _best_portfolio(r)
        if best is None:
            continue
        s = r.equity[best].where(lambda v: v > 0)
        (h,) = ax.plot(_naive_utc(s.index), s.to_numpy(float), color=_color(i), linewidth=1.0)
        handles.append(h)
        labels.append(f"{r.name}: {best}")
    if runs and "buy_and_hold" in runs[0].equity.columns:
        s = runs[0].equity["buy_and_hold"].where(lambda v: v > 0)
        (h,) = ax.plot(_naive_utc(s.index), s.to_numpy(float), color="black", linewidth=1.8, zorder=5)
        handles.append(h)
        labels.append(f"buy_and_hold ({runs[0].name})")
    if not handles:
        return _message("no portfolios to plot", "Equity of the best portfolio of each run")
    _log_y(ax)
    ax.set_ylabel(f"Equity [{_quote(runs[0].metrics)}]")
    ax.set_xlabel("Bar [UTC]")
    ax.grid(True, which="major", alpha=0.3)
    _date_axis(ax)
    fig.legend(handles, labels, loc="outside right upper", fontsize="small", frameon=False,
               ncol=max(1, math.ceil(len(labels) / 22)))
    fig.suptitle("Best portfolio of each run (log scale; black: buy & hold)")
    return fig


def seed_boxplots(samples: pd.DataFrame) -> Figure:
    """Spread over seeds of Sharpe, total return [%] and F1, one horizontal box per configuration."""
    if samples.empty:
        return _message("single seed everywhere: no spread to show", "Spread over seeds")
    configs = list(dict.fromkeys(samples["config"]))
    panels = [("sharpe", "Sharpe (annualised)", 1.0), ("total_return", "Total return [%]", 100.0), ("f1", "F1", 1.0)]
    height = max(3.0, 0.35 * len(configs) + 1.5)
    fig = Figure(figsize=(12.0, height), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    ypos = np.arange(len(configs))
    for ax, (col, label, scale) in zip(axes, panels):
        data, pos = [], []
        for j, c in enumerate(configs):
            v = pd.to_numeric(samples.loc[samples["config"] == c, col], errors="coerce").dropna().to_numpy() * scale
            if v.size:
                data.append(v)
                pos.append(j)
        if data:
            _hbox(ax, data, pos)
            rng = np.random.default_rng(0)
            for j, v in zip(pos, data):
                ax.scatter(v, j + rng.uniform(-0.15, 0.15, v.size), s=10, color=_color(j), zorder=3)
        else:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
        if col == "total_return":
            ax.axvline(0.0, color="0.5", linewidth=0.6)
        ax.set_xlabel(label)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(ypos, configs, fontsize="small")
    axes[0].set_ylim(len(configs) - 0.5, -0.5)
    fig.suptitle("Spread over seeds per configuration (box: quartiles, line: median, dots: seeds)")
    return fig


def _hbox(ax: Any, data: list[np.ndarray], pos: list[int]) -> None:
    kw = {"positions": pos, "widths": 0.6, "showfliers": False, "medianprops": {"color": "black"}}
    try:
        ax.boxplot(data, orientation="horizontal", **kw)  # matplotlib >= 3.10
    except TypeError:
        ax.boxplot(data, vert=False, **kw)


# --------------------------------------------------------------------------- the page


def _ranked_html(table: pd.DataFrame) -> str:
    headers = ["#", ("Run", "l"), ("Portfolio", "l"), "Total return [%]", "Sharpe", "Max drawdown [%]", "F1",
               ("Verdict", "l"), ("Test span (UTC)", "l"), ("Symbols", "l"), ("Symbols beaten", "l")]
    body, classes = [], []
    for r in table.to_dict("records"):
        span = f"{r.get('first_test_bar') or 'n/a'} → {r.get('last_test_bar') or 'n/a'}"
        body.append([r["rank"], Cell(r["run"], "l"), Cell(r["portfolio"], "l"),
                     fmt_pct(r["total_return"], 1).rstrip("%"), fmt_num(r["sharpe"]),
                     fmt_pct(r["max_drawdown"], 1).rstrip("%"), fmt_num(r["f1"], 3),
                     Cell(r.get("verdict") or "", "l " + verdict_class(r.get("verdict"))), Cell(span, "l"),
                     Cell(r.get("symbols") or "n/a", "l"), Cell(r.get("symbols_beaten") or "—", "l")])
        classes.append("base" if r["portfolio"] in BASELINES or r.get("model") is None else "")
    return html_table(headers, body, row_classes=classes, table_id="ranked")


def _json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for r in table.to_dict("records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                        int(v) if isinstance(v, np.integer) else v) for k, v in r.items()})
    return out


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Compare finished runs; write ``compare.html``, ``compare.json`` and ``figures/*.png`` to ``out_dir``.

    Raises :class:`RunDirError` (one line naming the directory) for a missing
    run directory or a missing / corrupt ``metrics.json``, ``equity.csv`` or
    ``config.toml``; nothing is written then. Returns the path of compare.html.
    """
    if not run_dirs:
        raise RunDirError("compare: no run directories given")
    runs = _unique_names([load_run(d) for d in run_dirs])
    out_dir = Path(out_dir)
    table = ranked_table(runs)
    samples = seed_samples(runs)

    figures: dict[str, Figure] = {"equity": equity_overlay(runs)}
    if not samples.empty:
        figures["seeds"] = seed_boxplots(samples)
    try:
        pngs = {k: figure_png(f) for k, f in figures.items()}
    finally:
        for f in figures.values():
            f.clear()

    save_figures(pngs, out_dir / "figures")
    write_json(out_dir / "compare.json", {
        "runs": [{"name": r.name, "path": str(r.path),
                  "first_test_bar": (r.metrics.get("run") or {}).get("first_test_bar"),
                  "last_test_bar": (r.metrics.get("run") or {}).get("last_test_bar")} for r in runs],
        "ranked_by": "sharpe",
        "ranked": _json_rows(table),
        "seeds": _json_rows(samples),
    })

    body = [
        "<h1>walkforward comparison</h1>",
        f'<p class="note">{len(runs)} runs; every number is out of sample (walk-forward test blocks only). '
        "Ranked by annualised Sharpe ratio, highest first. Returns and drawdowns in % of the starting value; "
        "shaded rows are baselines.</p>",
        "<h2>Ranked configurations</h2>",
        _ranked_html(table),
        "<h2>Equity</h2>",
        f'<figure>{img_tag(pngs["equity"], "equity overlay")}<figcaption>Equity of each run\'s best portfolio '
        "(its first non-baseline row of the summary; with several seeds that is the luckiest seed, an "
        "optimistic pick: see the spread over seeds below) and buy &amp; hold of the first run, log scale; "
        "signals decided at the close of bar t are traded at the open of bar t+1.</figcaption></figure>",
    ]
    if "seeds" in pngs:
        body += ["<h2>Spread over seeds</h2>",
                 f'<figure>{img_tag(pngs["seeds"], "seed box plots")}<figcaption>Sharpe, total return and F1 '
                 "of each seed, per configuration (run: portfolio). A configuration whose boxes overlap another's "
                 "is not reliably better, whatever its single-seed rank.</figcaption></figure>"]
    else:
        body.append('<p class="note">Every run has a single seed: no spread over seeds to show.</p>')
    body.append("<h2>Configurations</h2>")
    for r in runs:
        body.append(f"<details><summary>{esc(r.name)} ({esc(r.path)})</summary>"
                    f"<pre>{esc(r.config_text)}</pre></details>")
    return write_text(out_dir / "compare.html", page("walkforward comparison", "\n".join(body)))
