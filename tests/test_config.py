"""Config validation: one line naming the key, "did you mean", nothing written before it is valid."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from backtest.config import apply_overrides, check_against_data, load_config, parse_config
from backtest.errors import ConfigError


def test_defaults_add_baselines() -> None:
    cfg = parse_config({"models": {"lstm": {"type": "lstm"}}})
    assert {m.type for m in cfg.models.values()} == {"lstm", "persistence"}
    assert {"buy_and_hold", "always_flat", "sma_cross", "long_flat"} <= set(cfg.strategies)


@pytest.mark.parametrize("raw,match", [
    ({"walkforwrd": {}}, "unknown key 'walkforwrd' \\(did you mean 'walkforward'\\?\\)"),
    ({"walkforward": {"stpe": 3}}, "unknown key 'walkforward.stpe' \\(did you mean 'step'\\?\\)"),
    ({"models": {"m": {"type": "lstm", "unit": 3}}}, "models.m: 'unit' is not a parameter of type 'lstm' \\(did you mean 'units'\\?\\)"),
    ({"models": {"m": {"type": "lstn"}}}, "models.m.type: unknown model type 'lstn' \\(did you mean 'lstm'\\?\\)"),
    ({"walkforward": {"step": -1}}, "walkforward.step: Input should be greater than or equal to 1"),
    ({"walkforward": {"step": "ten"}}, "walkforward.step: Input should be a valid integer"),
    ({"backtest": {"fees": 1.0}}, "backtest.fees: Input should be less than 1"),
    ({"features": {"normalize": "global"}}, "features.normalize: Input should be 'window', 'minmax', 'standard' or 'none'"),
    ({"features": {"inputs": ["close", "rsj"]}}, "unknown input 'rsj' \\(did you mean 'rsi'\\?\\)"),
    ({"features": {"target": "close", "scale_target": False}}, "scale_target applies to target = 'return' only"),
    ({"walkforward": {"window": "rolling"}}, "train_length is required"),
    ({"walkforward": {"training": "grouped", "warm_start": True}}, "training = 'grouped' needs cold starts; with warm_start"),
    ({"walkforward": {"training": "batched"}}, "walkforward.training: Input should be 'auto', 'grouped' or 'per_fold'"),
    ({"walkforward": {"group_size": 0}}, "walkforward.group_size: Input should be greater than or equal to 1"),
    ({"walkforward": {"group_memory_mib": 0}}, "walkforward.group_memory_mib: Input should be greater than 0"),
    ({"data": {"source": "file"}}, "data.path is required"),
    ({"strategies": {"e": {"type": "ensemble", "models": ["nope"]}}}, "strategies.e.models names unknown model"),
])
def test_bad_config_one_line(raw, match) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_config(raw, "cfg.toml")
    assert "\n" not in str(err.value) and str(err.value).startswith("cfg.toml: ")


def test_initial_train_longer_than_data() -> None:
    cfg = parse_config({"walkforward": {"initial_train": 5000}})
    with pytest.raises(ConfigError, match="walkforward.initial_train = 5000 is not shorter than the data \\(2932 bars\\)"):
        check_against_data(cfg, 2932)


def test_overrides_parse_toml_values() -> None:
    raw = apply_overrides({}, ["walkforward.step=7", "models.m.type=lstm", "models.m.dropout=0.2", "data.symbol=ETH/USDT",
                               "run.seeds=[1, 2]", "walkforward.warm_start=true"])
    cfg = parse_config(raw)
    assert cfg.walkforward.step == 7 and cfg.models["m"].dropout == 0.2 and cfg.data.symbol == "ETH/USDT"
    assert cfg.run.seeds == [1, 2] and cfg.walkforward.warm_start is True
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["step"])


def test_resolved_toml_round_trips(tmp_path) -> None:
    cfg = load_config("configs/default.toml")
    again = parse_config(tomllib.loads(cfg.to_toml()))
    assert again == cfg


def test_cli_bad_key_exit_2_nothing_written(tmp_path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[walkforward]\ninitial_trian = 100\n')
    out = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "backtest.cli", "run", str(conf), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "unknown key 'walkforward.initial_trian' (did you mean 'initial_train'?)" in res.stderr
    assert not out.exists()
    bad_toml = tmp_path / "b.toml"
    bad_toml.write_text("[walkforward\n")
    res = subprocess.run([sys.executable, "-m", "backtest.cli", "run", str(bad_toml), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "not valid TOML" in res.stderr and not out.exists()


# --- issue 8: nothing in the config is silently ignored, clamped or wrong ---------------------------------
@pytest.mark.parametrize("body,match", [
    ({"type": "lstm", "filters": 8}, "models.m: 'filters' is not a parameter of type 'lstm'; allowed: .*units"),
    ({"type": "lstm", "leaky_alpha": 0.1}, "models.m: 'leaky_alpha' is not a parameter of type 'lstm'"),
    ({"type": "gru", "kernel_size": 3}, "models.m: 'kernel_size' is not a parameter of type 'gru'"),
    ({"type": "cnn", "units": 8}, "models.m: 'units' is not a parameter of type 'cnn'"),
    ({"type": "cnn", "recurrent_dropout": 0.1}, "models.m: 'recurrent_dropout' is not a parameter of type 'cnn'"),
    ({"type": "persistence", "epochs": 3}, "models.m: 'epochs' is not a parameter of type 'persistence'; allowed: no keys"),
    ({"type": "linear", "units": 3}, "models.m: 'units' is not a parameter of type 'linear'; allowed: alpha"),
    ({"type": "cnn", "layers": 4}, "models.m.layers \\(type 'cnn'\\): Input should be less than or equal to 3"),
    ({"type": "cnn", "layers": 1}, "models.m.layers \\(type 'cnn'\\): Input should be greater than or equal to 2"),
    ({"type": "stacked_lstm", "layers": 1}, "models.m.layers \\(type 'stacked_lstm'\\): Input should be greater than or equal to 2"),
    ({"type": "cnn", "activation": "tanh"}, "models.m.activation \\(type 'cnn'\\): Input should be 'relu', 'leaky_relu', 'elu' or 'linear'"),
    ({"type": "lstm", "activation": "selu"}, "models.m.activation \\(type 'lstm'\\): Input should be 'tanh'"),
    ({"units": 3}, "models.m.type is required"),
])
def test_model_keys_are_per_type(body, match) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_config({"models": {"m": body}}, "cfg.toml")
    assert "\n" not in str(err.value) and str(err.value).startswith("cfg.toml: ")


def test_model_defaults_live_in_the_schema_and_configs_validate() -> None:
    cfg = parse_config({"models": {"b": {"type": "bilstm"}, "l": {"type": "lstm", "units": 8}, "c": {"type": "cnn"}}})
    assert cfg.models["b"].dropout == 0.2 and cfg.models["l"].dropout == 0.0 and cfg.models["l"].epochs == 50
    assert cfg.models["c"].layers == 2 and cfg.models["c"].activation == "relu"
    from backtest.folds.units import model_params
    from models import MODEL_TYPES, make_forecaster

    for t in MODEL_TYPES:  # every type's validated keys are accepted by its forecaster
        mc = parse_config({"models": {"m": {"type": t}}}).models["m"]
        params = model_params(mc, cfg.features, seed=1)
        assert make_forecaster(t, **params).hparams == mc
    for path in ("configs/default.toml", "configs/paper.toml"):
        again = load_config(path)
        assert parse_config(tomllib.loads(again.to_toml())) == again


@pytest.mark.parametrize("strategies,match", [
    ({"h": {"type": "long_flat", "entry_threshold": 0.001, "exit_threshold": 0.002}},
     "strategies.h: exit_threshold \\(0.002\\) must not exceed entry_threshold \\(0.001\\)"),
    ({"h": {"type": "long_flat", "entry_threshold": 0.001}},  # exit defaults to the round-trip cost 0.003
     "strategies.h: exit_threshold \\(0.003\\) must not exceed entry_threshold \\(0.001\\)"),
    ({"b": {"type": "buy_and_hold", "threshold": 0.01}}, "strategies.b: 'threshold' is not a parameter of type 'buy_and_hold'"),
    ({"s": {"type": "sma_cross", "fast": 30, "slow": 30}}, "strategies.s.fast \\(30\\) must be smaller than slow \\(30\\)"),
    ({"l": {"type": "long_flat", "fast": 5}}, "strategies.l: 'fast' is not a parameter of type 'long_flat'"),
    ({"e": {"type": "ensemble", "models": ["persistence"]}}, "strategies.e: an ensemble needs at least one forecasting model"),
    ({"e": {"type": "ensemble"}}, "strategies.e: an ensemble needs at least one forecasting model"),
])
def test_strategy_parameters_fail_at_validation(strategies, match) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_config({"models": {"persistence": {"type": "persistence"}}, "strategies": strategies}, "cfg.toml")
    assert "\n" not in str(err.value)


def test_cli_bad_strategy_exit_2_one_line_no_run_dir(tmp_path) -> None:
    """Used to train every model, then end in a traceback with a half-written run directory."""
    conf = tmp_path / "c.toml"
    conf.write_text('[walkforward]\ninitial_train = 150\nmax_folds = 1\n[models.l]\ntype = "linear"\n'
                    '[strategies.h]\ntype = "long_flat"\nentry_threshold = 0.001\nexit_threshold = 0.002\n')
    out = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "backtest.cli", "run", str(conf), "--out", str(out)],
                         capture_output=True, text=True)
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr
    assert "strategies.h: exit_threshold (0.002) must not exceed entry_threshold (0.001)" in lines[0]
    assert not out.exists()


def test_data_timeframe_optional_and_toml_dates(tmp_path) -> None:
    assert parse_config({}).data.timeframe is None  # bundled: 1d at load; file: inferred
    with pytest.raises(ConfigError, match="data.timeframe is required when data.source = 'ccxt'"):
        parse_config({"data": {"source": "ccxt"}}, "cfg.toml")
    conf = tmp_path / "c.toml"
    conf.write_text("[data]\nstart = 2021-01-01\nend = 2022-06-30T12:00:00\n")  # unquoted TOML date/datetime
    cfg = load_config(conf)
    assert cfg.data.start == "2021-01-01" and cfg.data.end == "2022-06-30T12:00:00"
    assert parse_config(tomllib.loads(cfg.to_toml())) == cfg
    assert cfg.data.max_repair_fraction == 0.01
    with pytest.raises(ConfigError, match="data.max_repair_fraction: Input should be less than or equal to 1"):
        parse_config({"data": {"max_repair_fraction": 2}}, "cfg.toml")


def test_rolling_train_length_too_short_blames_train_length() -> None:
    from backtest.folds.plan import plan_folds

    cfg = parse_config({"walkforward": {"initial_train": 200, "window": "rolling", "train_length": 12, "val_fraction": 0.2}})
    with pytest.raises(ConfigError, match="walkforward.train_length = 12: fold 0 would train on 9 rows") as err:
        plan_folds(400, 40, cfg.walkforward, 1)
    assert "initial_train" not in str(err.value)
