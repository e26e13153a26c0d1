"""``walkforward run`` / ``compare`` on a universe, end to end through the CLI.

Data: ``tests/universe/data/tiny_universe.toml`` (bundled real daily candles of BTC/USDT, ETH/USDT and
SOL/USDT, SOL listed later; ridge + persistence, 3 folds per symbol), offline; and the same bars served by
the local exchange emulator (``tests/emulator.py``, several markets) through ``data.source = "ccxt"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from backtest.cli import main
from backtest.schema import RunMetrics
from tests.emulator import ExchangeEmulator
from tests.universe.helpers import END, SYMBOLS, bundled_universe

TINY = Path(__file__).parent / "data" / "tiny_universe.toml"
FILES = ("config.toml", "meta.json", "predictions.csv", "metrics.json", "equity.csv", "trades.csv", "report.html")


def _run(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    rc = main(["run", str(TINY), "--out", str(out), "--no-progress", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uni")
    rc = main(["run", str(TINY), "--out", str(out), "--no-progress"])
    assert rc == 0
    return out / "tiny_universe"


def _check_run_dir(d: Path) -> RunMetrics:
    for f in FILES:
        assert (d / f).is_file(), f
    preds = pd.read_csv(d / "predictions.csv")
    assert list(preds.columns[:9]) == ["timestamp", "symbol", "model", "seed", "fold", "y_true", "y_pred", "close",
                                       "pred_close"]
    assert list(dict.fromkeys(preds["symbol"])) == SYMBOLS
    first = preds.groupby("symbol")["timestamp"].min()
    assert first["SOL/USDT"] > first["BTC/USDT"]  # listed later, starts later
    meta = json.loads((d / "meta.json").read_text())
    assert meta["universe"]["symbols"] == SYMBOLS and meta["universe"]["synthetic_bars"] == 0
    m = RunMetrics.read(d / "metrics.json")  # the typed definition reads what the run wrote
    assert m.run.symbols == SYMBOLS and m.universe is not None and {r.portfolio for r in m.summary} >= {"lin/long_flat", "buy_and_hold"}
    eq = pd.read_csv(d / "equity.csv")
    assert {"lin/long_flat", "buy_and_hold", "lin/long_flat[SOL/USDT]"} <= set(eq.columns)
    assert "symbol" in pd.read_csv(d / "trades.csv").columns
    html = (d / "report.html").read_text()
    assert 'id="symbols-beaten"' in html and 'id="fig-heatmap"' in html and html.count("<details") >= 3
    return m


def test_universe_run_from_bundled_data(bundled_run: Path, capsys) -> None:
    m = _check_run_dir(bundled_run)
    # the same config again resumes every fold and prints the terminal summary
    rc, out, err = _run(capsys, bundled_run.parent)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0] == "universe of 3 symbols (BTC/USDT, ETH/USDT, SOL/USDT), 1d bars, 365 bars/yr"
    assert "verdict vs EW buy & hold" in lines[1] and "beats B&H (Holm)" in lines[1]
    row = next(line for line in lines if line.startswith("lin/long_flat "))
    bc = m.row("lin/long_flat").beats_buy_and_hold
    assert f"{bc.holm}/3" in row and m.row("lin/long_flat").verdict.short() in row
    assert lines[-2] == f"run directory: {bundled_run}" and lines[-1] == f"report: {bundled_run / 'report.html'}"


def test_universe_run_from_the_exchange_emulator(bundled_run: Path, tmp_path: Path, capsys) -> None:
    frames = dict(bundled_universe().bars)
    now = pd.Timestamp(END, tz="UTC")
    with ExchangeEmulator(frames["BTC/USDT"], now=now, markets={s: frames[s] for s in SYMBOLS[1:]}, max_limit=100) as emu:
        rc, out, err = _run(capsys, tmp_path / "runs", "--set", "data.source=ccxt", "--set", "data.timeframe=1d",
                            "--set", f"data.base_url={emu.url}", "--set", f"data.cache_dir={tmp_path / 'cache'}")
        assert rc == 0, err
        assert {p["symbol"] for p in emu.klines_requests()} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    m = _check_run_dir(tmp_path / "runs" / "tiny_universe")
    assert list((tmp_path / "cache").rglob("*"))  # candles cached in the temp dir
    # the exchange served the same bars as the bundled files: the same forecasts
    a = pd.read_csv(bundled_run / "predictions.csv")
    b = pd.read_csv(tmp_path / "runs" / "tiny_universe" / "predictions.csv")
    pd.testing.assert_frame_equal(a, b)
    assert [r.portfolio for r in m.summary] == [r.portfolio for r in RunMetrics.read(bundled_run / "metrics.json").summary]


def test_compare_universe_runs(bundled_run: Path, tmp_path: Path, capsys) -> None:
    # a second real run, on two of the symbols
    rc, _, err = _run(capsys, tmp_path / "runs", "--set", 'data.symbols=["BTC/USDT", "ETH/USDT"]',
                      "--set", "run.name=two")
    assert rc == 0, err
    two = tmp_path / "runs" / "two"
    # the same run twice compares; the table adds the symbols and the symbols beaten
    assert main(["compare", str(bundled_run), str(bundled_run), "--out", str(tmp_path / "same")]) == 0
    capsys.readouterr()
    ranked = json.loads((tmp_path / "same" / "compare.json").read_text())["ranked"]
    m = RunMetrics.read(bundled_run / "metrics.json")
    assert [r["portfolio"] for r in ranked] == [r.portfolio for r in m.summary]  # its rows are its universe portfolios
    row = next(r for r in ranked if r["portfolio"] == "lin/long_flat")
    bc, bp = m.row("lin/long_flat").beats_buy_and_hold, m.row("lin/long_flat").beats_persistence
    assert row["symbols"] == "universe: BTC/USDT, ETH/USDT, SOL/USDT"
    assert row["symbols_beaten"] == f"buy & hold {bc.holm}/3, persistence {bp.holm}/3 (Holm)"
    assert row["verdict"]["outcome"] == m.row("lin/long_flat").verdict.outcome
    assert "Symbols beaten" in (tmp_path / "same" / "compare.html").read_text()
    # different symbols: refused in one line (rc 2), nothing written; --force compares and says why
    rc = main(["compare", str(bundled_run), str(two), "--out", str(tmp_path / "mixed")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "runs are not comparable" in err[0] and "--force" in err[0]
    assert not (tmp_path / "mixed").exists()
    assert main(["compare", str(bundled_run), str(two), "--out", str(tmp_path / "mixed"), "--force"]) == 0
    html = (tmp_path / "mixed" / "compare.html").read_text()
    assert "Not comparable" in html and "symbol differs" in html
