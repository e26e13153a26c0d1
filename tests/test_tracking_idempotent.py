"""MLflow at the seams: artifacts beside a SQLite store, the timeframe a run used, `track` twice = one MLflow run,
and `compare` of a run id recording ``runs:/<id>``. A local SQLite store in a temporary folder; no server."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from backtest.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def setup(tiny_real_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The session's tiny real run directory (bundled BTC/USDT, timeframe left unset) and a SQLite store URI
    (``<tmp>/store/mlflow.db``) shared by this module's tests, one experiment each."""
    store = tmp_path_factory.mktemp("track") / "store"
    store.mkdir()
    return tiny_real_run.run_dir, f"sqlite:///{store / 'mlflow.db'}"


def _runs(uri: str, experiment: str):  # type: ignore[no-untyped-def]
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, exp, client.search_runs([exp.experiment_id])


def test_track_twice_is_one_mlflow_run(setup, capsys) -> None:
    run_dir, uri = setup
    assert main(["track", str(run_dir), "--mlflow", uri, "--experiment", "twice"]) == 0
    first = capsys.readouterr().out.split("mlflow run: ")[1].split()[0]
    assert main(["track", str(run_dir), "--mlflow", uri, "--experiment", "twice"]) == 0
    second = capsys.readouterr().out.split("mlflow run: ")[1].split()[0]
    client, _, runs = _runs(uri, "twice")
    assert first == second and [r.info.run_id for r in runs] == [first]
    run = runs[0]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(first, "portfolio/buy_and_hold/sharpe")
    assert len(history) == 1  # unchanged metrics are not logged again
    meta = json.loads((run_dir / "meta.json").read_text())
    assert run.data.tags["walkforward.data_sha256"] == meta["data"]["sha256"]
    assert run.data.tags["walkforward.symbol"] == "BTC/USDT"


def test_inferred_timeframe_is_logged_as_used(setup) -> None:
    run_dir, uri = setup
    assert "timeframe" not in (run_dir / "config.toml").read_text()  # the config left it to the data
    assert main(["track", str(run_dir), "--mlflow", uri, "--experiment", "tf"]) == 0
    _, _, runs = _runs(uri, "tf")
    assert runs[0].data.params["data.timeframe"] == "1d"
    assert runs[0].data.tags["walkforward.timeframe"] == "1d"


def test_universe_facts_come_from_the_universe_block() -> None:
    from backtest.tracking import data_facts, run_identity

    meta = {"universe": {"symbols": ["BTC/USDT", "ETH/USDT"], "sha256": "u" * 64, "timeframe": "4h"},
            "data": {"BTC/USDT": {"sha256": "b" * 64, "timeframe": "4h"}, "ETH/USDT": {"sha256": "e" * 64, "timeframe": "4h"}}}
    cfg = {"data": {"symbols": ["BTC/USDT", "ETH/USDT"]}, "walkforward": {"executor": "process", "step": 5},
           "tracking": {"mlflow_uri": "sqlite:///a.db"}}
    assert data_facts(cfg, meta) == ("u" * 64, ["BTC/USDT", "ETH/USDT"], "4h")
    # where a run executed or was tracked is not what it computed; its config and data are
    same = {**cfg, "walkforward": {"executor": "ray", "step": 5}, "tracking": {"mlflow_uri": "http://h:5000"}}
    other = {**cfg, "walkforward": {"executor": "process", "step": 6}}
    assert run_identity(same, meta) == run_identity(cfg, meta) != run_identity(other, meta)
    assert run_identity(cfg, {**meta, "universe": {**meta["universe"], "sha256": "v" * 64}}) != run_identity(cfg, meta)


def test_sqlite_artifacts_go_beside_the_store(setup, tmp_path: Path, monkeypatch) -> None:
    run_dir, uri = setup
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["track", str(run_dir), "--mlflow", uri, "--experiment", "where"]) == 0
    _, exp, runs = _runs(uri, "where")
    store = Path(uri.removeprefix("sqlite:///")).parent
    assert exp.artifact_location == (store / "mlartifacts").as_uri()
    report = store / "mlartifacts" / runs[0].info.run_id / "artifacts" / "report.html"
    assert report.read_bytes() == (run_dir / "report.html").read_bytes()
    assert list(elsewhere.iterdir()) == []  # no ./mlruns in the working directory


def test_compare_of_a_run_id_records_runs_uri(setup, tmp_path: Path, capsys) -> None:
    run_dir, uri = setup
    assert main(["track", str(run_dir), "--mlflow", uri, "--experiment", "cmp"]) == 0
    rid = capsys.readouterr().out.split("mlflow run: ")[1].split()[0]
    assert main(["compare", rid, "--out", str(tmp_path / "cmp"), "--mlflow", uri]) == 0
    recorded = json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]
    assert [r["path"] for r in recorded] == [f"runs:/{rid}"]
    assert f"(runs:/{rid})" in (tmp_path / "cmp" / "compare.html").read_text()
