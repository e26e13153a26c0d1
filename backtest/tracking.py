"""Experiment tracking in MLflow (section ``[tracking]``, ``--mlflow URI``, ``walkforward track RUN_DIR``).

A finished run directory is the source of truth; tracking only *copies* it to MLflow after the run:

* **params**: the resolved ``config.toml`` flattened to ``section.key`` (``models.lstm.units``); lists as text;
  ``data.timeframe`` is the bar length the run used (from ``meta.json``), also when the config left it unset;
* **tags**: ``walkforward.data_sha256``, ``walkforward.symbol`` (a universe's symbols, comma-separated),
  ``walkforward.timeframe``, ``walkforward.run_dir``, ``walkforward.run_identity`` (:func:`run_identity`, stand-alone
  runs), ``walkforward.seed`` (sweep children) and ``version.<package>`` for each package version recorded in
  ``meta.json``;
* **metrics** (all out of sample, from ``metrics.json``; names use ``/`` and ``=`` becomes ``_``):
  ``portfolio/<label>/<name>`` for each summary row, e.g. ``portfolio/lstm/lf/seed_0/sharpe``, with
  ``<name>`` in :data:`PORTFOLIO_METRICS` (fractions, e.g. total_return 0.12 = +12 %; sharpe annualised;
  trades a count), and ``model/<model>/seed_<s>/<name>`` for each model and seed with ``<name>`` one of
  :data:`MODEL_METRICS` (direction accuracy of r̂[t+1] > 0 and errors of the predicted log return);
* **artifacts**: ``report.html``, ``metrics.json``, ``predictions.csv``, ``equity.csv``, ``config.toml``,
  ``meta.json`` (the last three let ``compare`` rebuild a run directory from an MLflow run id).

Tracking a run directory again updates its MLflow run (found by ``walkforward.run_identity``) rather than adding
one. A new experiment in a SQLite store keeps its artifacts beside the store (:func:`artifact_location`).
A ``sweep`` is one parent run with one child run per grid point x seed. A tracking failure never fails the
backtest: it is one warning line on stderr, and ``walkforward track RUN_DIR`` uploads the run later.
Summary metrics are read through :func:`summary_rows` and :func:`model_seed_metrics` only, so a change of
the ``metrics.json`` schema is adapted in one place.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backtest.errors import RunDirError

ARTIFACTS = ("report.html", "metrics.json", "predictions.csv", "equity.csv", "config.toml", "meta.json")
PORTFOLIO_METRICS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "trades", "exposure",
                     "precision", "recall", "f1", "sharpe_diff_p_value")
MODEL_METRICS = {"classification": ("accuracy", "precision", "recall", "f1", "balanced_accuracy"),
                 "regression": ("mse", "mae", "rmse", "mse_ratio", "price_mae", "price_rmse")}
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class TrackingError(Exception):
    """MLflow could not be reached or refused a request (turned into one warning, never an exit status)."""


# --- reading a run directory (the only place that knows metrics.json's shape) -------------
def summary_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-portfolio summary rows of ``metrics.json`` (portfolio label, seed, numbers)."""
    return [r for r in metrics.get("summary") or [] if isinstance(r, dict)]


def model_seed_metrics(metrics: dict[str, Any]) -> Iterator[tuple[str, str, str, str, Any]]:
    """``(model, seed, group, name, value)`` for each model's per-seed classification/regression number."""
    for model, block in (metrics.get("models") or {}).items():
        for seed, m in (block.get("per_seed") or {}).items():
            for group, names in MODEL_METRICS.items():
                for name in names:
                    yield model, str(seed), group, name, (m.get(group) or {}).get(name)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def metric_name(*parts: str) -> str:
    """An MLflow-safe metric name: ``/``-joined parts, characters MLflow refuses replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", "/".join(parts))


def run_metrics(metrics: dict[str, Any], seed: int | None = None) -> dict[str, float]:
    """The metrics logged for a run; with ``seed``, only that seed's rows (and the seed-free baselines)."""
    out: dict[str, float] = {}
    for row in summary_rows(metrics):
        if seed is not None and row.get("seed") not in (None, seed):
            continue
        for name in PORTFOLIO_METRICS:
            v = _number(row.get(name))
            if v is not None:
                out[metric_name("portfolio", str(row["portfolio"]), name)] = v
    for model, s, group, name, value in model_seed_metrics(metrics):
        if seed is not None and s != str(seed):
            continue
        v = _number(value)
        if v is not None:
            out[metric_name("model", model, f"seed_{s}", name)] = v
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists as their JSON text (MLflow params are strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else str(v)
    return out


def _read_run_dir(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    for name in ("config.toml", "meta.json", "metrics.json"):
        if not (run_dir / name).is_file():
            raise RunDirError(f"{run_dir}: not a finished run ({name} missing)")
    try:
        cfg = tomllib.loads((run_dir / "config.toml").read_text())
        meta = json.loads((run_dir / "meta.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{run_dir}: corrupt run directory ({exc})") from None
    return cfg, meta, metrics


def data_facts(cfg: dict[str, Any], meta: dict[str, Any]) -> tuple[str, list[str], str]:
    """``(data sha256, symbols, timeframe)`` the run used, from ``meta.json`` (a universe run's ``universe`` block,
    else the single ``data`` block); the timeframe is the one the run used, also when the config left it unset
    and it was inferred from the data."""
    uni = meta.get("universe")
    if isinstance(uni, dict):
        return str(uni.get("sha256")), [str(s) for s in uni.get("symbols") or []], str(uni.get("timeframe"))
    data = meta.get("data") or {}
    symbol = str((cfg.get("data") or {}).get("symbol", "BTC/USDT"))
    return str(data.get("sha256")), [symbol], str(data.get("timeframe") or (cfg.get("data") or {}).get("timeframe"))


#: Config keys that say where and how a run was executed or tracked, not what it computed: left out of its identity.
_EXECUTION_ONLY = {"ray": None, "tracking": None, "walkforward": ("executor", "workers")}


def run_identity(cfg: dict[str, Any], meta: dict[str, Any]) -> str:
    """The identity of a run directory: sha256 of its resolved config (``config.toml``, without the execution-only
    keys: ``[ray]``, ``[tracking]``, ``walkforward.executor``/``workers``) and its data sha256 (``meta.json``).

    Tracked as the tag ``walkforward.run_identity``: tracking the same run directory again (``walkforward track``
    after ``run --mlflow``, or twice) finds and updates that MLflow run instead of creating another."""
    import hashlib

    kept: dict[str, Any] = {}
    for section, body in cfg.items():
        drop = _EXECUTION_ONLY.get(section, ())
        if drop is None:
            continue
        kept[section] = {k: v for k, v in body.items() if k not in drop} if isinstance(body, dict) else body
    payload = json.dumps({"config": kept, "data_sha256": data_facts(cfg, meta)[0]}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


# --- talking to MLflow ----------------------------------------------------------------
def _client(uri: str, timeout_s: float):  # type: ignore[no-untyped-def]
    """An MlflowClient for ``uri``; a server that does not answer ``/health`` in ``timeout_s`` is a TrackingError."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # read per request: fail fast, warn once
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(math.ceil(timeout_s))))
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                resp.read()
        except OSError as exc:
            raise TrackingError(f"MLflow server {uri} unreachable ({getattr(exc, 'reason', exc)})") from None
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store, ``sqlite:///x/mlflow.db`` ->
    ``x/mlartifacts`` (as a ``file:`` URI; a relative store path is relative to the working directory, as
    SQLAlchemy reads it); None (the store's own default) for servers and other stores. Without it MLflow puts
    a SQLite store's artifacts in ``./mlruns`` of whatever directory the command ran in."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return (Path(path).expanduser().resolve().parent / "mlartifacts").as_uri()


def _experiment_id(client: Any, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else client.create_experiment(name, artifact_location(uri))


def _find_run(client: Any, exp_id: str, identity: str) -> Any | None:
    """The active MLflow run of ``exp_id`` tagged with this run directory identity, or None."""
    found = client.search_runs([exp_id], filter_string=f"tags.`walkforward.run_identity` = '{identity}'", max_results=1)
    return found[0] if found else None


def _log_one(client: Any, exp_id: str, run_dir: Path, *, seed: int | None = None, parent: str | None = None,
             name: str | None = None) -> str:
    """Log one run directory (a sweep child with ``seed`` and ``parent``); returns the MLflow run id.

    A stand-alone run carries ``walkforward.run_identity`` (:func:`run_identity`); when a run with that tag
    exists it is updated (missing params, changed metrics, tags, artifacts replaced), not created again.
    """
    cfg, meta, metrics = _read_run_dir(run_dir)
    sha256, symbols, timeframe = data_facts(cfg, meta)
    tags = {"walkforward.data_sha256": sha256, "walkforward.symbol": ", ".join(symbols),
            "walkforward.timeframe": timeframe, "walkforward.run_dir": str(run_dir.resolve()),
            "mlflow.runName": name or run_dir.name}
    tags.update({f"version.{k}": str(v) for k, v in (meta.get("versions") or {}).items()})
    if seed is not None:
        tags["walkforward.seed"] = str(seed)
    if parent is not None:
        tags["mlflow.parentRunId"] = parent
    existing = None
    if seed is None and parent is None:
        tags["walkforward.run_identity"] = run_identity(cfg, meta)
        existing = _find_run(client, exp_id, tags["walkforward.run_identity"])
    from mlflow.entities import Metric, Param, RunTag

    if existing is None:
        rid = client.create_run(exp_id, tags=tags).info.run_id
        had_params: dict[str, str] = {}
        had_metrics: dict[str, float] = {}
    else:
        rid = existing.info.run_id
        client.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
        had_params, had_metrics = dict(existing.data.params), dict(existing.data.metrics)

    params = flatten(cfg)
    params["data.timeframe"] = timeframe  # the bar length used, also when the config left it to the data
    if seed is not None:
        params["run.seed"] = str(seed)
    items = [(k, v[:6000]) for k, v in params.items() if k not in had_params]  # MLflow params never change
    for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
        client.log_batch(rid, params=[Param(k, v) for k, v in items[i:i + 100]])
    ms = [Metric(k, v, 0, 0) for k, v in run_metrics(metrics, seed).items() if had_metrics.get(k) != v]
    for i in range(0, len(ms), 1000):
        client.log_batch(rid, metrics=ms[i:i + 1000])
    for art in ARTIFACTS:
        if (run_dir / art).is_file():
            client.log_artifact(rid, str(run_dir / art))
    client.set_terminated(rid, "FINISHED")
    return rid


def log_run(run_dir: str | Path, uri: str, experiment: str = "walkforward", timeout_s: float = 10.0) -> str:
    """Log one finished run directory as one MLflow run; returns its run id. Raises TrackingError or RunDirError.

    Idempotent: a run directory already tracked in ``experiment`` (same :func:`run_identity`) updates that
    MLflow run and returns its id."""
    d = Path(run_dir)
    _read_run_dir(d)  # a bad run directory is the user's error, not a tracking failure
    try:
        client = _client(uri, timeout_s)
        return _log_one(client, _experiment_id(client, experiment, uri), d)
    except (TrackingError, RunDirError):
        raise
    except Exception as exc:  # noqa: BLE001 - any MLflow/HTTP failure is one tracking failure
        raise TrackingError(f"MLflow {uri}: {_first_line(exc)}") from None


def log_sweep(run_dirs: list[Path], seeds: list[list[int]], uri: str, experiment: str = "walkforward",
              name: str = "sweep", timeout_s: float = 10.0) -> str:
    """One parent run (``name``) with a child run per grid point x seed; returns the parent's run id."""
    try:
        client = _client(uri, timeout_s)
        exp_id = _experiment_id(client, experiment, uri)
        parent = client.create_run(exp_id, tags={"mlflow.runName": name, "walkforward.sweep": "true"}).info.run_id
        client.log_param(parent, "sweep.grid_points", str(len(run_dirs)))
        for d, point_seeds in zip(run_dirs, seeds):
            for s in point_seeds:
                _log_one(client, exp_id, d, seed=s, parent=parent, name=f"{d.name}/seed={s}")
        client.set_terminated(parent, "FINISHED")
        return parent
    except (TrackingError, RunDirError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise TrackingError(f"MLflow {uri}: {_first_line(exc)}") from None


def warn(err: BaseException) -> None:
    """The one warning line of a tracking failure (the run directory is complete; ``walkforward track`` uploads it later)."""
    print(f"walkforward: warning: tracking failed, run directory kept; upload later with `walkforward track`: {err}",
          file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- compare: MLflow run ids as run directories ------------------------------------------
def is_run_id(text: str) -> bool:
    """An MLflow run id (32 hex characters) that is not also an existing path."""
    return bool(_RUN_ID.match(text)) and not Path(text).exists()


def run_source(ref: str) -> str:
    """What ``compare`` records as the source of ``ref``: ``runs:/<id>`` for an MLflow run id (its artifacts are
    downloaded to a temporary folder that is gone afterwards), else the run directory's path as given."""
    return f"runs:/{ref}" if is_run_id(ref) else ref


def resolve_run(ref: str, uri: str | None, into: Path) -> Path:
    """A run directory for ``ref``: the path itself, or an MLflow run's artifacts downloaded under ``into/<run name>``."""
    if not is_run_id(ref):
        return Path(ref)
    if not uri:
        raise RunDirError(f"{ref}: looks like an MLflow run id; give the tracking URI with --mlflow")
    try:
        client = _client(uri, 10.0)
        run = client.get_run(ref)
    except TrackingError as exc:
        raise RunDirError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001
        raise RunDirError(f"{ref}: MLflow run not found at {uri} ({_first_line(exc)})") from None
    label = re.sub(r"[^A-Za-z0-9_.=-]", "-", run.data.tags.get("mlflow.runName") or ref)
    target = Path(tempfile.mkdtemp(prefix="mlflow-", dir=into)) / label
    target.mkdir()
    for art in ("metrics.json", "equity.csv", "config.toml", "meta.json", "predictions.csv"):
        try:
            client.download_artifacts(ref, art, str(target))
        except Exception as exc:  # noqa: BLE001
            if art in ("metrics.json", "equity.csv", "config.toml"):
                raise RunDirError(f"{ref}: MLflow run lacks artifact {art} ({_first_line(exc)})") from None
    return target
