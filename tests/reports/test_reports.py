"""Tests of reports/: figures, the run report and the run comparison.

Metrics always come from a real tiny run (the session fixture ``tiny_real_run`` in
tests/conftest.py: bundled daily BTC/USDT 2020-01-01 .. 2021-02-04), read through
:class:`backtest.schema.RunMetrics`; never from hand-written dicts. Figure inputs
(predictions, history, equity) are synthetic: daily bars (UTC midnight) from
2018-01-01, 3 models x 2 seeds x 200 bars in 4 folds, and one 20-model x
2,900-bar case (~8 years) for a readability smoke test.
"""
from __future__ import annotations

import base64
import json
import re
import html as html_mod
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from backtest.errors import RunDirError
from backtest.schema import RunMetrics, SchemaError
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


MODELS = ["persistence", "linear", "lstm"]
SEEDS = [1, 2]


@pytest.fixture(scope="module")
def small(tiny_real_run):
    preds = make_predictions(MODELS, SEEDS, 200, 4)
    labels = [f"{m}/long_flat/seed={s}" for m in MODELS for s in SEEDS]
    equity = make_equity(preds, labels)
    metrics = RunMetrics.read(tiny_real_run.run_dir / "metrics.json")
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


def test_twenty_models_eight_years_render_readably(small):
    models = [f"m{i:02d}" for i in range(20)]
    preds = make_predictions(models, [0], 2900, 48)
    equity = make_equity(preds, [f"{m}/long_flat" for m in models])
    figs = figures.all_figures(preds, make_history(models, [0], 48, epochs=5), equity, small["metrics"])
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


NUMBER = re.compile(r"^[+-]?(\d[\d,]*(\.\d+)?(e[+-]?\d+)?|<0\.001)( ± .*)?$")


def _columns(text: str, table: str) -> tuple[list[str], list[list[str]]]:
    """A table's headers and rows, with the columns folded away in its ``<table id="TABLE-more">`` appended
    (its first column, the row's name again, dropped)."""
    def one(tid: str) -> tuple[list[str], list[list[str]]]:
        heads = re.search(rf'<table id="{tid}"><thead><tr>(.*?)</tr>', text).group(1)
        return [html_mod.unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", heads)], _parse(text).rows[tid]

    heads, rows = one(table)
    if f'<table id="{table}-more">' in text:
        more_heads, more_rows = one(f"{table}-more")
        assert [r[0] for r in more_rows] == [r[heads.index(more_heads[0])] for r in rows]
        heads, rows = heads + more_heads[1:], [a + b[1:] for a, b in zip(rows, more_rows)]
    return heads, rows


def test_report_summary_table_has_a_number_wherever_the_run_has_one(small, report_html):
    import html as html_mod_  # noqa: F401

    text, _ = report_html
    m = small["metrics"]
    heads, rows = _columns(text, "summary")
    assert [r[1] for r in rows] == [s.portfolio for s in m.summary]  # best first, as the metrics say
    fields = {"Return [%]": "total_return", "Sharpe": "sharpe", "Sortino": "sortino", "Max DD [%]": "max_drawdown",
              "Trades": "trades", "Exposure [%]": "exposure", "Precision": "precision", "Recall": "recall",
              "F1": "f1", "MSE / pers.": "mse_ratio", "Boot. p (2-sided)": "sharpe_diff_p_value_two_sided"}
    assert set(fields) <= set(heads)
    for row, s in zip(rows, m.summary):
        for head, name in fields.items():
            cell = row[heads.index(head)]
            if getattr(s, name) is None:
                assert cell == "n/a", (s.portfolio, head, cell)
            else:
                assert NUMBER.match(cell), (s.portfolio, head, cell)
        assert row[heads.index("Verdict vs buy & hold")] == s.verdict.short()
    # the model portfolios do carry a forecast MSE ratio: the column the old report always showed as n/a
    assert any(s.mse_ratio is not None for s in m.summary if s.model)
    bh = rows[[s.portfolio for s in m.summary].index("buy_and_hold")]
    assert bh[heads.index("Return [%]")] == f"{100 * m.row('buy_and_hold').total_return:.1f}"


def test_report_models_table_has_every_number_and_labels_sides(small, report_html):
    text, _ = report_html
    m = small["metrics"]
    heads, rows = _columns(text, "models")
    assert [r[0] for r in rows] == list(m.models)
    for h in ("DM p (two-sided)", "DM p (one-sided: model better)", "PT p (one-sided: skill)", "MSE / persistence"):
        assert h in heads
    for row, (name, block) in zip(rows, m.models.items()):
        _, seed = block.first_seed()
        dm, pt = seed.significance.diebold_mariano, seed.significance.pesaran_timmermann
        want = {"MSE / persistence": seed.regression.mse_ratio, "DM p (two-sided)": dm.p_value_two_sided,
                "DM p (one-sided: model better)": dm.p_value_one_sided_model_better,
                "PT p (one-sided: skill)": pt.p_value_one_sided_skill, "RMSE [log ret]": seed.regression.rmse,
                "F1": seed.classification.f1, "TP": seed.classification.tp}
        for head, v in want.items():
            cell = row[heads.index(head)]
            if block.type == "persistence" and head == "MSE / persistence":
                assert cell.endswith("(benchmark)")  # the benchmark itself, not judged against itself
                continue
            assert (cell == "n/a") == (v is None), (name, head, cell)
            if v is not None:
                assert NUMBER.match(cell), (name, head, cell)
        if block.type != "persistence":
            assert seed.regression.mse_ratio is not None
            assert row[heads.index("Verdict vs persistence")] == seed.verdict_vs_persistence.short()
    assert "out of sample" in text and f"{m.deflated_sharpe.n_trials} trials" in text


def test_verdict_colour_comes_from_the_outcome_not_the_text(small):
    from backtest.schema import Verdict
    from reports.html import verdict_cell

    beats = Verdict(outcome="beats", p_value=0.01, estimate=1.2, benchmark_value=0.8, test="t")
    same = Verdict(outcome="not_distinguishable", p_value=0.48, estimate=1.2, benchmark_value=0.8, test="t")
    worse = Verdict(outcome="worse", p_value=0.02, estimate=0.1, benchmark_value=0.8, test="t")
    assert "good" in verdict_cell(beats).cls and "bad" in verdict_cell(worse).cls
    c = verdict_cell(same)
    assert "good" not in c.cls and "bad" not in c.cls
    assert same.short() == "≈ B&H (p=0.48)" and "not distinguishable from buy & hold" in same.text()
    assert "two-sided p = 0.480" in c.title


def test_metrics_json_round_trips_and_rejects_drift(small, tmp_path):
    m = small["metrics"]
    again = RunMetrics.from_json(m.to_json())
    assert again == m
    d = m.to_dict()
    d["summary"][0]["mse_vs_persistence"] = 1.0  # a key the schema does not have
    with pytest.raises(SchemaError, match=r"metrics\.json: metrics\.summary\[0\] has unknown field 'mse_vs_persistence'"):
        RunMetrics.from_dict(d)
    d = m.to_dict()
    del d["schema_version"]
    with pytest.raises(SchemaError, match=r"schema_version None, this version reads 3"):
        RunMetrics.from_dict(d)


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


def _copy_run(src: Path, d: Path, **run_changes) -> Path:
    """A copy of the real tiny run under another name; ``run_changes`` edit RunInfo through the schema."""
    import shutil

    shutil.copytree(src, d)
    if run_changes:
        m = RunMetrics.read(d / "metrics.json")
        for k, v in run_changes.items():
            setattr(m.run, k, v)
        m.write(d / "metrics.json")
    return d


def test_compare_ranks_dedupes_and_counts_every_trial(tmp_path, tiny_real_run):
    a = _copy_run(tiny_real_run.run_dir, tmp_path / "runs" / "a")
    b = _copy_run(tiny_real_run.run_dir, tmp_path / "runs" / "b")
    out = compare.compare_runs([a, b, a], tmp_path / "cmp")  # a named twice: compared once
    assert out == tmp_path / "cmp" / "compare.html"
    parsed = _parse(out.read_text())
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    n = len(RunMetrics.read(a / "metrics.json").summary)
    assert len(data["ranked"]) == 2 * n == len(parsed.rows["ranked"])
    sharpes = [r["sharpe"] for r in data["ranked"]]
    assert sharpes == sorted(sharpes, reverse=True)
    models = [s for s in RunMetrics.read(a / "metrics.json").summary if s.model]
    assert data["deflated_sharpe"]["n_trials"] == 2 * len(models)
    assert f"{2 * len(models)} trials" in out.read_text()
    assert data["not_comparable"] == []
    assert not [u for u in parsed.links if u.startswith(("http://", "https://"))]


def test_compare_refuses_runs_on_other_spans_unless_forced(tmp_path, tiny_real_run):
    a = _copy_run(tiny_real_run.run_dir, tmp_path / "a")
    b = _copy_run(tiny_real_run.run_dir, tmp_path / "b", first_test_bar="2019-01-01T00:00:00+00:00")
    with pytest.raises(RunDirError, match=r"compare: runs are not comparable \(test span differs: .*use --force"):
        compare.compare_runs([a, b], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
    c = _copy_run(tiny_real_run.run_dir, tmp_path / "c", timeframe="4h")
    with pytest.raises(RunDirError, match=r"timeframe differs"):
        compare.compare_runs([a, c], tmp_path / "cmp")
    out = compare.compare_runs([a, b], tmp_path / "cmp", force=True)
    assert "Not comparable (compared with --force)" in out.read_text()


def test_seed_box_plots_from_samples():
    samples = pd.DataFrame({"config": ["r: x"] * 3 + ["r: y"] * 3, "seed": [0, 1, 2] * 2,
                            "sharpe": [0.1, 0.3, 0.2, 1.0, 0.9, 1.1], "total_return": [0.1] * 6, "f1": [0.5] * 6})
    fig = compare.seed_boxplots(samples)
    assert len(fig.axes) == 3 and all(ax.has_data() for ax in fig.axes)


def test_compare_missing_run_dir_raises_naming_it(tmp_path, tiny_real_run):
    a = _copy_run(tiny_real_run.run_dir, tmp_path / "a")
    missing = tmp_path / "nope"
    with pytest.raises(RunDirError, match=re.escape(str(missing))):
        compare.compare_runs([a, missing], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_compare_unfinished_run_dir_raises(tmp_path, tiny_real_run):
    d = _copy_run(tiny_real_run.run_dir, tmp_path / "x")
    (d / "metrics.json").unlink()
    with pytest.raises(RunDirError, match=re.escape(f"{d}: not a finished run (metrics.json missing)")):
        compare.compare_runs([d], tmp_path / "cmp")


def test_compare_corrupt_metrics_raises_naming_dir(tmp_path, tiny_real_run):
    d = _copy_run(tiny_real_run.run_dir, tmp_path / "broken")
    (d / "metrics.json").write_text('{"summary": [')
    with pytest.raises(RunDirError, match=re.escape(str(d)) + r": corrupt metrics\.json") as err:
        compare.compare_runs([d], tmp_path / "cmp")
    assert "\n" not in str(err.value)


def test_compare_corrupt_equity_raises_naming_dir(tmp_path, tiny_real_run):
    d = _copy_run(tiny_real_run.run_dir, tmp_path / "eq")
    (d / "equity.csv").write_text("when,value\nnot a date,abc\n")
    with pytest.raises(RunDirError, match=re.escape(str(d)) + r": corrupt equity\.csv"):
        compare.compare_runs([d], tmp_path / "cmp")
