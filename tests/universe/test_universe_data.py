"""Universe data: config keys, bundled pairs, files per symbol, errors naming the symbol, ccxt from the emulator."""
from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from backtest.cli import main
from backtest.config import DataConfig, parse_config
from backtest.data.cache import cache_path, read_cache
from backtest.data.load import bundled_path, bundled_symbols
from backtest.errors import ConfigError, DataError
from backtest.rundir import forecast_fingerprint
from backtest.data.universe import load_universe
from tests.emulator import ExchangeEmulator
from tests.universe.helpers import END, START, SYMBOLS, bundled_universe, universe_cfg

# sha256 of the bundled files, as stated in backtest/data/bundled/README.md (provenance)
README_SHA = {
    "ETH/USDT": "49dc5faafb9f7ee83e1f5e220f6a749e7f94e6a1a9985602a32c61f3bab9eb96",
    "BNB/USDT": "66a5575c586b12213e2c66a926a4ee73b699f249e7375032581a0230813006bc",
    "SOL/USDT": "38af4f901566e41673724147cb2efd2409ae84baa0f7c67726f9bcc9fc31ca10",
    "XRP/USDT": "73f234fabc04269815b0f1764328e08e43868339e2e368ded71364e3ac9d0cbf",
    "ADA/USDT": "5d9d5edb52852a26bf222fdc16faad8f273173fd6ca287422bea6ed6c51e39da",
    "LTC/USDT": "2cad4b2dbf8b5198078c7a6dc5bd9fea22ba105a82bc4da3a38e98b1e4d38f53",
    "BTC/USDT": "393e577a9ac520df4c40f86e3f332d874582b12d7c6bdcddfd9214fbdcf57119",
}


# --- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    ({"source": "ccxt", "paths": {"BTC/USDT": "b.csv"}}, r"data.paths needs data.source = 'file' \(got 'ccxt'\)"),
    ({"source": "file", "symbols": ["BTC/USDT"]}, r"data.symbols is for source = 'ccxt' or 'bundled'"),
    ({"source": "ccxt", "symbols": ["BTC/USDT", "ETH/USDT", "BTC/USDT"]}, r"data.symbols repeats BTC/USDT"),
    ({"source": "file", "path": "a.csv", "paths": {"BTC/USDT": "b.csv"}}, r"data.path and data.paths are exclusive"),
    ({"source": "ccxt", "symbols": []}, r"data.symbols: List should have at least 1 item"),
    ({"source": "bundled", "symbols": "BTC/USDT"}, r"data.symbols: Input should be a valid list"),
])
def test_bad_universe_keys_are_one_line_errors(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": data})


@pytest.mark.parametrize("key, value, message", [
    ("pooled", "maybe", r"features.pooled: Input should be a valid boolean"),
    ("symbol_input", "embedding", r"features.symbol_input: Input should be 'none' or 'onehot', got 'embedding'"),
])
def test_bad_pooling_keys_are_one_line_errors(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"features": {key: value}})


def test_resolved_config_with_paths_round_trips_through_toml() -> None:
    cfg = parse_config({"data": {"source": "file", "paths": {"BTC/USDT": "btc.csv", "ETH/USDT": "e th.csv"}},
                        "features": {"pooled": True, "symbol_input": "onehot"}})
    again = parse_config(tomllib.loads(cfg.to_toml()))
    assert again == cfg and again.data.universe() == ["BTC/USDT", "ETH/USDT"]


def test_single_symbol_fingerprint_ignores_the_new_universe_keys() -> None:
    """Run directories made before universes (and ``scale_target``) existed keep resuming: the keys added later
    are not hashed at their defaults."""
    cfg = parse_config({})
    import json

    d = cfg.model_dump(mode="json")
    data = {k: v for k, v in d["data"].items()
            if k not in ("cache_dir", "base_url", "timeout_ms", "max_retries", "symbols", "paths")}
    features = {k: v for k, v in d["features"].items() if k not in ("pooled", "symbol_input", "scale_target")}
    wf = {k: v for k, v in d["walkforward"].items() if k not in ("executor", "workers")}
    old = {"data": data, "data_sha256": "x", "features": features, "walkforward": wf, "models": d["models"],
           "seeds": d["run"]["seeds"], "deterministic": d["run"]["deterministic"]}
    assert forecast_fingerprint(cfg, "x") == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    pooled = parse_config({"features": {"pooled": True}})
    assert forecast_fingerprint(pooled, "x") != forecast_fingerprint(cfg, "x")
    raw = parse_config({"features": {"scale_target": False}})  # added later too: hashed only when changed
    assert forecast_fingerprint(raw, "x") != forecast_fingerprint(cfg, "x")


# --- bundled --------------------------------------------------------------------------------------
def test_bundled_pairs_match_their_provenance_note() -> None:
    assert bundled_symbols() == sorted(README_SHA)
    readme = (bundled_path().parent / "README.md").read_text()
    for sym, sha in README_SHA.items():
        assert hashlib.sha256(bundled_path(sym).read_bytes()).hexdigest() == sha
        assert sha in readme


def test_bundled_universe_keeps_each_symbols_own_start() -> None:
    data = bundled_universe()
    assert data.symbols == SYMBOLS and data.timeframe == "1d"
    assert [len(data.bars[s]) for s in SYMBOLS] == [276, 276, 174]
    assert data.bars["SOL/USDT"].index[0] == pd.Timestamp("2020-08-11", tz="UTC")  # listed later: not back-filled
    assert all(b.index[-1] == pd.Timestamp(END, tz="UTC") - pd.Timedelta(days=1) for b in data.bars.values())
    assert data.sources["ETH/USDT"] == "bundled Binance ETH/USDT 1d"
    assert set(data.reports) == set(SYMBOLS) and len(data.sha256) == 64
    assert data.sha256 != load_universe(DataConfig(source="bundled", symbols=SYMBOLS[:2], start=START, end=END)).sha256


def test_unknown_bundled_symbol_names_the_symbol_and_the_choices() -> None:
    with pytest.raises(DataError, match=r"^DOGE/USDT: bundled data has no 'DOGE/USDT'; bundled symbols: ADA/USDT, BNB/USDT"):
        load_universe(DataConfig(source="bundled", symbols=["BTC/USDT", "DOGE/USDT"]))


# --- files: validation per symbol, errors name the symbol ---------------------------------------------
def _write_universe_files(folder: Path, bad: str | None = None) -> dict[str, str]:
    """Three daily CSVs (sliced from the bundled files); ETH starts 60 days later than BTC, SOL later still."""
    paths = {}
    for sym, start in (("BTC/USDT", "2020-09-01"), ("ETH/USDT", "2020-10-31"), ("SOL/USDT", "2020-12-01")):
        df = pd.read_csv(bundled_path(sym), dtype=str)
        df = df[(df["timestamp"] >= start) & (df["timestamp"] < "2021-03-01")]
        if sym == bad:
            df.loc[df.index[20], "close"] = "abc"
        p = folder / f"{sym.split('/')[0].lower()}.csv"
        df.to_csv(p, index=False)
        paths[sym] = str(p)
    return paths


def test_file_universe_validates_each_symbol(tmp_path: Path) -> None:
    paths = _write_universe_files(tmp_path)
    data = load_universe(DataConfig(source="file", paths=paths))
    assert [b.index[0].strftime("%Y-%m-%d") for b in data.bars.values()] == ["2020-09-01", "2020-10-31", "2020-12-01"]
    assert [data.reports[s].rows for s in data.symbols] == [len(data.bars[s]) for s in data.symbols]


def test_a_symbol_with_a_data_error_fails_in_one_line_naming_it(tmp_path: Path, capsys) -> None:
    paths = _write_universe_files(tmp_path, bad="ETH/USDT")
    with pytest.raises(DataError, match=r"^ETH/USDT: .*eth\.csv: non-numeric close 'abc' at 2020-11-20T00:00:00\+00:00"):
        load_universe(DataConfig(source="file", paths=paths))
    cfg = tmp_path / "u.toml"
    lines = ["[data]", 'source = "file"', "[data.paths]"] + [f'"{s}" = "{p}"' for s, p in paths.items()]
    cfg.write_text("\n".join(lines + ["[walkforward]", "initial_train = 60", "step = 20", "[features]", "lookback = 8"]) + "\n")
    out = tmp_path / "runs"
    rc = main(["run", str(cfg), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("walkforward: error: ETH/USDT: ") and "non-numeric close" in err[0]
    assert not out.exists()  # nothing written


def test_a_symbol_too_short_for_initial_train_is_named(tmp_path: Path) -> None:
    from backtest.run import run_forecasts as run_universe_forecasts

    cfg = universe_cfg(walkforward={"initial_train": 200})
    with pytest.raises(ConfigError, match=r"^SOL/USDT: walkforward.initial_train = 200 is not shorter than the data \(174 bars\)"):
        run_universe_forecasts(cfg, tmp_path)
    assert not any(tmp_path.iterdir())


def test_paper_trading_refuses_a_universe() -> None:
    from backtest.paper.engine import PaperSetup

    with pytest.raises(ConfigError, match="paper trading takes one market"):
        PaperSetup.from_config(universe_cfg())


# --- ccxt: several symbols from the local exchange emulator ---------------------------------------------
def test_data_fetch_several_symbols_from_the_emulator(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    data = bundled_universe()
    frames = {s: b for s, b in data.bars.items()}
    now = pd.Timestamp(END, tz="UTC")
    with ExchangeEmulator(frames["BTC/USDT"], now=now, markets={s: frames[s] for s in SYMBOLS[1:]}, max_limit=100) as emu:
        args = ["data", "fetch", "--exchange", "binance", "--timeframe", "1d", "--since", START, "--until", END,
                "--cache-dir", str(tmp_path), "--base-url", emu.url, "--no-progress"]
        rc = main(args + sum((["--symbol", s] for s in SYMBOLS), []))
        out = capsys.readouterr().out.strip().splitlines()
        assert rc == 0 and len(out) == 3
        assert out[2].startswith("SOL/USDT  174 rows  2020-08-11T00:00:00+00:00 .. 2021-01-31T00:00:00+00:00  1d  gaps 0")
        assert {p["symbol"] for p in emu.klines_requests()} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
        for s in SYMBOLS:
            cached = read_cache(cache_path(tmp_path, "binance", s, "1d"))
            cached.index = cached.index.as_unit("ns")
            pd.testing.assert_frame_equal(cached, frames[s], check_freq=False)

        # a universe run config with source = "ccxt" reads the same bars (updating the cache is a no-op here)
        ccxt_cfg = DataConfig(source="ccxt", timeframe="1d", symbols=SYMBOLS, start=START, end=END, cache_dir=str(tmp_path), base_url=emu.url)
        got = load_universe(ccxt_cfg, now=now)
        for s in SYMBOLS:
            b = got.bars[s]
            b.index = b.index.as_unit("ns")  # the Parquet cache keeps microseconds
            pd.testing.assert_frame_equal(b, frames[s], check_freq=False)
        assert got.sha256 == data.sha256  # same bars, same universe hash, whatever the source

        rc = main(args + ["--symbol", "BTC/USDT", "--symbol", "DOGE/USDT"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("walkforward: error: DOGE/USDT: ")


# --- example configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, symbols, pooled", [("universe.toml", 5, True), ("universe_4h.toml", 4, False)])
def test_example_universe_configs_are_valid(name: str, symbols: int, pooled: bool) -> None:
    from backtest.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / name)
    assert len(cfg.data.universe() or []) == symbols and cfg.features.pooled is pooled
    if cfg.data.source == "bundled":
        data = load_universe(cfg.data)
        assert data.bars["SOL/USDT"].index[0] > data.bars["BTC/USDT"].index[0]  # listed later, starts later
        assert all(b.index[-1] == pd.Timestamp("2025-08-26", tz="UTC") for b in data.bars.values())
