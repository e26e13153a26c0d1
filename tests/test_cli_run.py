"""`walkforward run`, `predict`, `compare`, `sweep` on tiny runs, and their errors."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from backtest.cli import main

TINY = """
[data]
end = "2019-03-01"
[features]
lookback = 8
[walkforward]
initial_train = 400
step = 60
[models.lstm]
type = "lstm"
units = 4
epochs = 2
patience = 1
[models.linear]
type = "linear"
[strategies.lf]
type = "long_flat"
[strategies.ens]
type = "ensemble"
method = "vote"
[backtest]
bootstrap_samples = 200
[run]
name = "tiny"
"""


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    conf = base / "tiny.toml"
    conf.write_text(TINY)
    assert main(["run", str(conf), "--out", str(base / "runs"), "--no-progress"]) == 0
    return base / "runs" / "tiny"


def test_run_ends_with_a_summary_table_best_first(tmp_path, tiny_run: Path, capsys) -> None:
    from backtest.schema import RunMetrics

    conf = tmp_path / "c.toml"
    conf.write_text(TINY)
    capsys.readouterr()
    assert main(["run", str(conf), "--out", str(tiny_run.parent), "--no-progress"]) == 0  # resumes: fast
    out = capsys.readouterr().out.splitlines()
    m = RunMetrics.read(tiny_run / "metrics.json")
    assert out[0].split()[:3] == ["portfolio", "return", "[%]"] and "verdict vs buy & hold" in out[0]
    body = out[2:2 + len(m.summary)]
    assert [ln.split()[0] for ln in body] == [r.portfolio for r in m.summary]
    for ln, r in zip(body, m.summary):
        assert r.verdict.short() in ln and all(f in ln for f in r.flags)
    assert out[-1] == f"report: {tiny_run / 'report.html'}"


def test_run_writes_the_run_directory(tiny_run: Path, capsys) -> None:
    for name in ("config.toml", "meta.json", "predictions.csv", "metrics.json", "trades.csv", "equity.csv", "report.html"):
        assert (tiny_run / name).is_file(), name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    labels = [r["portfolio"] for r in metrics["summary"]]
    assert {"lstm/lf", "linear/lf", "persistence/lf", "ens", "buy_and_hold", "always_flat", "sma_cross"} <= set(labels)
    sharpes = [r["sharpe"] if r["sharpe"] is not None else float("-inf") for r in metrics["summary"]]
    assert sharpes == sorted(sharpes, reverse=True)
    m = metrics["models"]["lstm"]["per_seed"]["0"]
    assert set(m) == {"classification", "regression", "significance", "verdict_vs_persistence"}
    assert {"diebold_mariano", "pesaran_timmermann"} <= set(m["significance"])
    assert "p_value_two_sided" in metrics["portfolios"]["lstm/lf"]["sharpe_vs_buy_and_hold"]
    assert metrics["deflated_sharpe"]["n_trials"] == len([p for p in metrics["portfolios"].values() if p["model"]])
    flat = metrics["portfolios"]["always_flat"]["portfolio"]
    assert flat["total_return"] == 0 and flat["trades"] == 0
    equity = pd.read_csv(tiny_run / "equity.csv", index_col=0)
    preds = pd.read_csv(tiny_run / "predictions.csv")
    assert len(equity) == preds["timestamp"].nunique() + 1  # decision bars plus the bar after the last
    parser = _Images()
    parser.feed((tiny_run / "report.html").read_text())
    pngs = sorted(p.stem for p in (tiny_run / "figures").glob("*.png"))
    assert len(parser.srcs) >= len(pngs) >= 7
    assert all(s.startswith("data:image/png;base64,") for s in parser.srcs)
    assert not re.search(r"(src|href)=\"https?://", (tiny_run / "report.html").read_text())


def test_rerun_resumes_and_changing_costs_reuses_forecasts(tiny_run: Path, tmp_path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(TINY)
    before = (tiny_run / "predictions.csv").read_text()
    out = str(tiny_run.parent)
    assert main(["run", str(conf), "--out", out, "--no-progress", "--set", "backtest.fees=0.002"]) == 0
    assert (tiny_run / "predictions.csv").read_text() == before
    assert json.loads((tiny_run / "meta.json").read_text())["resumed"] is True
    assert json.loads((tiny_run / "metrics.json").read_text())["run"]["fees"] == 0.002
    assert main(["run", str(conf), "--out", out, "--no-progress", "--set", "walkforward.step=30"]) == 2


def test_predict_prints_next_bar(tiny_run: Path, capsys) -> None:
    assert main(["predict", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert "last closed bar 2019-02-28" in out and "USDT" in out
    for model in ("lstm", "linear", "persistence"):
        assert re.search(rf"{model}\s+return [+-]\d+\.\d+%\s+close [\d,]+\.\d+ USDT\s+signal lf: (long|flat)", out)
    assert "forecasts for the bar opening 2019-03-01T00:00:00+00:00" in out
    assert "trained on bars up to" in out and re.search(r"portfolios: .*ens: (long|flat).*sma_cross: (long|flat)", out)
    assert main(["predict", str(tiny_run), "--data", "bundled", "--model", "linear"]) == 0
    got = capsys.readouterr()
    assert "last closed bar 2025-08-26" in got.out
    warn = [ln for ln in got.err.splitlines() if ln]
    assert len(warn) == 1 and "model 'linear'" in warn[0] and "older than one retraining step" in warn[0]


def test_predict_signal_is_the_backtest_signal(tiny_run: Path, tmp_path) -> None:
    """On data ending at the run's last decision bar T, predict's forecasts and signals for T+1 are the
    backtest's own for that bar (same fold model, same build_signals)."""
    from backtest.data.load import bundled_path
    from backtest.predict import predict_next
    from backtest.rundir import read_run
    from backtest.data.load import load_data
    from strategies.build import build_signals

    cfg, _, preds = read_run(tiny_run)
    last = preds["timestamp"].max()
    raw = pd.read_csv(bundled_path())
    raw[pd.to_datetime(raw["timestamp"], utc=True) <= last].to_csv(tmp_path / "upto.csv", index=False)
    res = predict_next(tiny_run, data_source=str(tmp_path / "upto.csv"))
    assert res.forecasts[0].last_bar == last
    sig, _ = build_signals(cfg, preds, load_data(cfg.data).bars)
    want = {c: ("long" if bool(sig[c].iloc[-1]) else "flat") for c in sig.columns}
    assert res.portfolios == want
    for f in res.forecasts:
        run_row = preds[(preds["model"] == f.model) & (preds["timestamp"] == last)].iloc[0]
        assert f.predicted_return == pytest.approx(run_row["y_pred"], abs=1e-6)


def test_predict_mid_span_uses_the_fold_the_backtest_used(tiny_run: Path, tmp_path) -> None:
    """Issue 20 #1: data ending at a bar T inside an *earlier* fold's test block is forecast with that fold's
    model (trained only on bars before its test block), not the newest fold's: predict's forecast equals the
    backtest's forecast made at T, for every model and seed shown."""
    from backtest.data.load import bundled_path
    from backtest.predict import predict_next
    from backtest.rundir import read_run

    _, _, preds = read_run(tiny_run)
    folds = sorted(preds["fold"].unique())
    assert len(folds) >= 2
    in_first = preds[preds["fold"] == folds[0]]["timestamp"].sort_values()
    t = in_first.iloc[len(in_first) // 2]  # mid-block of the first fold, a newer fold exists
    raw = pd.read_csv(bundled_path())
    raw[pd.to_datetime(raw["timestamp"], utc=True) <= t].to_csv(tmp_path / "mid.csv", index=False)
    res = predict_next(tiny_run, data_source=str(tmp_path / "mid.csv"))
    for f in res.forecasts:
        row = preds[(preds["model"] == f.model) & (preds["timestamp"] == t)].iloc[0]
        assert f.last_bar == t and f.fold == row["fold"] == folds[0]
        assert f.predicted_return == pytest.approx(row["y_pred"], abs=1e-6)


def test_predict_refuses_data_ending_before_the_first_test_bar(tiny_run: Path, tmp_path, capsys) -> None:
    """No fold was trained only on bars before such data's next bar: one line, exit 2."""
    from backtest.data.load import bundled_path
    from backtest.rundir import read_run

    _, _, preds = read_run(tiny_run)
    first = preds["timestamp"].min()
    raw = pd.read_csv(bundled_path())
    raw[pd.to_datetime(raw["timestamp"], utc=True) < first].to_csv(tmp_path / "early.csv", index=False)
    assert main(["predict", str(tiny_run), "--data", str(tmp_path / "early.csv")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(err) == 1 and "before the run's first test bar" in err[0]


def test_predict_refuses_data_of_another_timeframe(tiny_run: Path, tmp_path, capsys) -> None:
    from backtest.data.load import bundled_path

    b = pd.read_csv(bundled_path()).iloc[:400]
    b["timestamp"] = pd.date_range("2019-01-01", periods=400, freq="4h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    b.to_csv(tmp_path / "h4.csv", index=False)
    assert main(["predict", str(tiny_run), "--data", str(tmp_path / "h4.csv")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(err) == 1 and "4h bars, but the run" in err[0] and "1d bars" in err[0]


def test_progress_text_has_no_nan_for_models_without_validation() -> None:
    from backtest.run import progress_text
    from backtest.folds.store import FoldResult

    r = FoldResult(("linear", 0, 1), pd.DataFrame(), pd.DataFrame(), 0.1, train_rows=150)  # best_val_loss NaN
    assert progress_text(r, 3) == "linear seed 0 fold 2/3 train 150 rows"
    r.best_val_loss = 0.01234
    assert progress_text(r, 3).endswith("best val 0.01234")


def test_a_cli_run_prints_no_tensorflow_start_up_lines(tmp_path) -> None:
    import subprocess
    import sys

    conf = tmp_path / "t.toml"
    conf.write_text('[data]\nend = "2018-06-01"\n[features]\nlookback = 8\n[walkforward]\ninitial_train = 200\n'
                    'step = 60\nmax_folds = 1\n[models.lin]\ntype = "linear"\n'
                    # a Keras network, so TensorFlow is really imported and trained in the CLI process
                    # (a linear-only run never imports it, and then passes without any filtering)
                    '[models.net]\ntype = "lstm"\nunits = 4\nepochs = 1\nbatch_size = 32\npatience = 0\n'
                    '[backtest]\nbootstrap_samples = 100\n[run]\nname = "q"\n')
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TF_")}
    p = subprocess.run([sys.executable, "-m", "backtest.cli", "run", str(conf), "--out", str(tmp_path / "r"),
                        "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr  # no cudart_stub / absl / cpu_feature_guard lines
    assert (tmp_path / "r" / "q" / "folds" / "net").is_dir()  # the network was trained


def test_compare_and_missing_or_corrupt_run_dirs(tiny_run: Path, tmp_path, capsys) -> None:
    assert main(["compare", str(tiny_run), str(tiny_run), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.html").is_file()
    ranked = json.loads((tmp_path / "cmp" / "compare.json").read_text())["ranked"]
    assert len(ranked) == len(json.loads((tiny_run / "metrics.json").read_text())["summary"])  # named twice, once
    assert main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "c2")]) == 2
    assert "nope" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.toml", "meta.json"):
        (broken / name).write_text((tiny_run / name).read_text())
    assert main(["predict", str(broken)]) == 2
    assert "not a finished run (predictions.csv missing)" in capsys.readouterr().err
    (broken / "predictions.csv").write_text("garbage\n1,2\n")
    assert main(["predict", str(broken)]) == 2
    assert "corrupt run directory" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "absent")]) == 2


def test_sweep_runs_grid_with_seeds_then_compares(tmp_path, capsys) -> None:
    conf = tmp_path / "s.toml"
    conf.write_text(TINY.replace('[models.lstm]\ntype = "lstm"\nunits = 4\nepochs = 2\npatience = 1\n', ""))
    assert main(["sweep", str(conf), "--grid", "models.linear.alpha=0.1,100", "--seeds", "2", "--out", str(tmp_path / "sw"),
                 "--no-progress"]) == 0
    runs = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.name.startswith("tiny__"))
    assert runs == ["tiny__linear.alpha=0.1", "tiny__linear.alpha=100"]
    preds = pd.read_csv(tmp_path / "sw" / runs[0] / "predictions.csv")
    assert set(preds["seed"]) == {0, 1}
    assert (tmp_path / "sw" / "compare" / "compare.html").is_file()
    # the sweep's deflated Sharpe counts every grid point x seed x model strategy
    cmp_json = json.loads((tmp_path / "sw" / "compare" / "compare.json").read_text())
    tried = [f"{r}: {p['label']}" for r in runs
             for p in json.loads((tmp_path / "sw" / r / "metrics.json").read_text())["portfolios"].values() if p["model"]]
    assert len(tried) == 2 * 2 * 3  # 2 grid points x 2 seeds x (linear/lf, persistence/lf, ens)
    assert sorted(cmp_json["deflated_sharpe"]["trials"]) == sorted(tried)
    assert cmp_json["deflated_sharpe"]["n_trials"] == len(tried)
    assert main(["sweep", str(conf), "--grid", "models.linear.alpah=1", "--out", str(tmp_path / "sw2")]) == 2
    assert "did you mean 'alpha'" in capsys.readouterr().err and not (tmp_path / "sw2").exists()


def test_volume_input_on_a_close_only_file_is_one_line(tmp_path, capsys) -> None:
    from backtest.data.load import bundled_path

    b = pd.read_csv(bundled_path()).iloc[:600][["timestamp", "close"]]
    b.columns = ["Date", "Close"]
    b.to_csv(tmp_path / "close.csv", index=False)
    conf = tmp_path / "c.toml"
    conf.write_text(f'[data]\nsource = "file"\npath = "{tmp_path / "close.csv"}"\n[features]\ninputs = ["close", "volume"]\n'
                    '[walkforward]\ninitial_train = 300\n[models.l]\ntype = "linear"\n')
    assert main(["run", str(conf), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    assert "volume is not available in this data" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
