"""Compare finished runs: one ranked table, an equity overlay and seed-spread box plots.

:func:`compare_runs` reads, from each run directory, ``metrics.json``,
``equity.csv`` (wide, index column ``timestamp``) and ``config.toml`` (as text;
the configuration's label is the run folder's name), and writes to ``out_dir``:

* ``compare.html`` -- self-contained page (images embedded, no external URLs);
* ``compare.json`` -- the ranked table;
* ``figures/equity.png`` and, when some run has several seeds, ``figures/seeds.png``.

Ranking is by annualised Sharpe ratio, highest first (undefined Sharpe last;
a flat portfolio has Sharpe 0). Runs are compared only when their test spans,
symbols and timeframes agree (:class:`RunDirError` otherwise); with
``force=True`` they are compared anyway and the page says, in red at the top,
what differs. A run directory named twice is compared once. The page also
gives the deflated Sharpe ratio of the best portfolio over every model x
strategy x seed of every run (in a sweep: every grid point x seed).
"""
from __future__ import annotations

from dataclasses import asdict, replace
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
from backtest.schema import RunMetrics, SchemaError
from reports.figures import BASELINES, _color, _date_axis, _log_y, _message, _naive_utc, _quote
from reports.html import (Cell, esc, figure_png, fmt_num, fmt_p, fmt_pct, html_table, img_tag, page, save_figures,
                          verdict_cell)

__all__ = ["RunData", "load_run", "ranked_table", "seed_samples", "equity_overlay", "seed_boxplots", "compare_runs"]

_SEED_RE = re.compile(r"^(?P<base>.+)/seed=(?P<seed>-?\d+)$")


@dataclass(frozen=True)
class RunData:
    """What the comparison needs from one finished run directory."""

    name: str
    path: Path
    metrics: RunMetrics
    equity: pd.DataFrame
    config_text: str
    source: str = ""  # where the run came from when not its path, e.g. runs:/<id> for an MLflow run

    @property
    def origin(self) -> str:
        """The source recorded in compare.json and the page: ``source``, else the run directory's path."""
        return self.source or str(self.path)


def load_run(run_dir: str | Path) -> RunData:
    """Read one run directory, or raise a one-line :class:`RunDirError` naming it and what is wrong."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunDirError(f"{d}: run directory not found")
    for fname in ("metrics.json", "equity.csv", "config.toml"):
        if not (d / fname).is_file():
            raise RunDirError(f"{d}: not a finished run ({fname} missing)")
    try:
        metrics = RunMetrics.read(d / "metrics.json")
    except SchemaError as exc:
        raise RunDirError(f"{d}: corrupt metrics.json ({_first_line(exc).removeprefix('metrics.json: ')})") from None
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


def _symbols(m: Any) -> str:
    """The market(s) of a run: its symbol, or ``universe: A, B, C`` for a universe run."""
    return f"universe: {', '.join(m.run.symbols)}" if m.run.n_symbols > 1 else m.run.symbol


def _symbols_beaten(row: Any) -> str | None:
    """For a universe row of a model: on how many symbols it beats buy & hold and persistence (Holm)."""
    parts = [f"{name} {bc.holm}/{bc.n_symbols}" for name, bc in
             (("buy & hold", row.beats_buy_and_hold), ("persistence", row.beats_persistence)) if bc is not None]
    return (", ".join(parts) + " (Holm)") if parts else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unique_names(runs: list[RunData]) -> list[RunData]:
    """Give runs with the same folder name distinct labels ("name", "name (2)", ...)."""
    seen: dict[str, int] = {}
    out = []
    for r in runs:
        n = seen.get(r.name, 0) + 1
        seen[r.name] = n
        out.append(r if n == 1 else replace(r, name=f"{r.name} ({n})"))
    return out


# --------------------------------------------------------------------------- tables


def ranked_table(runs: list[RunData]) -> pd.DataFrame:
    """Every run × portfolio of the runs' summaries, ranked by Sharpe (highest first, undefined last).

    Columns: ``rank, run, symbols, portfolio, model, strategy, total_return, sharpe,
    max_drawdown, f1, p_value_two_sided, verdict (a Verdict), symbols_beaten, flags, first_test_bar,
    last_test_bar`` (fractions as in metrics.json; max_drawdown as a non-negative magnitude). A universe
    run's rows are its universe portfolios; ``symbols_beaten`` says on how many of its symbols a model row
    beats each symbol's buy & hold and persistence (Holm-adjusted two-sided tests), None elsewhere.
    """
    rows = []
    for r in runs:
        info = r.metrics.run
        for s in r.metrics.summary:
            rows.append({
                "run": r.name, "symbols": _symbols(r.metrics), "portfolio": s.portfolio, "model": s.model, "strategy": s.strategy,
                "total_return": s.total_return, "sharpe": s.sharpe,
                "max_drawdown": None if s.max_drawdown is None else abs(s.max_drawdown), "f1": s.f1,
                "p_value_two_sided": s.sharpe_diff_p_value_two_sided, "verdict": s.verdict,
                "symbols_beaten": _symbols_beaten(s), "flags": list(s.flags),
                "first_test_bar": info.first_test_bar, "last_test_bar": info.last_test_bar,
            })
    cols = ["rank", "run", "symbols", "portfolio", "model", "strategy", "total_return", "sharpe", "max_drawdown", "f1",
            "p_value_two_sided", "verdict", "symbols_beaten", "flags", "first_test_bar", "last_test_bar"]
    if not rows:
        return pd.DataFrame(columns=cols)
    table = pd.DataFrame(rows)
    key = pd.to_numeric(table["sharpe"], errors="coerce").astype(float).fillna(-np.inf)
    table = table.iloc[np.argsort(-key.to_numpy(), kind="stable")].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table[cols]


def seed_samples(runs: list[RunData]) -> pd.DataFrame:
    """One row per configuration × seed for runs with several seeds: ``config, seed, sharpe, total_return, f1``.

    ``config`` is ``"<run>: <portfolio without /seed=N>"``, from summary rows labelled ``.../seed=N``.
    """
    rows: list[dict[str, Any]] = []
    for r in runs:
        for s in r.metrics.summary:
            m = _SEED_RE.match(s.portfolio)
            if m:
                rows.append({"config": f"{r.name}: {m['base']}", "seed": int(m["seed"]), "sharpe": s.sharpe,
                             "total_return": s.total_return, "f1": s.f1})
    return pd.DataFrame(rows, columns=["config", "seed", "sharpe", "total_return", "f1"])


def mismatches(runs: list[RunData]) -> list[str]:
    """What makes the runs not comparable: differing test spans, symbols or timeframes (one line each)."""
    out = []
    for what, get in (("test span", lambda m: f"{m.run.first_test_bar} → {m.run.last_test_bar}"),
                      ("symbol", _symbols), ("timeframe", lambda m: m.run.timeframe)):
        values = {r.name: get(r.metrics) for r in runs}
        if len(set(values.values())) > 1:
            out.append(f"{what} differs: " + "; ".join(f"{k}: {v}" for k, v in values.items()))
    return out


def deflated_sharpe_over_runs(runs: list[RunData]):  # type: ignore[no-untyped-def]
    """The deflated Sharpe ratio of the best portfolio over every model x strategy x seed of every run.

    Per-bar returns come from each run's ``equity.csv`` (without the first bar, nothing executed there),
    on the bars the runs share; trials are labelled ``"<run>: <portfolio>"``."""
    from backtest.evaluate import deflated_sharpe

    cols: dict[str, pd.Series] = {}
    sharpes: dict[str, float | None] = {}
    for r in runs:
        for s in r.metrics.summary:
            if s.model is not None and s.portfolio in r.equity.columns:
                key = f"{r.name}: {s.portfolio}"
                cols[key] = r.equity[s.portfolio].pct_change().iloc[1:]
                sharpes[key] = s.sharpe
    frame = pd.DataFrame(cols).dropna()
    return deflated_sharpe(frame, list(frame.columns), sharpes)


# --------------------------------------------------------------------------- figures


def _best_portfolio(run: RunData) -> str | None:
    """The run's best non-baseline portfolio present in equity.csv (summary is sorted best first)."""
    cols = set(map(str, run.equity.columns))
    for s in run.metrics.summary:
        if s.portfolio not in BASELINES and s.model is not None and s.portfolio in cols:
            return s.portfolio
    for s in run.metrics.summary:
        if s.portfolio not in BASELINES and s.portfolio in cols:
            return s.portfolio
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
    universe = bool(table["symbols_beaten"].notna().any()) if len(table) else False
    headers = ["#", ("Run", "l"), ("Symbols", "l"), ("Portfolio", "l"), "Total return [%]", "Sharpe", "Max drawdown [%]", "F1",
               "Boot. p (2-sided)", ("Verdict vs buy & hold", "l")] + ([("Symbols beaten", "l")] if universe else []) \
        + [("Flags", "l"), ("Test span (UTC)", "l")]
    body, classes = [], []
    for r in table.to_dict("records"):
        span = f"{r.get('first_test_bar') or 'n/a'} → {r.get('last_test_bar') or 'n/a'}"
        flags = "; ".join(r["flags"])
        beaten = [Cell(r["symbols_beaten"] or "—", "l")] if universe else []
        body.append([r["rank"], Cell(r["run"], "l"), Cell(r["symbols"], "l"), Cell(r["portfolio"], "l"),
                     fmt_pct(r["total_return"], 1).rstrip("%"), fmt_num(r["sharpe"]),
                     fmt_pct(r["max_drawdown"], 1).rstrip("%"), fmt_num(r["f1"], 3), fmt_p(r["p_value_two_sided"]),
                     verdict_cell(r["verdict"])] + beaten + [Cell(("⚑ " + flags) if flags else "", "l bad" if flags else "l"),
                     Cell(span, "l")])
        classes.append("base" if r["portfolio"] in BASELINES or r.get("model") is None else "")
    return html_table(headers, body, row_classes=classes, table_id="ranked")


def _json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    from dataclasses import asdict, is_dataclass

    out = []
    for r in table.to_dict("records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                        asdict(v) if is_dataclass(v) else
                        int(v) if isinstance(v, np.integer) else v) for k, v in r.items()})
    return out


def compare_runs(run_dirs: list[Path], out_dir: Path, *, force: bool = False, sources: list[str] | None = None) -> Path:
    """Compare finished runs; write ``compare.html``, ``compare.json`` and ``figures/*.png`` to ``out_dir``.

    Raises :class:`RunDirError` (one line naming the directory) for a missing
    run directory or a missing / corrupt ``metrics.json``, ``equity.csv`` or
    ``config.toml``, and (unless ``force``) for runs whose test spans, symbols or
    timeframes differ; nothing is written then. A directory named twice counts
    once. ``sources`` (one per run directory) is what compare.json and the page record as each run's
    origin instead of its path, e.g. ``runs:/<id>`` for an MLflow run downloaded to a temporary folder.
    Returns the path of compare.html.
    """
    if not run_dirs:
        raise RunDirError("compare: no run directories given")
    origin = dict(zip((Path(d).resolve() for d in run_dirs), sources or []))
    unique = list(dict.fromkeys(Path(d).resolve() for d in run_dirs))
    runs = _unique_names([replace(load_run(d), source=origin.get(d, "")) for d in unique])
    problems = mismatches(runs)
    if problems and not force:
        raise RunDirError(f"compare: runs are not comparable ({problems[0]}); use --force to compare anyway")
    out_dir = Path(out_dir)
    table = ranked_table(runs)
    dsr = deflated_sharpe_over_runs(runs)
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
        "runs": [{"name": r.name, "path": r.origin,
                  "first_test_bar": r.metrics.run.first_test_bar,
                  "last_test_bar": r.metrics.run.last_test_bar} for r in runs],
        "ranked_by": "sharpe",
        "not_comparable": problems,
        "deflated_sharpe": asdict(dsr),
        "ranked": _json_rows(table),
        "seeds": _json_rows(samples),
    })

    warn = ("".join(f'<p class="note bad" style="color:#9a1c1c"><strong>Not comparable (compared with --force):'
                    f"</strong> {esc(p)}</p>" for p in problems))
    dsr_note = (f'<p class="note" id="dsr">Deflated Sharpe ratio of the best portfolio ({esc(dsr.selected)}) over '
                f"<strong>{dsr.n_trials} trials</strong> (every model × strategy × seed of every run compared, "
                f"baselines not counted): DSR = {fmt_num(dsr.dsr, 3)}, p (one-sided: real skill) = "
                f"{fmt_p(dsr.p_value)}." + (f" Note: {esc(dsr.note)}." if dsr.note else "") + "</p>"
                if dsr.n_trials else '<p class="note" id="dsr">Deflated Sharpe ratio: no model portfolios.</p>')
    body = [
        "<h1>walkforward comparison</h1>",
        warn,
        f'<p class="note">{len(runs)} runs; every number is out of sample (walk-forward test blocks only). '
        "Ranked by annualised Sharpe ratio, highest first. Returns and drawdowns in % of the starting value; "
        "shaded rows are baselines.</p>",
        "<h2>Ranked configurations</h2>",
        _ranked_html(table),
        dsr_note,
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
        body.append(f"<details><summary>{esc(r.name)} ({esc(r.origin)})</summary>"
                    f"<pre>{esc(r.config_text)}</pre></details>")
    return write_text(out_dir / "compare.html", page("walkforward comparison", "\n".join(body)))
