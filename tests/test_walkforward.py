"""The walk-forward engine: boundaries, leakage guard, resume, determinism, executors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import backtest.folds.compute as compute
import backtest.folds.store as store
import backtest.folds.units as units_mod
from backtest.config import parse_config
from backtest.data.load import LoadedData, frame_sha256
from backtest.data.validate import ValidationReport
from backtest.errors import RunDirError
from backtest.features import FoldTransform, feature_matrix, first_valid_row, target_returns
from backtest.run import run_forecasts
from backtest.folds.plan import plan_folds, plan_run
from models import MODEL_TYPES

TINY_NET = {"units": 4, "epochs": 2, "patience": 1, "batch_size": 64}
TINY_CNN = {"filters": 4, "epochs": 2, "patience": 1, "batch_size": 64}  # each type takes only its own keys


def tiny_cfg(models: dict, **sections) -> object:
    raw = {"walkforward": {"initial_train": 200, "step": 40, "val_fraction": 0.1, "executor": "sequential"},
           "features": {"lookback": 8},
           "models": models, "strategies": {}, "run": {"name": "t"}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return parse_config(raw)


def as_data(bars: pd.DataFrame) -> LoadedData:
    return LoadedData(bars, "1d", "test slice", ValidationReport("test slice", len(bars)), frame_sha256(bars))


# --- boundaries -----------------------------------------------------------------------------
@pytest.mark.parametrize("window", ["expanding", "rolling"])
@pytest.mark.parametrize("horizon", [1, 3])
@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_no_training_target_reaches_the_test_block(window: str, horizon: int, val_fraction: float) -> None:
    cfg = tiny_cfg({"p": {"type": "persistence"}}, walkforward={"window": window, "train_length": 120, "val_fraction": val_fraction},
                   features={"horizon": horizon})
    folds = plan_folds(600, 12, cfg.walkforward, horizon)
    assert folds[0].test_start == 200 and len(folds) == int(np.ceil((600 - 1 - horizon + 1 - 200) / 40))
    for f in folds:
        last_fit_target_bar = f.train_stop - 1 + horizon  # bar whose close the last fit target needs
        assert last_fit_target_bar <= f.test_start - 1
        if f.val_stop > f.val_start:
            assert f.val_start - (f.train_stop - 1) > horizon  # gap between fit rows and validation rows
            assert f.val_stop - 1 + horizon <= f.test_start - 1
        if window == "rolling":
            assert f.val_stop - f.train_start <= 120
        assert f.test_stop <= 600 - horizon  # every test row's target is known
    assert all(a.test_stop == b.test_start for a, b in zip(folds, folds[1:]))


@pytest.mark.parametrize("scale", [True, False])
def test_return_targets_scaled_by_training_std_unless_switched_off(btc: pd.DataFrame, scale: bool) -> None:
    """``scale_target`` (default): the model trains on r[t+1] / std(r over the fold's training rows) and its
    forecasts decode back to log returns; off: on the raw log returns (the tutorial loop's targets)."""
    cfg = tiny_cfg({"p": {"type": "persistence"}}, features={"inputs": ["log_return"], "normalize": "none",
                                                             "scale_target": scale})
    bars = btc.iloc[:300]
    feats = feature_matrix(bars, cfg.features.inputs)
    close = bars["close"].to_numpy()
    y = target_returns(close, 1)
    rows = np.arange(40, 200)
    tr = FoldTransform.fit(cfg.features, feats.to_numpy(), close, rows, y[rows], list(feats.columns))
    z = tr.encode_y(y[rows], close, rows)
    std = float(np.std(y[rows]))
    if scale:
        assert tr.y_scale == pytest.approx(std) and np.std(z) == pytest.approx(1.0)
    else:
        assert tr.y_scale == 1.0 and np.array_equal(z, y[rows])
    np.testing.assert_allclose(tr.decode_y(z, close, rows), y[rows], rtol=1e-12)


def test_targets_and_features_are_causal(btc: pd.DataFrame) -> None:
    bars = btc.iloc[:300]
    y = target_returns(bars["close"].to_numpy(), 2)
    assert y[10, 0] == pytest.approx(np.log(bars["close"].iloc[11] / bars["close"].iloc[10]))
    assert y[10, 1] == pytest.approx(np.log(bars["close"].iloc[12] / bars["close"].iloc[11]))
    assert np.isnan(y[-1]).all() and np.isnan(y[-2, 1])
    full = feature_matrix(bars, ["close", "log_return", "rsi", "macd", "macd_signal", "volatility"])
    cut = feature_matrix(bars.iloc[:200], ["close", "log_return", "rsi", "macd", "macd_signal", "volatility"])
    pd.testing.assert_frame_equal(full.iloc[:200], cut)


# --- leakage guard ------------------------------------------------------------------------------
def garbage_after(bars: pd.DataFrame, k: int, seed: int = 1) -> pd.DataFrame:
    """Bars after position k replaced by random (valid-looking) prices with the same index."""
    rng = np.random.default_rng(seed)
    out = bars.copy()
    n = len(bars) - k - 1
    close = np.exp(rng.uniform(2, 12, n))
    out.iloc[k + 1:, out.columns.get_loc("close")] = close
    out.iloc[k + 1:, out.columns.get_loc("open")] = close * rng.uniform(0.5, 1.5, n)
    out.iloc[k + 1:, out.columns.get_loc("high")] = np.maximum(close, out["open"].iloc[k + 1:]) * 1.1
    out.iloc[k + 1:, out.columns.get_loc("low")] = np.minimum(close, out["open"].iloc[k + 1:]) * 0.9
    out.iloc[k + 1:, out.columns.get_loc("volume")] = rng.uniform(1, 1e6, n)
    return out


def forecasts_before(cfg, bars: pd.DataFrame, k: int, tmp_path, tag: str) -> pd.DataFrame:
    preds = run_forecasts(cfg, tmp_path / tag, data=as_data(bars)).predictions
    return preds[preds["timestamp"] <= bars.index[k]][["timestamp", "model", "y_pred"]].reset_index(drop=True)


@pytest.mark.parametrize("training", ["grouped", "per_fold"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_leakage_guard_every_model(model_type: str, training: str, btc: pd.DataFrame, tmp_path) -> None:
    """Also determinism: fold 0 (test block before k) is trained twice on the same bars and must match."""
    if training == "per_fold" and model_type in ("persistence", "mean", "linear"):
        pytest.skip("baselines have one path")
    bars = btc.iloc[:285]  # two folds: test blocks [200, 240) and [240, 283)
    k = 260  # inside the second test block: that fold is given garbage in its own block after k
    cfg = tiny_cfg({"m": {"type": model_type, **({} if model_type in ("persistence", "mean", "linear") else TINY_CNN if model_type == "cnn" else TINY_NET)}},
                   features={"inputs": ["close", "volume", "rsi"], "normalize": "window"},
                   walkforward={"training": training})
    a = forecasts_before(cfg, bars, k, tmp_path, "real")
    b = forecasts_before(cfg, garbage_after(bars, k), k, tmp_path, "garbage")
    assert (a["model"] == "m").sum() == k - 200 + 1  # forecasts for test bars 200..k (plus persistence, always added)
    pd.testing.assert_frame_equal(a, b)


def test_leakage_guard_catches_a_leaky_scaler(btc: pd.DataFrame, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A min-max scaler fit on every bar the fold was given (its test block included) leaks; the guard sees it."""
    bars = btc.iloc[:330]
    k = 260
    cfg = tiny_cfg({"lin": {"type": "linear"}}, features={"normalize": "minmax"})
    honest_a = forecasts_before(cfg, bars, k, tmp_path, "h1")
    honest_b = forecasts_before(cfg, garbage_after(bars, k), k, tmp_path, "h2")
    pd.testing.assert_frame_equal(honest_a, honest_b)

    real_fit = FoldTransform.fit.__func__

    def leaky_fit(cls, fcfg, feats, close, train_rows, y_train, columns):
        everything = np.arange(fcfg.lookback - 1, len(feats))  # the whole series it can see, test bars too
        return real_fit(cls, fcfg, feats, close, everything, y_train, columns)

    monkeypatch.setattr(FoldTransform, "fit", classmethod(leaky_fit))
    leaky_a = forecasts_before(cfg, bars, k, tmp_path, "l1")
    leaky_b = forecasts_before(cfg, garbage_after(bars, k), k, tmp_path, "l2")
    assert not np.allclose(leaky_a["y_pred"], leaky_b["y_pred"])


# --- resume, determinism, executors ----------------------------------------------------------------
def test_resume_after_interruption_equals_uninterrupted(btc: pd.DataFrame, tmp_path, monkeypatch) -> None:
    """A warm-start chain killed after three folds are written resumes from the last written fold's weights
    (read back from the store) to the uninterrupted predictions, byte for byte."""
    bars = btc.iloc[:330]
    cfg = tiny_cfg({"lstm": {"type": "lstm", **TINY_NET}, "lin": {"type": "linear"}}, walkforward={"warm_start": True})
    full = run_forecasts(cfg, tmp_path / "a", data=as_data(bars))
    real = store.FoldStore.write
    calls = {"n": 0}

    def dies_after_three(self, out):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")
        return real(self, out)

    monkeypatch.setattr(store.FoldStore, "write", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_forecasts(cfg, tmp_path / "b", data=as_data(bars))
    assert not (tmp_path / "b" / "t" / "predictions.csv").exists()
    monkeypatch.setattr(store.FoldStore, "write", real)
    resumed = run_forecasts(cfg, tmp_path / "b", data=as_data(bars))
    assert resumed.resumed
    a = (tmp_path / "a" / "t" / "predictions.csv").read_text()
    b = (tmp_path / "b" / "t" / "predictions.csv").read_text()
    assert a == b and len(full.predictions) > 0


def test_other_config_refuses_run_dir(btc: pd.DataFrame, tmp_path) -> None:
    bars = btc.iloc[:330]
    run_forecasts(tiny_cfg({"p": {"type": "persistence"}}), tmp_path, data=as_data(bars))
    with pytest.raises(RunDirError, match="made by a different config or data"):
        run_forecasts(tiny_cfg({"p": {"type": "persistence"}}, walkforward={"step": 30}), tmp_path, data=as_data(bars))


@pytest.mark.parametrize("training", ["grouped", "per_fold"])
def test_same_seed_identical_and_process_equals_sequential(training: str, btc: pd.DataFrame, tmp_path) -> None:
    bars = btc.iloc[:330]
    models = {"lstm": {"type": "lstm", **TINY_NET, "dropout": 0.1}, "lin": {"type": "linear"}}
    wf = {"training": training}
    seq1 = run_forecasts(tiny_cfg(models, walkforward=wf), tmp_path / "s1", data=as_data(bars)).predictions
    seq2 = run_forecasts(tiny_cfg(models, walkforward=wf), tmp_path / "s2", data=as_data(bars)).predictions
    pd.testing.assert_frame_equal(seq1, seq2)
    proc = run_forecasts(tiny_cfg(models, walkforward={**wf, "executor": "process", "workers": 2}), tmp_path / "p",
                         data=as_data(bars)).predictions
    pd.testing.assert_frame_equal(seq1, proc)
    other = run_forecasts(tiny_cfg(models, walkforward=wf, run={"seeds": [0, 1]}), tmp_path / "seeds",
                          data=as_data(bars)).predictions
    assert set(other["seed"]) == {0, 1}
    s0 = other[other["seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(s0, seq1)
    s1 = other[(other["seed"] == 1) & (other["model"] == "lstm")]["y_pred"].to_numpy()
    assert not np.allclose(s1, seq1[seq1["model"] == "lstm"]["y_pred"].to_numpy())


def test_predictions_contract(btc: pd.DataFrame, tmp_path) -> None:
    bars = btc.iloc[:330]
    cfg = tiny_cfg({"lin": {"type": "linear"}}, features={"horizon": 3, "target": "close", "normalize": "minmax"})
    preds = run_forecasts(cfg, tmp_path, data=as_data(bars)).predictions
    assert list(preds.columns[:8]) == ["timestamp", "model", "seed", "fold", "y_true", "y_pred", "close", "pred_close"]
    assert {"y_pred_h1", "y_pred_h2", "y_pred_h3"} <= set(preds.columns)
    row = preds.iloc[5]
    pos = bars.index.get_loc(row["timestamp"])
    assert row["close"] == bars["close"].iloc[pos]
    assert row["y_true"] == pytest.approx(np.log(bars["close"].iloc[pos + 1] / bars["close"].iloc[pos]))
    assert row["pred_close"] == pytest.approx(row["close"] * np.exp(row["y_pred"]))
    assert preds["timestamp"].max() <= bars.index[-1 - 3]
    run_dir = tmp_path / "t"
    for name in ("config.toml", "meta.json", "predictions.csv", "fingerprint.txt"):
        assert (run_dir / name).exists()
    assert (run_dir / "folds" / "lin" / "0" / "seed-0" / "model" / "forecaster.json").exists()


# --- the grouped path ----------------------------------------------------------------------------------
def test_grouped_resume_trains_only_missing_folds_and_saved_models_reload(btc: pd.DataFrame, tmp_path, monkeypatch) -> None:
    """Grouped training: a run killed after its first network fold is written
    resumes to the uninterrupted predictions (byte for byte, dropout included), writing only the missing
    folds; a fold's saved single Keras model reproduces its forecasts."""
    from models.base import Forecaster

    bars = btc.iloc[:330]  # 4 folds: [200, 240) .. [320, 328)
    cfg = tiny_cfg({"lstm": {"type": "lstm", **TINY_NET, "dropout": 0.1}, "lin": {"type": "linear"}},
                   walkforward={"training": "grouped", "group_size": 2})
    trained: list[int] = []
    real_train, real_write = compute.train_group, store.FoldStore.write

    def counting(prepared, cache=None):
        trained.extend(p.task.k for p in prepared)
        return real_train(prepared, cache)

    monkeypatch.setattr(compute, "train_group", counting)
    full = run_forecasts(cfg, tmp_path / "a", data=as_data(bars))
    assert sorted(trained) == [0, 1, 2, 3]  # every network fold went through the grouped trainer, in groups of 2
    writes = {"n": 0}

    def dies_after_one(self, out):  # killed after the first lstm fold is written: groups change on resume
        writes["n"] += "lstm" in out.folder
        if writes["n"] > 1:
            raise KeyboardInterrupt("killed")
        return real_write(self, out)

    monkeypatch.setattr(store.FoldStore, "write", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        run_forecasts(cfg, tmp_path / "b", data=as_data(bars))
    monkeypatch.setattr(store.FoldStore, "write", real_write)
    trained.clear()
    lstm_b = tmp_path / "b" / "t" / "folds" / "lstm"
    done = [k for k in range(4) if (lstm_b / str(k) / "seed-0" / "forecasts.csv").exists()]
    assert len(done) == 1  # the one lstm fold written before the kill
    written = lstm_b / str(done[0]) / "seed-0" / "forecasts.csv"
    stamp = written.stat().st_mtime_ns
    resumed = run_forecasts(cfg, tmp_path / "b", data=as_data(bars))
    # units come from the plan: a half-written grouped unit is trained again as planned (so every member
    # trains exactly as in the uninterrupted run); the fold it had written is not rewritten
    assert resumed.resumed and sorted(trained) == [0, 1, 2, 3] and written.stat().st_mtime_ns == stamp
    assert (tmp_path / "a" / "t" / "predictions.csv").read_text() == (tmp_path / "b" / "t" / "predictions.csv").read_text()
    fold = tmp_path / "a" / "t" / "folds" / "lstm" / "3" / "seed-0"
    saved = store.read_saved_fold(fold)  # the one reader: model, transform, test span
    task = next(t for t in plan_run(cfg, {"BTC/USDT": bars}).tasks if t.model_name == "lstm" and t.k == 3)
    prep = compute.prepare(task, {"BTC/USDT": bars}).members[0]
    assert saved.test_start == prep.index[prep.test_rows[0]] and saved.fold == 3
    z = saved.model.predict(prep.X_test)
    y = saved.transform().decode_y(z, prep.close, prep.test_rows)[:, 0]
    got = full.predictions[(full.predictions["model"] == "lstm") & (full.predictions["fold"] == 3)]["y_pred"]
    np.testing.assert_allclose(y, got.to_numpy(), rtol=1e-6, atol=1e-9)
    hist = pd.read_csv(fold / "history.csv")
    assert list(hist["epoch"]) == [0, 1] and hist["val_loss"].notna().all()


def test_group_memory_knob_sets_the_slots_and_units(btc, tmp_path) -> None:
    """``group_memory_mib`` bounds the models training at once (slots); a unit holds up to 8x its slots of
    folds, at least one per worker; baselines have no slots to size."""
    bars = btc.iloc[:700]  # 13 folds of 40 bars from bar 200
    models = {"lstm": {"type": "lstm", **TINY_NET, "batch_size": 32}, "p": {"type": "persistence"}}
    roomy = tiny_cfg(models, walkforward={"training": "grouped", "group_size": 16, "workers": 1})
    tight = tiny_cfg(models, walkforward={"training": "grouped", "group_size": 16, "workers": 1, "group_memory_mib": 0.001})
    assert units_mod.group_cap(roomy.models["lstm"], roomy.features, roomy.walkforward) == 16
    assert units_mod.group_cap(tight.models["lstm"], tight.features, tight.walkforward) == 1
    assert units_mod.group_cap(roomy.models["p"], roomy.features, roomy.walkforward) == 1
    half = tiny_cfg(models, walkforward={"training": "grouped", "group_size": 16, "workers": 1, "group_memory_mib": 0.25})
    fit = units_mod.group_cap(half.models["lstm"], half.features, half.walkforward)
    assert 1 < fit < 16  # 32 rows x (40 B x 8 bars x 4 units + dense) per model: a handful in 0.25 MiB
    for cfg, slots in ((roomy, 16), (tight, 1), (half, fit)):
        units = units_mod.make_units(plan_run(cfg, {"BTC/USDT": bars}).tasks, lambda t: False, None)
        groups = [u.tasks for u in units if u.kind == "group"]
        assert all(t.group_slots == slots for g in groups for t in g)
        assert sum(len(g) for g in groups) == 13 and max(len(g) for g in groups) <= 8 * slots


def test_units_do_not_depend_on_workers(btc) -> None:
    """Units are a function of the plan and the config's grouping knobs alone: the same for 1 or 16 workers
    and for every executor (so every executor gives the same floats: batched kernels round by shape)."""
    bars = btc.iloc[:700]
    models = {"lstm": {"type": "lstm", **TINY_NET}, "p": {"type": "persistence"}}
    seen = set()
    for workers, executor in ((1, "sequential"), (2, "process"), (16, "process"), (2, "ray")):
        cfg = tiny_cfg(models, walkforward={"training": "grouped", "group_size": 2, "workers": workers,
                                            "executor": executor})
        units = units_mod.make_units(plan_run(cfg, {"BTC/USDT": bars}).tasks, lambda t: False, None)
        seen.add(tuple((u.kind, tuple(t.folder for t in u.tasks)) for u in units))
    assert len(seen) == 1


def test_work_order_runs_network_by_network_costliest_first(btc, tmp_path) -> None:
    """Workers take the units network by network (so one architecture's compiled trainers are resident at
    a time), the costliest network first and, within a network, its costliest unit first."""
    bars = btc.iloc[:1000]  # 20 folds of 40 bars from bar 200
    models = {"gru": {"type": "gru", **TINY_NET, "units": 16, "epochs": 6}, "lstm": {"type": "lstm", **TINY_NET},
              "p": {"type": "persistence"}}
    cfg = tiny_cfg(models, walkforward={"training": "grouped", "group_size": 2, "workers": 2})
    units = units_mod.make_units(plan_run(cfg, {"BTC/USDT": bars}).tasks, lambda t: False, None)
    order = units_mod.work_order(units)
    names = [u.tasks[0].model_name for u in order]
    assert sorted(map(id, order)) == sorted(map(id, units))
    runs = [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]
    assert runs == ["gru", "lstm", "p"]  # contiguous; the wider, longer-trained gru costs most, persistence least
    for name in ("gru", "lstm"):
        costs = [units_mod.unit_cost(u) for u in order if u.tasks[0].model_name == name]
        assert len(costs) >= 2 and costs == sorted(costs, reverse=True)
