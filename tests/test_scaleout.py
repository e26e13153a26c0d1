"""Ray executor on a real 2-node local cluster, and MLflow tracking against a real local server.

Data: the bundled daily BTC/USDT candles, 2017-08-17 .. 2018-06-01 (about 290 bars), 2 folds of 30 bars.
The Ray cluster (head + one joining node, 1 CPU each) and the MLflow server (SQLite backend in a temp dir)
are started once per module and torn down even when a test fails.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from backtest.cli import main
from backtest.config import parse_config
from backtest.errors import ConfigError

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

RAW = {
    "data": {"end": "2018-06-01"},
    "features": {"lookback": 8},
    "walkforward": {"initial_train": 150, "step": 30, "max_folds": 2},
    "models": {"lstm": {"type": "lstm", "units": 4, "epochs": 2, "patience": 1}, "linear": {"type": "linear"}},
    "backtest": {"bootstrap_samples": 100},
    "run": {"name": "tiny", "seeds": [0]},
}


def _cfg(executor: str, **run):  # type: ignore[no-untyped-def]
    raw = {**RAW, "walkforward": {**RAW["walkforward"], "executor": executor}, "run": {**RAW["run"], **run}}
    return parse_config(raw)


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from backtest.run import run_forecasts

    out = tmp_path_factory.mktemp("seq")
    return run_forecasts(_cfg("sequential"), out).run_dir


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    """A head node and a second node joining it; the driver connected once (the executor reuses it)."""
    from ray.cluster_utils import Cluster

    Path("/tmp/ray").mkdir(exist_ok=True)  # Ray records the latest cluster there
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20,
                                                      "include_dashboard": False})
    try:
        c.add_node(num_cpus=1, object_store_memory=100 * 2**20)
        root = str(Path(__file__).resolve().parent.parent)
        ray.init(address=c.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}})
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _preds(run_dir: Path) -> bytes:
    return (run_dir / "predictions.csv").read_bytes()


def _task_workers(c) -> list[int]:  # type: ignore[no-untyped-def]
    """PIDs of worker processes of this cluster that are executing a fold task right now."""
    import psutil

    raylets = [n.all_processes["raylet"][0].process.pid for n in c.list_all_nodes()]
    out = []
    for pid in raylets:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if "_remote_unit" in " ".join(child.cmdline()):
                    out.append(child.pid)
            except psutil.Error:
                pass
    return out


def test_ray_identical_to_sequential_with_a_killed_worker(cluster, sequential: Path, tmp_path: Path) -> None:
    """On the 2-node cluster, with one worker SIGKILLed mid-task (Ray re-runs it): predictions.csv byte-identical."""
    from backtest.run import run_forecasts

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2

    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("fr", run_forecasts(_cfg("ray"), tmp_path)))
    th.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and th.is_alive() and time.monotonic() < deadline:
        pids = _task_workers(cluster)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.05)
    th.join(120)
    assert killed is not None, "no worker was caught running a task"
    assert _preds(box["fr"].run_dir) == _preds(sequential)


def test_interrupted_driver_leaves_complete_folds_and_resumes(cluster, sequential: Path, tmp_path: Path) -> None:
    from backtest.data.load import load_data
    from backtest.folds.execute import execute
    from backtest.folds.plan import plan_run
    from backtest.folds.store import FoldStore
    from backtest.rundir import check_or_claim, forecast_fingerprint
    from backtest.run import run_forecasts

    cfg = _cfg("ray")
    data = load_data(cfg.data)
    run_dir = tmp_path / "tiny"
    tasks = plan_run(cfg, {cfg.data.symbol: data.bars}).tasks
    check_or_claim(run_dir, forecast_fingerprint(cfg, data.sha256))
    written: list = []

    def ctrl_c(r) -> None:  # type: ignore[no-untyped-def]
        written.append(r.task_key)
        if len(written) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(tasks, {cfg.data.symbol: data.bars}, FoldStore(run_dir), "ray", ray_cfg=cfg.ray, on_result=ctrl_c)
    folders = [p for p in (run_dir / "folds").rglob("seed-*")]
    assert {p.name for p in (run_dir / "folds").rglob(".*")} == set()  # no temp folder left
    assert all((p / "forecasts.csv").is_file() for p in folders) and 3 <= len(folders) < len(tasks)
    n_before = len(folders)
    fr = run_forecasts(cfg, tmp_path)
    import json

    meta = json.loads((run_dir / "meta.json").read_text())
    assert fr.resumed and len(meta["fold_seconds"]) == len(tasks) - n_before  # only the missing folds were written
    assert _preds(run_dir) == _preds(sequential)


UNIVERSE = {"source": "bundled", "symbols": ["BTC/USDT", "ETH/USDT"], "start": "2020-05-01", "end": "2020-12-01"}


@pytest.mark.parametrize("kind", ["single", "per_symbol", "pooled"])
def test_every_executor_gives_byte_identical_predictions(cluster, tmp_path: Path, kind: str) -> None:
    """One executor protocol: sequential, process (spawned workers) and ray (the 2-node cluster) run the same
    units with the same function, so a single-symbol, a per-symbol universe and a pooled universe run give
    byte-identical predictions.csv on each (the networks through the grouped trainer, the ridge baseline)."""
    from backtest.run import run_forecasts

    raw = {"features": {"lookback": 8}, "walkforward": {"initial_train": 120, "step": 40, "max_folds": 3},
           "models": {"lstm": {"type": "lstm", "units": 4, "epochs": 2, "patience": 1, "dropout": 0.1},
                      "linear": {"type": "linear"}}, "run": {"name": kind}}
    if kind == "single":
        raw["data"] = {"start": UNIVERSE["start"], "end": UNIVERSE["end"]}
    else:
        raw["data"] = UNIVERSE
        raw["features"]["pooled"] = kind == "pooled"
    got = {}
    for executor in ("sequential", "process", "ray"):
        cfg = parse_config({**raw, "walkforward": {**raw["walkforward"], "executor": executor, "workers": 2}})
        got[executor] = _preds(run_forecasts(cfg, tmp_path / executor).run_dir)
    assert got["sequential"] == got["process"] == got["ray"]
    assert got["sequential"].count(b"lstm") > 10


def test_universe_run_reads_the_ray_section(tmp_path: Path, capsys) -> None:
    """A universe run with executor = "ray" connects as ``[ray]`` says (an unreachable address: one line, nothing
    written), like a single-symbol run: both go through the same executor."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "u.toml"
    conf.write_text('[data]\nsource = "bundled"\nsymbols = ["BTC/USDT", "ETH/USDT"]\nstart = "2020-05-01"\n'
                    'end = "2020-12-01"\n[walkforward]\ninitial_train = 120\nexecutor = "ray"\n'
                    f'[ray]\naddress = "127.0.0.1:{port}"\nconnect_timeout_s = 2\n[run]\nname = "u"\n')
    assert main(["run", str(conf), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"ray.address = '127.0.0.1:{port}': cluster unreachable" in err[0]
    assert not (tmp_path / "runs").exists()


def test_a_silent_or_foreign_ray_address_is_refused_within_its_timeout(tmp_path: Path, capsys) -> None:
    """A port that accepts connections but never answers as a Ray head (here a plain TCP listener) is refused in
    one line within ``ray.connect_timeout_s`` (plus a little), with none of Ray's log lines and no run directory."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(16)], daemon=True).start()
    port = listener.getsockname()[1]
    from backtest.config import RayConfig
    from backtest.folds.ray import connect

    conf = tmp_path / "c.toml"
    conf.write_text('[walkforward]\ninitial_train = 150\nmax_folds = 1\n[data]\nend = "2018-06-01"\n'
                    f'[ray]\naddress = "127.0.0.1:{port}"\nconnect_timeout_s = 2\n[run]\nname = "r"\n')
    try:
        rc = main(["run", str(conf), "--out", str(tmp_path / "runs"), "--executor", "ray", "--no-progress"])
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match="does not answer as a Ray cluster"):
            connect(RayConfig(address=f"127.0.0.1:{port}", connect_timeout_s=3))
        took = time.monotonic() - t0
    finally:
        listener.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "does not answer as a Ray cluster within ray.connect_timeout_s = 2 s" in err[0]
    assert took < 3 + 1.5  # the timeout, not twice it, nor Ray's own minutes of retries
    assert not (tmp_path / "runs").exists()


def test_unreachable_ray_address_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "c.toml"
    conf.write_text('[walkforward]\ninitial_train = 150\nmax_folds = 1\n[data]\nend = "2018-06-01"\n'
                    f'[ray]\naddress = "127.0.0.1:{port}"\nconnect_timeout_s = 2\n[run]\nname = "r"\n')
    assert main(["run", str(conf), "--out", str(tmp_path / "runs"), "--executor", "ray", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"ray.address = '127.0.0.1:{port}': cluster unreachable" in err[0]
    assert not (tmp_path / "runs").exists()  # nothing written: the address is checked before the run directory
    with pytest.raises(ConfigError, match="expected 'auto', 'HOST:PORT'"):
        from backtest.folds.ray import check_reachable

        check_reachable("nohostport", 1)


def test_execution_keys_do_not_change_the_fingerprint() -> None:
    from backtest.rundir import forecast_fingerprint

    a = forecast_fingerprint(_cfg("sequential"), "x")
    b = parse_config({**RAW, "walkforward": {**RAW["walkforward"], "executor": "ray"},
                      "ray": {"address": "auto", "num_gpus": 1}, "tracking": {"mlflow_uri": "file:/tmp/x"}})
    assert forecast_fingerprint(b, "x") == a
    with pytest.raises(ConfigError, match="unknown key 'ray.adress' \\(did you mean 'address'\\?\\)"):
        parse_config({"ray": {"adress": "auto"}})


# --- MLflow ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(base: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}", "--artifacts-destination", str(base / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(uri + "/health", timeout=1).read()
            return proc, uri
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    _stop(proc)
    raise RuntimeError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the server and its uvicorn/gunicorn children
    proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    proc, uri = _start_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield uri
    finally:
        _stop(proc)


TOML = """
[data]
end = "2018-06-01"
[features]
lookback = 8
[walkforward]
initial_train = 150
step = 30
max_folds = 2
[models.linear]
type = "linear"
[backtest]
bootstrap_samples = 100
[run]
name = "{name}"
"""


def test_run_and_sweep_are_logged(server: str, tmp_path: Path, capsys) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(TOML.format(name="tracked"))
    assert main(["run", str(conf), "--out", str(tmp_path / "runs"), "--mlflow", server, "--no-progress"]) == 0
    rid = capsys.readouterr().out.split("mlflow run: ")[1].split()[0]
    mlflow.set_tracking_uri(server)
    runs = mlflow.search_runs(experiment_names=["walkforward"], filter_string=f"attributes.run_id = '{rid}'")
    row = runs.iloc[0]
    assert row["params.models.linear.type"] == "linear" and row["params.walkforward.step"] == "30"
    assert row["tags.walkforward.symbol"] == "BTC/USDT" and row["tags.walkforward.timeframe"] == "1d"
    meta = __import__("json").loads((tmp_path / "runs" / "tracked" / "meta.json").read_text())
    assert row["tags.walkforward.data_sha256"] == meta["data"]["sha256"]
    assert row["tags.version.keras"] == meta["versions"]["keras"]
    summary = __import__("json").loads((tmp_path / "runs" / "tracked" / "metrics.json").read_text())["summary"]
    bh = next(s for s in summary if s["portfolio"] == "buy_and_hold")
    assert row["metrics.portfolio/buy_and_hold/sharpe"] == pytest.approx(bh["sharpe"])
    assert "metrics.model/linear/seed_0/mse_ratio" in runs.columns
    client = mlflow.tracking.MlflowClient(server)
    names = {a.path for a in client.list_artifacts(rid)}
    assert {"report.html", "metrics.json", "predictions.csv"} <= names

    # compare accepts the MLflow run id as a run directory
    assert main(["compare", rid, str(tmp_path / "runs" / "tracked"), "--out", str(tmp_path / "cmp"),
                 "--mlflow", server]) == 0
    assert (tmp_path / "cmp" / "compare.html").is_file()

    # a 2x2 sweep: 2 grid points x 2 seeds -> one parent, four children
    conf.write_text(TOML.format(name="sw"))
    assert main(["sweep", str(conf), "--grid", "models.linear.alpha=0.5,2.0", "--seeds", "2", "--out",
                 str(tmp_path / "sweep"), "--mlflow", server, "--no-progress"]) == 0
    allr = mlflow.search_runs(experiment_names=["walkforward"])
    parent = allr[allr["tags.mlflow.runName"] == "sw"]
    assert len(parent) == 1
    kids = allr[allr["tags.mlflow.parentRunId"] == parent.iloc[0]["run_id"]]
    assert len(kids) == 4
    assert sorted(zip(kids["params.models.linear.alpha"], kids["params.run.seed"])) == [
        ("0.5", "0"), ("0.5", "1"), ("2.0", "0"), ("2.0", "1")]
    assert kids["metrics.portfolio/buy_and_hold/sharpe"].notna().all()


def test_server_down_keeps_the_run_and_warns_once(tmp_path: Path, capsys) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # a tracking server that is down (nothing listens on the port)
    conf = tmp_path / "c.toml"
    conf.write_text(TOML.format(name="offline"))
    assert main(["run", str(conf), "--out", str(tmp_path / "runs"), "--mlflow", uri, "--no-progress"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("walkforward:")]
    assert len(err) == 1 and "warning: tracking failed" in err[0] and "walkforward track" in err[0]
    d = tmp_path / "runs" / "offline"
    assert all((d / f).is_file() for f in ("report.html", "metrics.json", "predictions.csv", "meta.json"))
    # later upload; a still-unreachable server is one line, exit 2
    assert main(["track", str(d), "--mlflow", uri]) == 2
    assert "unreachable" in capsys.readouterr().err
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store (MLflow 3 keeps file: stores read-only)
    assert main(["track", str(d), "--mlflow", store]) == 0
    client = mlflow.tracking.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("walkforward").experiment_id])
    assert run.data.tags["walkforward.run_dir"] == str(d.resolve()) and "portfolio/buy_and_hold/sharpe" in run.data.metrics


def test_track_and_compare_refuse_bad_input_in_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["track", str(tmp_path / "nope"), "--mlflow", f"sqlite:///{tmp_path / 'db'}"]) == 2
    assert main(["track", str(tmp_path)]) == 2
    assert main(["compare", "0123456789abcdef0123456789abcdef", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "nope: not a finished run (config.toml missing)" in err[0]
    assert "give the tracking URI with --mlflow" in err[1] and "looks like an MLflow run id" in err[2]
    assert not (tmp_path / "c").exists()
