"""Universe walk-forward: per-symbol fold plans, pooled training (calendar, gap, leakage across symbols),
one-hot symbol channels, resume, executors, and the end-to-end run once the evaluation side exists."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.errors import RunDirError
from backtest.features import feature_matrix, first_valid_row
from backtest.data.universe import as_loaded
from backtest.folds.plan import plan_folds, pooled_blocks
from backtest.folds.plan import test_span as universe_span  # not collected as a test
from backtest.run import UNIVERSE_PREDICTION_COLUMNS, run_forecasts
from tests.universe.helpers import SYMBOLS, TINY_NET, bundled_universe, garbage_after, universe_cfg, with_bars


@pytest.fixture(scope="module")
def data():
    return bundled_universe()


# --- per-symbol runs -------------------------------------------------------------------------------
def test_per_symbol_runs_are_each_symbols_own_walk_forward(data, tmp_path: Path) -> None:
    """pooled = false: every symbol's forecasts equal a single-symbol run on its bars; a later symbol starts later."""
    cfg = universe_cfg()
    fr = run_forecasts(cfg, tmp_path, data=data)
    preds = fr.predictions
    assert list(preds.columns) == UNIVERSE_PREDICTION_COLUMNS
    assert list(dict.fromkeys(preds["symbol"])) == SYMBOLS
    for sym in SYMBOLS:
        bars = data.bars[sym]
        first = first_valid_row(feature_matrix(bars, cfg.features.inputs), cfg.features.lookback)
        assert fr.plan.folds[sym] == plan_folds(len(bars), first, cfg.walkforward, cfg.features.horizon)
        mine = preds[preds["symbol"] == sym].drop(columns="symbol").reset_index(drop=True)
        alone = run_forecasts(cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": "one"})}),
                              tmp_path / sym.replace("/", "_"), data=as_loaded(data, sym)).predictions.drop(columns="symbol", errors="ignore")
        pd.testing.assert_frame_equal(mine, alone)
        assert mine["timestamp"].min() == bars.index[120]  # enters once it has initial_train bars
        assert (tmp_path / "u" / "folds" / sym.replace("/", "_") / "lin" / "1" / "seed-0" / "forecasts.csv").is_file()
    assert preds.loc[preds["symbol"] == "SOL/USDT", "timestamp"].min() == pd.Timestamp("2020-12-09", tz="UTC")
    assert preds.groupby("symbol")["timestamp"].max().nunique() == 1  # every symbol stays to the end of the span
    meta = json.loads((tmp_path / "u" / "meta.json").read_text())
    assert meta["data"]["SOL/USDT"]["first_test_bar"] == "2020-12-09T00:00:00+00:00"
    assert meta["universe"]["symbols"] == SYMBOLS and meta["universe"]["sha256"] == data.sha256
    assert all(meta["data"][s]["synthetic_bars"] == 0 for s in SYMBOLS)
    from backtest.predict import predict_next

    with pytest.raises(RunDirError, match=r"a universe run \(BTC/USDT, ETH/USDT, SOL/USDT\); walkforward predict takes a single-symbol run"):
        predict_next(tmp_path / "u")


@pytest.mark.parametrize("pooled", [False, True])
def test_max_folds_cuts_one_span_for_every_symbol(data, tmp_path: Path, pooled: bool) -> None:
    """``max_folds`` cuts the test span of the universe, not each symbol's own folds: every symbol's forecasts
    end on the same bar (the end of the second block of the common calendar, counted from the first bar any
    symbol is tested on), and SOL, which has its ``initial_train`` bars only after that, gets none."""
    cfg = universe_cfg(walkforward={"max_folds": 2}, features={"pooled": pooled})
    preds = run_forecasts(cfg, tmp_path, data=data).predictions
    btc = data.bars["BTC/USDT"]
    assert set(preds["symbol"]) == {"BTC/USDT", "ETH/USDT"}
    last = preds.groupby("symbol")["timestamp"].max()
    assert (last == btc.index[120 + 2 * 40 - 1]).all()
    assert (preds.groupby("symbol")["timestamp"].min() == btc.index[120]).all()


def test_a_symbol_ending_early_is_refused_before_anything_is_written(data, tmp_path: Path) -> None:
    from backtest.errors import DataError

    short = with_bars(data, "ETH/USDT", data.bars["ETH/USDT"].iloc[:-5])
    with pytest.raises(DataError, match=r"^ETH/USDT: bars end at 2021-01-26T00:00:00\+00:00, before the other symbols' "
                                        r"\(2021-01-31T00:00:00\+00:00\); .*set data.end"):
        run_forecasts(universe_cfg(), tmp_path, data=short)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --- pooled: the calendar and the rows each fold may see -------------------------------------------------
@pytest.mark.parametrize("window, horizon", [("expanding", 1), ("rolling", 2)])
def test_pooled_calendar_trains_only_on_rows_known_before_the_block(data, window: str, horizon: int) -> None:
    cfg = universe_cfg(walkforward={"window": window, "train_length": 100}, features={"horizon": horizon})
    first = {s: first_valid_row(feature_matrix(b, ["close"]), 8) for s, b in data.bars.items()}
    span = universe_span(data.bars, cfg.walkforward, horizon)
    blocks = span.blocks(cfg.walkforward.step)

    class F:  # a block of the calendar with its participants' rows
        def __init__(self, k, specs):
            self.k, self.specs = k, specs
            self.start, self.stop = blocks[k]

    folds = [F(k, specs) for k, specs in pooled_blocks(data.bars, first, span, cfg.walkforward, horizon)]
    union = sorted(set().union(*[set(b.index) for b in data.bars.values()]))
    assert folds[0].start == data.bars["BTC/USDT"].index[120]
    assert all(a.stop == b.start for a, b in zip(folds, folds[1:]))
    entered = {}
    for f in folds:
        assert union.index(f.start) % 40 == union.index(folds[0].start) % 40  # blocks of step bars on the union
        for sym, b in data.bars.items():
            before = int((b.index < f.start).sum())
            if sym not in f.specs:
                assert before < 120 or not ((b.index >= f.start) & (b.index < f.stop)).any()
                continue
            s = f.specs[sym]
            entered.setdefault(sym, f.k)
            assert s.test_start == before >= 120 and b.index[s.test_start] == f.start  # first row at/after the block start
            assert s.train_stop - 1 + horizon <= s.test_start - 1  # fit targets known before the block
            if s.val_stop > s.val_start:
                assert s.val_stop - 1 + horizon <= s.test_start - 1 and s.val_start - (s.train_stop - 1) > horizon
            assert b.index[s.test_stop - 1] < f.stop and s.test_stop <= len(b) - horizon
            if window == "rolling":
                assert s.val_stop - s.train_start <= 100
    # blocks start 2020-08-29, 10-08, 11-17, 12-27: SOL (120 bars on 2020-12-09) joins the block after that date
    assert entered["BTC/USDT"] == entered["ETH/USDT"] == 0 and entered["SOL/USDT"] == 3
    assert folds[3].start == pd.Timestamp("2020-12-27", tz="UTC") and folds[3].specs["SOL/USDT"].test_start == 138


def test_pooled_universe_of_one_symbol_equals_the_single_symbol_run(data, tmp_path: Path) -> None:
    """Pooling changes nothing when there is nothing to pool: the same folds, transform, model and forecasts,
    here computed by the process executor (spawned workers) against the sequential single-symbol run."""
    cfg = universe_cfg(data={"symbols": ["ETH/USDT"]}, features={"pooled": True},
                       walkforward={"max_folds": 2, "executor": "process", "workers": 2})
    one = type(data)({"ETH/USDT": data.bars["ETH/USDT"]}, "1d", {"ETH/USDT": data.reports["ETH/USDT"]}, "x",
                     {"ETH/USDT": "eth"}, {"ETH/USDT": "x"})
    pooled = run_forecasts(cfg, tmp_path / "p", data=one).predictions.drop(columns="symbol", errors="ignore")
    seq = cfg.model_copy(update={"walkforward": cfg.walkforward.model_copy(update={"executor": "sequential"})})
    alone = run_forecasts(seq, tmp_path / "s", data=as_loaded(data, "ETH/USDT")).predictions.drop(columns="symbol", errors="ignore")
    pd.testing.assert_frame_equal(pooled, alone)


def test_pooled_linear_fold_folder_one_hot_and_resume(data, tmp_path: Path) -> None:
    cfg = universe_cfg(features={"pooled": True, "symbol_input": "onehot"}, walkforward={"max_folds": 4})
    fr = run_forecasts(cfg, tmp_path, data=data)
    fold = tmp_path / "u" / "folds" / "lin" / "3" / "seed-0"
    members = json.loads((fold / "members.json").read_text())
    assert list(members) == SYMBOLS and members["SOL/USDT"]["test"][0] == "2020-12-27T00:00:00+00:00"
    assert members["SOL/USDT"]["fit"][1] < "2020-12-26"  # the gap: its last fit target (close of 12-26) is known before the block
    assert sorted(p.name for p in (fold / "transforms").iterdir()) == ["BTC_USDT.pkl", "ETH_USDT.pkl", "SOL_USDT.pkl"]
    sol = pickle.loads((fold / "transforms" / "SOL_USDT.pkl").read_bytes())
    assert sol.y_scale != pickle.loads((fold / "transforms" / "BTC_USDT.pkl").read_bytes()).y_scale  # per symbol
    ridge = pickle.loads((fold / "model" / "ridge.pkl").read_bytes())
    assert ridge.n_features_in_ == 8 * (1 + 3)  # lookback x (close + one channel per universe symbol)
    # the one-hot channels matter: without them the pooled model is a different fit
    plain = run_forecasts(cfg.model_copy(update={"features": cfg.features.model_copy(update={"symbol_input": "none"}),
                                                          "run": cfg.run.model_copy(update={"name": "plain"})}),
                                   tmp_path, data=data).predictions
    lin = fr.predictions["model"] == "lin"
    assert not np.allclose(fr.predictions.loc[lin, "y_pred"], plain.loc[plain["model"] == "lin", "y_pred"])
    # resume: the same config reads every fold back and gives the same table; another config is refused
    again = run_forecasts(cfg, tmp_path, data=data)
    assert again.resumed
    pd.testing.assert_frame_equal(again.predictions, fr.predictions)
    with pytest.raises(RunDirError, match="made by a different config or data"):
        run_forecasts(universe_cfg(features={"pooled": True}, walkforward={"max_folds": 4}), tmp_path, data=data)


# --- the leakage guard across symbols ---------------------------------------------------------------
def test_pooled_lstm_leakage_guard_across_symbols(data, tmp_path: Path) -> None:
    """Garbage after bar k of ETH changes no forecast at or before k of any symbol (a tiny pooled LSTM)."""
    cfg = universe_cfg({"lstm": {"type": "lstm", **TINY_NET}}, features={"pooled": True, "symbol_input": "onehot"},
                       walkforward={"max_folds": 1, "step": 30})
    eth = data.bars["ETH/USDT"]
    k = 120 + 15  # inside the block [120, 150): a fold that trained on any row of its own test block would differ
    real = run_forecasts(cfg, tmp_path / "real", data=data).predictions
    junk = run_forecasts(cfg, tmp_path / "junk", data=with_bars(data, "ETH/USDT", garbage_after(eth, k))).predictions
    cut = eth.index[k]
    a = real[real["timestamp"] <= cut][["timestamp", "symbol", "model", "y_pred"]].reset_index(drop=True)
    b = junk[junk["timestamp"] <= cut][["timestamp", "symbol", "model", "y_pred"]].reset_index(drop=True)
    assert set(a["symbol"]) == {"BTC/USDT", "ETH/USDT"} and (a["model"] == "lstm").sum() == 2 * (k - 120 + 1)
    pd.testing.assert_frame_equal(a, b)
    after = (real["timestamp"] > cut) & (real["symbol"] == "ETH/USDT") & (real["model"] == "lstm")
    assert not np.allclose(real.loc[after, "y_pred"], junk.loc[after, "y_pred"])  # the garbage did arrive later


# --- end to end (forecasts + evaluation + report) ------------------------------------------------
def test_universe_run_end_to_end(tmp_path: Path) -> None:
    """``run_all`` on a universe config: forecasts, evaluation, metrics and report (bundled data, offline)."""
    from backtest.pipeline import run_all

    cfg = universe_cfg(features={"pooled": True}, backtest={"bootstrap_samples": 100})
    result = run_all(cfg, tmp_path)
    assert result.report_path.is_file() and (result.run_dir / "metrics.json").is_file()
    assert list(dict.fromkeys(result.predictions["symbol"])) == SYMBOLS
    assert (result.run_dir / "equity.csv").is_file() and (result.run_dir / "trades.csv").is_file()
    assert result.evaluation.metrics.run.pooled and result.evaluation.metrics.run.symbols == SYMBOLS
