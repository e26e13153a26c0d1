"""`walkforward sweep` as one computation, its analysis, its typed metrics.json and its report (in a browser)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.cli import main
from backtest.schema import SchemaError
from backtest.selection import Criterion, select
from backtest.sweep_schema import SweepMetrics

TINY = """
[data]
end = "2019-06-01"
[features]
lookback = 8
[walkforward]
initial_train = 400
step = 40
executor = "sequential"
[models.linear]
type = "linear"
[strategies.lf]
type = "long_flat"
[backtest]
bootstrap_samples = 100
[run]
name = "tiny"
"""
GRID = "models.linear.alpha=0.1,10,1000"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny sweep (3 grid points x 2 seeds x 7 folds of a ridge model), executor calls counted."""
    import backtest.folds.execute as ex

    tmp = tmp_path_factory.mktemp("sweep")
    conf = tmp / "s.toml"
    conf.write_text(TINY)
    calls: list[int] = []
    real = ex.execute

    def counting(tasks, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(len(tasks))
        return real(tasks, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(ex, "execute", counting)
    try:
        assert main(["sweep", str(conf), "--grid", GRID, "--seeds", "2", "--select", "mse:3:2", "--pbo-blocks", "6",
                     "--reps", "100", "--out", str(tmp / "sw"), "--no-progress"]) == 0
    finally:
        mp.undo()
    (tmp / "calls.json").write_text(json.dumps(calls))
    return tmp


def test_every_training_goes_to_one_execute_call(sweep: Path) -> None:
    calls = json.loads((sweep / "calls.json").read_text())
    # one call trains the whole grid (3 points x 2 seeds x (linear + persistence) x 7 folds); each grid
    # point's evaluation uses those results (no second execute call, nothing read back)
    assert calls == [3 * 2 * 2 * 7]
    m = SweepMetrics.read(sweep / "sw" / "sweep" / "metrics.json")
    for g in m.grid:
        meta = json.loads((sweep / "sw" / g.run_dir / "meta.json").read_text())
        assert meta["folds"] == 7 and meta["seeds"] == [0, 1]
        assert (sweep / "sw" / g.run_dir / "report.html").is_file()  # a normal run directory
        # trained by this sweep, not resumed: its meta.json says so and has every fold's seconds
        assert meta["resumed"] is False and len(meta["fold_seconds"]) == 2 * 2 * 7


def test_sweep_metrics_schema_and_selection_record(sweep: Path) -> None:
    m = SweepMetrics.read(sweep / "sw" / "sweep" / "metrics.json")
    assert [c.candidate for c in m.candidates] == [f"linear.alpha={a}/linear" for a in ("0.1", "10", "1000")]
    assert all(len(c.mse_ratio) == 2 and len(c.sharpe["lf"]) == 2 for c in m.candidates)
    sel = m.selection
    assert sel is not None and (sel.criterion, sel.lookback, sel.min_history) == ("mse", 3, 2)
    assert len(sel.blocks) == m.sweep.blocks == 7
    assert [b.chosen for b in sel.blocks[:2]] == [m.candidates[0].candidate] * 2  # minimum history: first point
    assert sel.hindsight_best in [c.candidate for c in m.candidates] and sel.hindsight_tradeable is False
    assert sel.sharpe_mean is not None and sel.verdict is not None
    # the traded record is the chosen candidates' forecasts, block by block
    preds = pd.read_csv(sweep / "sw" / "sweep" / "selected" / "predictions.csv")
    assert set(preds["chosen"]) <= {c.candidate for c in m.candidates} and set(preds["seed"]) == {0, 1}
    by_block = preds.groupby("fold")["chosen"].first()
    assert list(by_block) == [b.chosen for b in sel.blocks]
    assert m.pbo is not None and m.pbo.n_blocks == 6 and m.pbo.pbo is not None
    assert m.spa_portfolio.spa_p_consistent is not None and m.spa_forecast.rc_p is not None
    assert m.mcs is not None and set(m.mcs.pvalues) == {c.candidate for c in m.candidates}
    assert m.deflated_sharpe.n_trials == 3 * 2 * 2  # every grid point x seed x model strategy (linear, persistence)
    # the verdict says "beats" only when SPA rejects, and quotes its p-values
    for kind, res in (("portfolio", m.spa_portfolio), ("forecast", m.spa_forecast)):
        assert getattr(m.verdict, kind) == ("beats" if res.spa_p_consistent < 0.05 else "not_shown")
    assert f"SPA p = {m.spa_portfolio.spa_p_consistent:.3f}" in m.verdict.text
    # round trip, and a wrong file is one SchemaError line
    assert SweepMetrics.from_dict(json.loads(m.to_json())) == m
    bad = json.loads(m.to_json())
    del bad["selection"]["blocks"]
    with pytest.raises(SchemaError, match="selection lacks field 'blocks'"):
        SweepMetrics.from_dict(bad)
    with pytest.raises(SchemaError, match="not a sweep"):
        SweepMetrics.from_dict({"kind": "universe"})


def test_garbage_after_block_k_changes_no_choice_through_the_run_dirs(sweep: Path) -> None:
    from backtest.sweep_analysis import candidates_of, load_point, squared_errors

    m = SweepMetrics.read(sweep / "sw" / "sweep" / "metrics.json")
    points = [load_point(sweep / "sw" / g.run_dir, g.label, g.values) for g in m.grid]
    blocks = points[0].predictions.drop_duplicates("timestamp").set_index("timestamp")["fold"]
    crit = Criterion("mse", 3, 2)
    base = select(squared_errors(candidates_of(points)).reindex(blocks.index), blocks, crit)
    assert list(base) == [b.chosen for b in m.selection.blocks]
    k = 3
    cut = blocks.index[blocks.to_numpy() > k][0]
    for p in points:
        late = p.predictions["timestamp"] >= cut
        p.predictions.loc[late, "y_pred"] = np.random.default_rng(0).normal(0, 10, int(late.sum()))
    moved = select(squared_errors(candidates_of(points)).reindex(blocks.index), blocks, crit)
    assert list(moved[: k + 1]) == list(base[: k + 1])


def test_sweep_report_in_a_browser(sweep: Path) -> None:
    from tests.browser import dump_dom

    report = sweep / "sw" / "sweep" / "report.html"
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    js = ("<script>window.onload=()=>{const imgs=[...document.images];document.body.setAttribute('data-imgs',"
          "imgs.length+':'+imgs.filter(i=>i.complete&&i.naturalWidth>100).length);}</script>")
    probe = report.with_name("probe.html")
    probe.write_text(text.replace("</body>", js + "</body>"))
    dom = dump_dom(probe.as_uri())
    n, ok = re.search(r'data-imgs="(\d+):(\d+)"', dom).groups()
    assert int(n) == int(ok) == 5  # box plots, selection equity and choices, PBO logits and degradation
    for ident in ("verdict", "grid", "selection", "rule", "choices", "pbo", "spa", "mcs", "dsr"):
        assert f'id="{ident}"' in dom, ident
    assert "NOT tradeable" in dom or "NO (not tradeable)" in dom
    assert "buy &amp; hold" in dom and "persistence (benchmark)" in dom


def test_bad_select_and_pbo_blocks_are_one_line_and_write_nothing(tmp_path: Path, capsys) -> None:
    conf = tmp_path / "s.toml"
    conf.write_text(TINY)
    for extra, msg in ((["--select", "mae"], "--select 'mae'"), (["--pbo-blocks", "5"], "--pbo-blocks 5"),
                       (["--reps", "1"], "--reps 1")):
        assert main(["sweep", str(conf), "--grid", GRID, "--out", str(tmp_path / "sw"), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "sw").exists()


def test_grid_points_with_one_architecture_share_grouped_units() -> None:
    """Trainings of grid points whose networks agree in the grouped key are bundled into the same units."""
    from backtest.data.universe import load_universe
    from backtest.folds.plan import plan_run
    from backtest.folds.units import group_key, make_units
    from backtest.sweep import grid_configs, sweep_tasks

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        conf = Path(d) / "g.toml"
        conf.write_text(TINY.replace('[models.linear]\ntype = "linear"\n',
                                     '[models.lstm]\ntype = "lstm"\nunits = 4\nepochs = 1\n'))
        cfgs, labels, _, _ = grid_configs(conf, ["strategies.lf.threshold=0.0,0.01"], 2, [])
    data = load_universe(cfgs[0].data)
    plans = {c.run.name: plan_run(c, data.bars) for c in cfgs}
    (tasks,) = sweep_tasks(cfgs, plans).values()
    assert {t.folder.split("/")[0] for t in tasks} == {c.run.name for c in cfgs}
    nets = [t for t in tasks if t.model_name == "lstm"]
    assert len({group_key(t) for t in nets}) == 1  # one bucket for both grid points' trainings
    together = [u for u in make_units(tasks, lambda t: False, None) if u.kind == "group"]
    apart = [u for c in cfgs for u in make_units([t for t in tasks if t.folder.startswith(c.run.name + "/")],
                                                  lambda t: False, None) if u.kind == "group"]
    assert sum(len(u.tasks) for u in together) == len(nets) == 2 * 2 * 7
    assert len(together) < len(apart)  # planned together: fewer, fuller units than grid point by grid point


def test_grid_keys_that_vary_together(tmp_path: Path) -> None:
    from backtest.errors import ConfigError
    from backtest.sweep import grid_configs, parse_grid

    conf = tmp_path / "g.toml"
    conf.write_text(TINY.replace('[models.linear]\ntype = "linear"\n', '[models.lstm]\ntype = "lstm"\nunits = 4\n'))
    cfgs, labels, values, _ = grid_configs(conf, ["models.lstm.bias_l1,models.lstm.bias_l2=0:0,0.01:0,0:0.001"], None, [])
    assert [(c.models["lstm"].bias_l1, c.models["lstm"].bias_l2) for c in cfgs] == [(0, 0), (0.01, 0), (0, 0.001)]
    assert labels[1] == "lstm.bias_l1=0.01__lstm.bias_l2=0"
    with pytest.raises(ConfigError, match="2 parts"):
        parse_grid(["models.lstm.bias_l1,models.lstm.bias_l2=0:0,0.01"])
