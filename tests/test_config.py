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
    ({"models": {"m": {"type": "lstm", "unit": 3}}}, "unknown key 'models.m.unit' \\(did you mean 'units'\\?\\)"),
    ({"models": {"m": {"type": "lstn"}}}, "models.m.type: unknown model type 'lstn' \\(did you mean 'lstm'\\?\\)"),
    ({"walkforward": {"step": -1}}, "walkforward.step: Input should be greater than or equal to 1"),
    ({"walkforward": {"step": "ten"}}, "walkforward.step: Input should be a valid integer"),
    ({"backtest": {"fees": 1.0}}, "backtest.fees: Input should be less than 1"),
    ({"features": {"normalize": "global"}}, "features.normalize: Input should be 'window', 'minmax', 'standard' or 'none'"),
    ({"features": {"inputs": ["close", "rsj"]}}, "unknown input 'rsj' \\(did you mean 'rsi'\\?\\)"),
    ({"walkforward": {"window": "rolling"}}, "train_length is required"),
    ({"walkforward": {"training": "grouped", "warm_start": True}}, "training = 'grouped' needs cold starts; with warm_start"),
    ({"walkforward": {"training": "batched"}}, "walkforward.training: Input should be 'auto', 'grouped' or 'per_fold'"),
    ({"walkforward": {"group_size": 0}}, "walkforward.group_size: Input should be greater than or equal to 1"),
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
