"""``--set`` / ``--grid`` keys read as TOML dotted keys, and universes that name one market or one file twice."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backtest.config import apply_overrides, load_config, parse_config, parse_override
from backtest.data.load import bundled_path
from backtest.errors import ConfigError
from backtest.sweep import parse_grid, point_label, run_sweep

UNIVERSE = """
[data]
source = "file"
paths = {{ "BTC/USDT" = "{btc}", "ETH/USDT" = "{eth}", "SOL/USDT" = "{sol}" }}
"""


@pytest.mark.parametrize("text, path, value", [
    ('data.paths."ETH/USDT"=eth.csv', ["data", "paths", "ETH/USDT"], "eth.csv"),
    ("data.paths.'ETH/USDT'=eth.csv", ["data", "paths", "ETH/USDT"], "eth.csv"),
    ('models."my.net".units=8', ["models", "my.net", "units"], 8),
    ('data.paths."A=B"=x.csv', ["data", "paths", "A=B"], "x.csv"),
    ("walkforward . step = 7", ["walkforward", "step"], 7),
    ("data.symbol=ETH/USDT", ["data", "symbol"], "ETH/USDT"),
])
def test_override_keys_are_read_as_toml_reads_them(text: str, path: list[str], value: object) -> None:
    assert parse_override(text) == (path, value)


def test_quoted_override_replaces_the_symbol_instead_of_adding_one(tmp_path: Path) -> None:
    conf = tmp_path / "u.toml"
    conf.write_text(UNIVERSE.format(btc="btc.csv", eth="old_eth.csv", sol="sol.csv"))
    cfg = load_config(conf, ['data.paths."ETH/USDT"=eth.csv'])
    assert cfg.data.paths == {"BTC/USDT": "btc.csv", "ETH/USDT": "eth.csv", "SOL/USDT": "sol.csv"}


@pytest.mark.parametrize("text, match", [
    ("data.paths.ETH/USDT=eth.csv", r"'data.paths.ETH/USDT' is not a TOML key.*e\.g\. data\.paths\.\"ETH/USDT\""),
    ("a..b=1", r"'a..b' is not a TOML key"),
    ("step", r"expected section.key=value"),
    ('"walkforward.step"=3', r"the key must name a section and a key"),
])
def test_bad_override_keys_are_one_line(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        apply_overrides({}, [text])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data, match", [
    ({"source": "bundled", "symbols": ["ETH/USDT", "BTC/USDT", "eth/usdt"]},
     r"data.symbols repeats the market ETH/USDT: 'ETH/USDT' and 'eth/usdt' name the same market"),
    ({"source": "ccxt", "timeframe": "1d", "symbols": ["BTC/USDT", " BTC / USDT "]},
     r"data.symbols repeats the market BTC/USDT"),
    ({"source": "file", "paths": {"ETH/USDT": "a.csv", '"ETH/USDT"': "b.csv"}},
     r"data.paths repeats the market ETH/USDT: 'ETH/USDT' and '\"ETH/USDT\"' name the same market"),
])
def test_spellings_of_one_market_are_refused(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        parse_config({"data": data}, "cfg.toml")
    assert "\n" not in str(err.value)


def _files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for sym in ("BTC/USDT", "ETH/USDT", "SOL/USDT"):
        out[sym] = tmp_path / f"{sym.split('/')[0].lower()}.csv"
        shutil.copy(bundled_path(sym), out[sym])
    return out


def test_cli_refuses_a_quoted_twin_and_a_shared_file_exit_2_nothing_written(tmp_path: Path) -> None:
    f = _files(tmp_path)
    out = tmp_path / "runs"
    twin = tmp_path / "twin.toml"  # the file itself spells ETH/USDT twice
    twin.write_text(UNIVERSE.format(btc=f["BTC/USDT"], eth=f["ETH/USDT"], sol=f["SOL/USDT"])
                    .replace('"SOL/USDT"', "'\"ETH/USDT\"'"))
    (tmp_path / "sub").mkdir()
    shared = tmp_path / "shared.toml"  # two symbols, one file (spelled two ways)
    shared.write_text(UNIVERSE.format(btc=f["BTC/USDT"], eth=f["ETH/USDT"], sol=tmp_path / "sub" / ".." / "eth.csv"))
    for conf, message in ((twin, "data.paths repeats the market ETH/USDT"),
                          (shared, f"data.paths: 'ETH/USDT' and 'SOL/USDT' name the same file '{f['ETH/USDT']}'")):
        res = subprocess.run([sys.executable, "-m", "backtest.cli", "run", str(conf), "--out", str(out), "--no-progress"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and message in res.stderr and "Traceback" not in res.stderr
        assert not out.exists()


def test_grid_keys_are_toml_keys_and_run_names_stay_folder_safe() -> None:
    assert parse_grid(['data.paths."ETH/USDT"=a.csv,b.csv']) == [('data.paths."ETH/USDT"', ["a.csv", "b.csv"])]
    assert point_label((('data.paths."ETH/USDT"', "a.csv"),)) == "paths.ETH-USDT=a.csv"
    assert point_label((("models.linear.alpha", "0.1"), ("data.timeframe", '"4h"'))) == "linear.alpha=0.1__data.timeframe=4h"
    assert point_label(()) == "base"


def test_sweep_over_a_quoted_model_key_names_its_runs_safely(tmp_path: Path, monkeypatch) -> None:
    """The configs a sweep hands to the run (the run itself is the pipeline's, tested in test_cli_run)."""
    import types

    ran = []

    def fake_run_all(cfg, out, progress=False, data=None, trained=None):  # type: ignore[no-untyped-def]
        ran.append(cfg)
        return types.SimpleNamespace(run_dir=out / cfg.run.name)

    monkeypatch.setattr("backtest.pipeline.run_all", fake_run_all)
    monkeypatch.setattr("reports.compare.compare_runs", lambda dirs, out: out / "compare.html")
    monkeypatch.setattr("backtest.sweep.write_sweep", lambda *a, **k: tmp_path / "sw" / "sweep" / "report.html")
    conf = tmp_path / "s.toml"
    conf.write_text('[models."my.lin"]\ntype = "linear"\n[run]\nname = "q"\n')
    run_sweep(conf, ['models."my.lin".alpha=0.1,100'], seeds=None, out=tmp_path / "sw", overrides=[])
    assert [c.run.name for c in ran] == ["q__my.lin.alpha=0.1", "q__my.lin.alpha=100"]
    assert [c.models["my.lin"].alpha for c in ran] == [0.1, 100] and list(ran[0].models) == ["my.lin", "persistence"]
