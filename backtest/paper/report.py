"""``walkforward paper report``: an HTML report of the paper account, from the ledger alone.

The ledger is turned into the frames of a run directory -- the wide equity frame
(index bar open time, one column per portfolio label, value at the close in the
quote currency) and the predictions table (``timestamp, model, seed, fold,
y_true, y_pred, close, pred_close``, one row per decision bar whose next close
is known) -- and reported with the backtest's own code: metrics from
:func:`backtest.evaluate.evaluate` (the vectorbt simulation of the same
forecasts on the same bars, with the ledger's synthetic-bar flags, so that it
holds decisions on synthetic bars and moves their fills to the next real open as
the paper engine did; it must agree with the ledger, and the report shows by how
much) and the page from :mod:`reports.html` / :mod:`reports.figures`. The page
says how many bars were synthetic and how many fills were moved off them.
If those report modules cannot be imported, a minimal self-contained page with
an embedded matplotlib equity chart is written instead.

No API key is ever read here; the ledger holds none.
"""
from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import Config, make_model_config, parse_config
from strategies.params import StrategyConfig
from backtest.errors import LedgerError
from backtest.paper.ledger import Account, Ledger, iso, ts
from backtest.paper.logs import get_logger
from backtest.paper.paths import account_paths
from backtest.schema import RunMetrics

PREDICTION_COLUMNS = ["timestamp", "model", "seed", "fold", "y_true", "y_pred", "close", "pred_close"]


@dataclass
class PaperFrames:
    """The ledger as run-directory frames."""

    bars: pd.DataFrame  # the engine window: history + processed bars (frame convention)
    equity: pd.DataFrame  # wide, quote currency at each processed bar's close
    predictions: pd.DataFrame  # run-directory format; y_true NaN for the newest (pending) decision
    history: pd.DataFrame  # training history: epoch, loss, val_loss, model, seed, fold
    signals: pd.DataFrame  # wide bool, index decision bar
    fills: pd.DataFrame
    synthetic: pd.Series  # bool, index as ``bars``: True = inserted or price-replaced by the repair
    fills_moved: int = 0  # fills made later than the bar after their decision (that bar was synthetic)


def paper_frames(ledger: Ledger, acct: Account) -> PaperFrames:
    """Equity, predictions, training history, signals and fills of the account."""
    bars = ledger.window_bars(acct)
    equity = ledger.equity_frame(acct)
    fc = ledger.frame("forecasts")
    if fc.empty:
        preds = pd.DataFrame(columns=PREDICTION_COLUMNS)
    else:
        t = pd.DatetimeIndex([ts(x) for x in fc["bar_time"]])
        close = bars["close"]
        pos = close.index.get_indexer(t)
        nxt = np.where(pos + 1 < len(close), close.to_numpy()[np.minimum(pos + 1, len(close) - 1)], np.nan)
        preds = pd.DataFrame({
            "timestamp": t, "model": fc["model"], "seed": fc["seed"], "fold": fc["fold"],
            "y_true": np.log(nxt / fc["close"].to_numpy()), "y_pred": fc["y_pred"], "close": fc["close"],
            "pred_close": fc["pred_close"],
        })[PREDICTION_COLUMNS].sort_values(["model", "seed", "timestamp"], kind="stable").reset_index(drop=True)
    sig = ledger.frame("signals")
    signals = (sig.pivot(index="bar_time", columns="portfolio", values="long").astype(bool)
               if len(sig) else pd.DataFrame())
    if len(signals):
        signals.index = pd.DatetimeIndex([ts(x) for x in signals.index], name="timestamp")
        signals.columns.name = None
        signals = signals[[c for c in acct.labels if c in signals.columns]]
    hist = []
    for tr in ledger.trainings(acct):
        f = ledger.path.parent / tr.path / "history.csv"
        if f.exists():
            h = pd.read_csv(f)
            if len(h):
                hist.append(h.assign(model=tr.model, seed=tr.seed, fold=tr.fold))
    history = (pd.concat(hist, ignore_index=True) if hist
               else pd.DataFrame(columns=["epoch", "loss", "val_loss", "model", "seed", "fold"]))
    fills = ledger.frame("fills")
    pos = bars.index.get_indexer(pd.DatetimeIndex([ts(x) for x in fills["bar_time"]]))
    dec = bars.index.get_indexer(pd.DatetimeIndex([ts(x) for x in fills["decision_time"]]))
    moved = int((pos - dec > 1).sum())
    return PaperFrames(bars, equity, preds, history, signals, fills, ledger.window_synthetic(acct), moved)


def engine_config(acct: Account, cfg: Config) -> Config:
    """The engine config the account was made with, rebuilt from the ledger's identity."""
    ident = acct.identity
    raw = {"data": {"exchange": acct.exchange, "symbol": acct.symbol, "timeframe": acct.timeframe},
           "features": ident["features"], "walkforward": ident["walkforward"],
           "backtest": {**ident["backtest"], "bootstrap_samples": cfg.backtest.bootstrap_samples},
           "run": {"name": acct.account, "seeds": [acct.seed], "deterministic": ident["deterministic"]}}
    base = parse_config(raw, "ledger identity")
    return base.model_copy(update={
        "models": {n: make_model_config(**d) for n, d in ident["models"].items()},
        "strategies": {n: StrategyConfig(**d) for n, d in ident["strategies"].items()},
    })


def paper_metrics(acct: Account, cfg: Config, frames: PaperFrames) -> tuple[RunMetrics, float | None]:
    """Backtest metrics of the account's forecasts (:func:`backtest.evaluate.evaluate`) and the largest
    relative difference between that vectorbt simulation's equity and the ledger's."""
    from backtest.evaluate import evaluate

    known = frames.predictions.dropna(subset=["y_true"])
    if known["timestamp"].nunique() < 2:
        raise ValueError("fewer than two decisions with a known outcome")
    ev = evaluate(engine_config(acct, cfg), known, {acct.symbol: frames.bars}, acct.timeframe,
                  synthetic={acct.symbol: frames.synthetic} if frames.synthetic is not None else None)
    common = ev.equity.index.intersection(frames.equity.index)
    a = ev.equity.loc[common, frames.equity.columns].to_numpy()
    b = frames.equity.loc[common].to_numpy()
    diff = float(np.max(np.abs(a - b) / np.abs(b))) if len(common) else None
    m = ev.metrics
    m.run.name, m.run.symbol, m.run.exchange = f"paper account {acct.account}", acct.symbol, acct.exchange
    return m, diff


def write_paper_report(cfg: Config, *, ledger_path: str | os.PathLike[str] | None = None,
                       out: str | os.PathLike[str] | None = None) -> Path:
    """Write the HTML report of the account of ``cfg``; return its path (default ``<account folder>/report.html``)."""
    from backtest.atomic import write_text

    log = get_logger()
    paths = account_paths(cfg, ledger_path=ledger_path)
    target = Path(out) if out else paths.report
    with Ledger.open(paths.ledger, create=False) as ledger:
        acct = ledger.account()
        if acct is None:
            raise LedgerError(f"{paths.ledger}: no paper account yet; run 'walkforward paper run CONFIG' first")
        frames = paper_frames(ledger, acct)
        last_train = {t.model: t for t in ledger.trainings(acct)}
    title = f"walkforward paper report: {acct.account} ({acct.exchange} {acct.symbol} {acct.timeframe})"
    metrics: RunMetrics | None = None
    agreement: float | None = None
    try:
        metrics, agreement = paper_metrics(acct, cfg, frames)
    except Exception as exc:  # noqa: BLE001 - too few bars, or a metric undefined: report the ledger as is
        log.warning("paper report: backtest metrics not available (%s: %s)", type(exc).__name__, exc)
    info = _account_section(acct, frames, last_train, agreement)
    try:
        from reports.figures import all_figures
        from reports.html import figure_png, render_report
    except ImportError as exc:
        log.warning("paper report: reports package not importable (%s); writing a minimal page", exc)
        return write_text(target, _minimal_page(title, info, frames))
    if metrics is None:
        return write_text(target, _minimal_page(title, info, frames))
    figures = all_figures(frames.predictions.dropna(subset=["y_true"]), frames.history, frames.equity, metrics)
    try:
        pngs = {name: figure_png(fig) for name, fig in figures.items()}
    finally:
        for fig in figures.values():
            fig.clear()
    page = render_report(metrics, pngs, title=title)
    page = page.replace("</h1>", "</h1>\n" + info, 1)
    return write_text(target, page)


# --------------------------------------------------------------------------- html pieces
def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _account_section(acct: Account, frames: PaperFrames, last_train: dict[str, Any], agreement: float | None) -> str:
    eq = frames.equity
    bh = next((p.label for p in acct.portfolios if p.strategy_type == "buy_and_hold"), None)
    rows = []
    if len(eq):
        last = eq.iloc[-1]
        bh_ret = last[bh] / acct.init_cash - 1 if bh in last else np.nan
        for label in eq.columns:
            ret = last[label] / acct.init_cash - 1
            nxt = frames.signals[label].iloc[-1] if label in frames.signals else None
            rows.append(f"<tr><td class=\"l\">{_e(label)}</td><td class=\"l\">{'long' if nxt else 'flat'}</td>"
                        f"<td>{last[label]:,.2f}</td><td>{100 * ret:+.2f}</td>"
                        f"<td>{'benchmark' if label == bh else f'{100 * (ret - bh_ret):+.2f}'}</td></tr>")
    fills = frames.fills.tail(15).iloc[::-1]
    at = frames.bars.index

    def moved(r: Any) -> str:
        return (" (moved: the bar after the decision was synthetic)"
                if at.get_loc(ts(r.bar_time)) - at.get_loc(ts(r.decision_time)) > 1 else "")

    fill_rows = "".join(
        f"<tr><td class=\"l\">{_e(ts(r.bar_time).isoformat() + moved(r))}</td><td class=\"l\">{_e(r.portfolio)}</td>"
        f"<td class=\"l\">{_e(r.side)}</td><td>{r.size:.8g}</td><td>{r.price:,.2f}</td><td>{r.exec_price:,.2f}</td>"
        f"<td>{r.fees:,.4f}</td></tr>" for r in fills.itertuples())
    trained = "; ".join(f"{m}: fold {t.fold} at {iso(t.bar_time)}" for m, t in last_train.items()) or "not yet"
    span = f"{iso(eq.index[0])} → {iso(eq.index[-1])} ({len(eq)} bars)" if len(eq) else "no bars processed yet"
    agree = ("n/a (too few bars)" if agreement is None else
             f"{agreement:.2e} (largest relative difference between the ledger's equity and the vectorbt "
             "simulation of the same forecasts on the same bars)")
    return (
        "<h2>Paper account</h2>"
        f"<dl class=\"run\"><dt>Account</dt><dd>{_e(acct.account)}</dd>"
        f"<dt>Market</dt><dd>{_e(acct.exchange)} {_e(acct.symbol)} {_e(acct.timeframe)}</dd>"
        f"<dt>Paper bars</dt><dd>{_e(span)}, after {acct.history} bars of history</dd>"
        f"<dt>Starting cash</dt><dd>{acct.init_cash:,.2f} per portfolio</dd>"
        f"<dt>Synthetic bars</dt><dd>{int(frames.synthetic.sum())} (inserted or price-replaced by the repair; no "
        f"decision and no fill on them); fills moved to the next real open: {frames.fills_moved}</dd>"
        f"<dt>Models last trained</dt><dd>{_e(trained)}</dd>"
        f"<dt>Ledger vs backtest engine</dt><dd>{_e(agree)}</dd></dl>"
        "<p class=\"note\">Paper trading: orders decided at the close of bar t are filled on paper at the open of "
        "bar t+1 (of the next real bar when t+1 is synthetic) with the configured fees (fraction of the order value per fill) and slippage (fraction of the "
        "price per fill), exactly as the backtest simulates them. It cannot promise that a real order would have "
        "filled at that price: spreads, partial fills, latency, minimum order sizes and outages are not modelled, "
        "and past paper profits say nothing certain about future ones. No real order was sent.</p>"
        "<h3>Positions at the last close</h3><table><tr><th class=\"l\">Portfolio</th><th class=\"l\">Next bar</th>"
        "<th>Equity</th><th>Return [%]</th><th>vs buy &amp; hold [pp]</th></tr>" + "".join(rows) + "</table>"
        "<h3>Last fills (newest first)</h3><table><tr><th class=\"l\">Bar (fill at its open)</th>"
        "<th class=\"l\">Portfolio</th><th class=\"l\">Side</th><th>Size</th><th>Open</th><th>Exec price</th>"
        "<th>Fees</th></tr>" + fill_rows + "</table>"
    )


def _minimal_page(title: str, info: str, frames: PaperFrames) -> str:
    """A self-contained page: the account section and an embedded equity PNG (matplotlib)."""
    img = ""
    if len(frames.equity):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4.5))
        ax = fig.subplots()
        for col in frames.equity.columns:
            ax.plot(frames.equity.index.tz_localize(None), frames.equity[col], label=col,
                    color="black" if col == "buy_and_hold" else None)
        ax.set_ylabel("equity (quote currency, at each close)")
        ax.set_title("Paper equity: fills at the open after each decision, fees and slippage paid")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        img = f'<img alt="equity" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    css = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1rem}table{border-collapse:collapse}"
           "td,th{border:1px solid #ddd;padding:.2rem .4rem;text-align:right}.l{text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{css}</style></head><body><h1>{_e(title)}</h1>{info}<h2>Equity</h2>{img}</body></html>\n")
