"""Tests of reports/: figures, the run report and the run comparison.

Inputs are synthetic and built here: daily bars (UTC midnight) starting
2018-01-01, 3 models x 2 seeds x 200 bars in 4 folds for most tests, and one
20-model x 2,900-bar case (~8 years) for a readability smoke test.
"""
from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from backtest.errors import RunDirError
from reports import compare, figures
from reports.html import figure_png, render_report, save_figures, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- synthetic run data


def make_predictions(models: list[str], seeds: list[int], n_bars: int, n_folds: int, *, rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    ts = pd.date_range("2018-01-01", periods=n_bars, freq="D", tz="UTC", name="timestamp")
    r = rng.normal(0.0005, 0.035, n_bars)  # r[t+1], the next bar's log return
    close = 10_000.0 * np.exp(np.concatenate([[0.0], np.cumsum(r[:-1])]))
    fold = np.minimum(np.arange(n_bars) * n_folds // n_bars, n_folds - 1)
    frames = []
    for i, m in enumerate(models):
        for s in seeds:
            noise = rng.normal(0, 1.0, n_bars)
            y_pred = (0.02 + 0.005 * i) * r + 0.004 * noise if m != "persistence" else np.zeros(n_bars)
            frames.append(pd.DataFrame({"timestamp": ts, "model": m, "seed": s, "fold": fold, "y_true": r,
                                        "y_pred": y_pred, "close": close, "pred_close": close * np.exp(y_pred)}))
    return pd.concat(frames, ignore_index=True)


def make_history(models: list[str], seeds: list[int], n_folds: int, epochs: int = 12):
    rows = []
    for m in models:
        if m in ("persistence", "linear"):
            continue
        for s in seeds:
            for f in range(n_folds):
                for e in range(epochs):
                    level = 1e-3 * (1 + 0.3 * np.sin(f / 3) + 0.05 * s)
                    rows.append({"model": m, "seed": s, "fold": f, "epoch": e,
                                 "loss": level * (1 + 2 * np.exp(-e / 3)),
                                 "val_loss": 1.2 * level * (1 + np.exp(-e / 3)) + 2e-5 * max(0, e - 6 - f % 4)})
    return pd.DataFrame(rows, columns=["model", "seed", "fold", "epoch", "loss", "val_loss"])


def make_equity(predictions: pd.DataFrame, labels: list[str], *, rng_seed: int = 1):
    rng = np.random.default_rng(rng_seed)
    first = predictions[predictions["model"] == predictions["model"].iloc[0]].drop_duplicates("timestamp")
    idx = pd.DatetimeIndex(first["timestamp"], name="timestamp")
    bh = 10_000.0 * np.exp(np.cumsum(first["y_true"].to_numpy()))
    data = {"buy_and_hold": bh, "always_flat": np.full(len(idx), 10_000.0),
            "sma_cross": 10_000.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, len(idx))))}
    for lab in labels:
        data[lab] = 10_000.0 * np.exp(np.cumsum(rng.normal(0.0005, 0.02, len(idx))))
    return pd.DataFrame(data, index=idx)


def _cls(rng):
    tp, fp, tn, fn = (int(x) for x in rng.integers(20, 60, 4))
    return {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn),
            "accuracy": (tp + tn) / (tp + fp + tn + fn), "balanced_accuracy": 0.51, "mcc": 0.02,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "support": tp + fp + tn + fn, "base_rate": 0.52}


def make_metrics(models: list[str], seeds: list[int], equity: pd.DataFrame, name: str = "synthetic"):
    rng = np.random.default_rng(2)
    summary = []
    for col in equity.columns:
        v = equity[col]
        model = None if col in figures.BASELINES else col.split("/")[0]
        summary.append({"portfolio": col, "model": model, "strategy": col.split("/")[1] if model else col,
                        "total_return": float(v.iloc[-1] / v.iloc[0] - 1), "cagr": 0.1, "sharpe": float(rng.normal(0.8, 0.5)),
                        "sortino": 1.1, "max_drawdown": -0.35, "trades": 12, "exposure": 0.5,
                        "precision": 0.52 if model else None, "recall": 0.6 if model else None,
                        "f1": float(rng.uniform(0.4, 0.6)) if model else None,
                        "verdict": "beats buy & hold and persistence" if model else "baseline"})
    summary.sort(key=lambda r: -r["sharpe"])
    models_block = {}
    for m in models:
        per_seed = {str(s): {"classification": _cls(rng),
                             "regression": {"mse": 1e-3, "rmse": 0.0316, "mae": 0.024, "price_mae": 312.5,
                                            "price_rmse": 450.0, "mse_vs_persistence": 0.998 if m != "persistence" else None},
                             "significance": {"diebold_mariano": {"statistic": -0.4, "p_value": 0.69},
                                              "pesaran_timmermann": {"statistic": 1.9, "p_value": 0.0004}}}
                    for s in seeds}
        block = {"per_seed": per_seed}
        if len(seeds) > 1:
            block["mean"] = per_seed[str(seeds[0])]
            block["std"] = {"classification": {"f1": 0.01, "accuracy": None}}
        models_block[m] = block
    run = {"name": name, "timeframe": "1d", "periods_per_year": 365.0,
           "first_test_bar": equity.index[0].isoformat(), "last_test_bar": equity.index[-1].isoformat(),
           "fees": 0.001, "slippage": 0.0005, "symbol": "BTC/USDT"}
    return {"run": run, "summary": summary, "models": models_block}


MODELS = ["persistence", "linear", "lstm"]
SEEDS = [1, 2]


@pytest.fixture(scope="module")
def small():
    preds = make_predictions(MODELS, SEEDS, 200, 4)
    labels = [f"{m}/long_flat/seed={s}" for m in MODELS for s in SEEDS]
    equity = make_equity(preds, labels)
    metrics = make_metrics(MODELS, SEEDS, equity)
    return {"predictions": preds, "history": make_history(MODELS, SEEDS, 4), "equity": equity, "metrics": metrics}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.tables: list[str] = []
        self.links: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if a.get(k):
                self.links.append(a[k])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables.append(self._table)
            self.rows[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Collector:
    p = _Collector()
    p.feed(text)
    p.close()
    return p


# --------------------------------------------------------------------------- figures


FIGURE_FUNCS = {
    "price_forecast": lambda d: figures.price_forecast(d["predictions"]),
    "pred_vs_actual": lambda d: figures.pred_vs_actual(d["predictions"]),
    "training_loss": lambda d: figures.training_loss(d["history"]),
    "equity": lambda d: figures.equity_curves(d["equity"]),
    "drawdown": lambda d: figures.drawdown(d["equity"]),
    "confusion": lambda d: figures.confusion_matrices(d["metrics"]),
    "fold_scores": lambda d: figures.fold_scores(d["predictions"]),
}


@pytest.mark.parametrize("name", list(FIGURE_FUNCS))
def test_each_figure_returns_a_figure_with_axes(small, name):
    fig = FIGURE_FUNCS[name](small)
    assert isinstance(fig, Figure)
    assert any(ax.get_visible() and ax.has_data() for ax in fig.axes)


def test_all_figures_has_stable_names(small):
    figs = figures.all_figures(small["predictions"], small["history"], small["equity"], small["metrics"])
    assert tuple(figs) == figures.FIGURE_NAMES
    assert all(isinstance(f, Figure) and f.axes for f in figs.values())


def test_empty_history_says_no_trained_models():
    fig = figures.training_loss(pd.DataFrame(columns=["model", "seed", "fold", "epoch", "loss", "val_loss"]))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("no trained models" in t for t in texts)


def test_equity_uses_log_scale_and_emphasises_buy_and_hold(small):
    fig = figures.equity_curves(small["equity"])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert "[" in ax.get_ylabel()  # units
    bh = [ln for ln in ax.lines if ln.get_color() == "black"]
    assert bh and bh[0].get_linewidth() > max(ln.get_linewidth() for ln in ax.lines if ln.get_color() != "black")


def test_fold_score_table_matches_sklearn(small):
    from sklearn.metrics import accuracy_score, f1_score

    table = figures.fold_score_table(small["predictions"])
    assert set(table["model"]) == set(MODELS)
    assert len(table) == len(MODELS) * 4
    p = small["predictions"]
    g = p[(p["model"] == "lstm") & (p["fold"] == 2)]
    want_acc = np.mean([accuracy_score(x["y_true"] > 0, x["y_pred"] > 0) for _, x in g.groupby("seed")])
    want_f1 = np.mean([f1_score(x["y_true"] > 0, x["y_pred"] > 0, zero_division=0) for _, x in g.groupby("seed")])
    row = table[(table["model"] == "lstm") & (table["fold"] == 2)].iloc[0]
    assert row["accuracy"] == pytest.approx(want_acc)
    assert row["f1"] == pytest.approx(want_f1)
    assert row["start"] == g["timestamp"].min()


def test_twenty_models_eight_years_render_readably():
    models = [f"m{i:02d}" for i in range(20)]
    preds = make_predictions(models, [0], 2900, 48)
    equity = make_equity(preds, [f"{m}/long_flat" for m in models])
    metrics = make_metrics(models, [0], equity)
    figs = figures.all_figures(preds, make_history(models, [0], 48, epochs=5), equity, metrics)
    for name, fig in figs.items():
        w, h = fig.get_size_inches()
        assert w <= 14 and h <= 22, (name, w, h)  # at dpi 110: at most ~1,500 x 2,400 px
        png = figure_png(fig, dpi=40)  # low dpi: the layout and ticks are what can fail, and it keeps this fast
        assert png.startswith(PNG_MAGIC) and len(png) < 1_000_000, (name, len(png))
    # 20 models are shown as small multiples, not 20 overlaid lines in one axes
    assert len([ax for ax in figs["price_forecast"].axes if ax.get_visible()]) == 20
    assert len([ax for ax in figs["equity"].axes if ax.get_visible()]) == 20


# --------------------------------------------------------------------------- html


@pytest.fixture(scope="module")
def report_html(small):
    figs = figures.all_figures(small["predictions"], small["history"], small["equity"], small["metrics"])
    return render_report(small["metrics"], figs, title="Synthetic <run>"), figs


def test_report_is_self_contained_and_embeds_every_figure(report_html):
    text, figs = report_html
    parsed = _parse(text)
    assert len(parsed.imgs) == len(figs)
    assert all(src.startswith("data:image/png;base64,") for src in parsed.imgs)
    assert base64.b64decode(parsed.imgs[0].split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not [u for u in parsed.links if u.startswith(("http://", "https://", "//"))]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text.lower()
    assert "Synthetic &lt;run&gt;" in text  # escaped


def test_report_summary_table_in_given_order(small, report_html):
    text, _ = report_html
    parsed = _parse(text)
    assert parsed.tables[0] == "summary" and "models" in parsed.tables
    rows = parsed.rows["summary"]
    assert [r[1] for r in rows] == [s["portfolio"] for s in small["metrics"]["summary"]]
    bh = next(r for r in rows if r[1] == "buy_and_hold")
    want = small["metrics"]["summary"][[s["portfolio"] for s in small["metrics"]["summary"]].index("buy_and_hold")]
    assert bh[4] == f"{100 * want['total_return']:.1f}"
    assert "35.0" in bh  # max drawdown -0.35 shown as a 35.0 % magnitude
    assert "n/a" in bh  # None precision of a baseline


def test_report_models_table_and_run_info(small, report_html):
    text, _ = report_html
    parsed = _parse(text)
    rows = parsed.rows["models"]
    assert [r[0] for r in rows] == MODELS
    assert "<0.001" in rows[0] and "0.690" in rows[0]  # PT and DM p-values
    assert rows[0][rows[0].index("0.690") - 1] == "-0.40"
    assert "n/a" in rows[0]  # persistence's undefined ratio to itself
    assert "synthetic" in text and "0.100%" in text and "0.050%" in text
    assert "out of sample" in text


def test_save_figures_and_write_report(tmp_path, small):
    figs = {"equity": figures.equity_curves(small["equity"]), "drawdown": figures.drawdown(small["equity"])}
    paths = save_figures(figs, tmp_path / "f")
    assert [p.name for p in paths] == ["equity.png", "drawdown.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)

    out = write_report(tmp_path / "run", small["metrics"], small["predictions"], small["history"], small["equity"])
    assert out == tmp_path / "run" / "report.html"
    pngs = sorted(p.stem for p in (tmp_path / "run" / "figures").glob("*.png"))
    assert pngs == sorted(figures.FIGURE_NAMES)
    assert len(_parse(out.read_text()).imgs) == len(figures.FIGURE_NAMES)
    assert not list((tmp_path / "run").rglob("*.tmp"))


# --------------------------------------------------------------------------- compare


def _write_run(d: Path, models: list[str], seeds: list[int], rng_seed: int) -> Path:
    preds = make_predictions(models, seeds, 120, 3, rng_seed=rng_seed)
    labels = [f"{m}/long_flat" + (f"/seed={s}" if len(seeds) > 1 else "") for m in models for s in seeds]
    equity = make_equity(preds, labels, rng_seed=rng_seed)
    metrics = make_metrics(models, seeds, equity, name=d.name)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    equity.to_csv(d / "equity.csv", index_label="timestamp")
    (d / "config.toml").write_text(f'[run]\nname = "{d.name}"\nseeds = {seeds}\n')
    return d


def test_compare_runs_ranks_and_plots_seed_spread(tmp_path):
    a = _write_run(tmp_path / "runs" / "dropout_0.2", ["lstm", "gru"], [1, 2, 3], 3)
    b = _write_run(tmp_path / "runs" / "dropout_0.0", ["lstm"], [1, 2, 3], 4)
    out = compare.compare_runs([a, b], tmp_path / "cmp")
    assert out == tmp_path / "cmp" / "compare.html"
    parsed = _parse(out.read_text())
    assert "ranked" in parsed.tables
    assert len(parsed.imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in parsed.imgs)
    assert not [u for u in parsed.links if u.startswith(("http://", "https://"))]
    assert (tmp_path / "cmp" / "figures" / "equity.png").is_file()
    assert (tmp_path / "cmp" / "figures" / "seeds.png").is_file()

    ranked = json.loads((tmp_path / "cmp" / "compare.json").read_text())["ranked"]
    n_rows = sum(len(json.loads((d / "metrics.json").read_text())["summary"]) for d in (a, b))
    assert len(ranked) == n_rows == len(parsed.rows["ranked"])
    sharpes = [r["sharpe"] for r in ranked]
    assert sharpes == sorted(sharpes, reverse=True)
    assert {r["run"] for r in ranked} == {"dropout_0.2", "dropout_0.0"}
    assert [r[2] for r in parsed.rows["ranked"]] == [r["portfolio"] for r in ranked]

    samples = compare.seed_samples([compare.load_run(a), compare.load_run(b)])
    assert set(samples["config"]) == {"dropout_0.2: lstm/long_flat", "dropout_0.2: gru/long_flat",
                                      "dropout_0.0: lstm/long_flat"}
    assert (samples.groupby("config").size() == 3).all()


def test_compare_single_seed_runs_have_no_box_plots(tmp_path):
    a = _write_run(tmp_path / "a", ["lstm"], [0], 5)
    b = _write_run(tmp_path / "b", ["gru"], [0], 6)
    out = compare.compare_runs([a, b], tmp_path / "cmp")
    assert len(_parse(out.read_text()).imgs) == 1
    assert not (tmp_path / "cmp" / "figures" / "seeds.png").exists()


def test_compare_missing_run_dir_raises_naming_it(tmp_path):
    a = _write_run(tmp_path / "a", ["lstm"], [0], 5)
    missing = tmp_path / "nope"
    with pytest.raises(RunDirError, match=re.escape(str(missing))):
        compare.compare_runs([a, missing], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_compare_unfinished_run_dir_raises(tmp_path):
    d = _write_run(tmp_path / "x", ["lstm"], [0], 5)
    (d / "metrics.json").unlink()
    with pytest.raises(RunDirError, match=re.escape(f"{d}: not a finished run (metrics.json missing)")):
        compare.compare_runs([d], tmp_path / "cmp")


def test_compare_corrupt_metrics_raises_naming_dir(tmp_path):
    d = _write_run(tmp_path / "broken", ["lstm"], [0], 5)
    (d / "metrics.json").write_text('{"summary": [')
    with pytest.raises(RunDirError, match=re.escape(str(d)) + r": corrupt metrics\.json") as err:
        compare.compare_runs([d], tmp_path / "cmp")
    assert "\n" not in str(err.value)


def test_compare_corrupt_equity_raises_naming_dir(tmp_path):
    d = _write_run(tmp_path / "eq", ["lstm"], [0], 5)
    (d / "equity.csv").write_text("when,value\nnot a date,abc\n")
    with pytest.raises(RunDirError, match=re.escape(str(d)) + r": corrupt equity\.csv"):
        compare.compare_runs([d], tmp_path / "cmp")
