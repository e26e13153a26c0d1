"""``walkforward sweep``: a grid of configs x seeds as one computation, then the comparison and the sweep report.

Every grid point's config is validated and its fold plan made (:func:`backtest.folds.plan.plan_run`) before
anything is written. Then every training of the sweep -- grid points x seeds x folds -- is handed to the one
executor path (:func:`backtest.folds.execute.execute`) in **one call** per distinct data set (one, unless
the grid sets ``data.*`` keys): one fold store under ``out``, each task's folder under its grid point's run
directory (``out/<name>__<key=value...>/folds/...``), so cold-start trainings of one architecture from any
grid point and seed are bundled into the same grouped units wherever their architecture key agrees, on every
executor. Each grid point's run directory is then finished by the normal pipeline (it finds every fold in the
store: ``predictions.csv``, ``metrics.json``, report), so it stays a normal run directory the other tools
read. Last, ``out/compare`` (the ranked comparison) and ``out/sweep`` (the selection, the overfitting
diagnostics and the verdict: :mod:`backtest.sweep_analysis`, :mod:`reports.sweep`).
"""
from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from backtest.config import Config, apply_overrides, parse_config, read_toml, split_assignment
from backtest.errors import ConfigError
from backtest.selection import Criterion, parse_criterion

#: Where the sweep report, its metrics.json and the selection's record go, under the sweep's ``out``.
SWEEP_FOLDER = "sweep"


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["models.lstm.dropout=0.0,0.2"]`` -> ``[("models.lstm.dropout", ["0.0", "0.2"])]``.

    The key is a TOML dotted key (quoted parts allowed: ``data.paths."ETH/USDT"=a.csv,b.csv``), read as
    ``--set`` reads it (:func:`~backtest.config.split_assignment`). Keys that vary together:
    ``"models.lstm.bias_l1,models.lstm.bias_l2=0:0,0.001:0,0:0.01"`` (bare keys joined by commas, each value a
    colon-joined tuple) is one axis of three points, not a product."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected section.key=V1,V2 or key1,key2=A1:B1,A2:B2")
        keys, values = _grid_keys(item)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"--grid {item!r}: no values")
        n = len(keys)
        if n > 1 and any(len(v.split(":")) != n for v in vals):
            raise ConfigError(f"--grid {item!r}: {n} keys vary together, so each value needs {n} parts joined by ':'")
        out.append((",".join(keys), vals))
    return out


def _grid_keys(item: str) -> tuple[list[str], str]:
    """The key(s) and the values text of one ``--grid`` item (one TOML key, or bare keys joined by commas)."""
    try:
        key, _, values = split_assignment(item, "--grid")
        return [key], values
    except ConfigError:
        head, _, values = item.partition("=")
        keys = [k.strip() for k in head.split(",")]
        if len(keys) < 2:
            raise
        for k in keys:  # each must be a TOML key on its own
            split_assignment(f"{k}=0", "--grid")
        return keys, values


def _sets(key: str, value: str) -> list[tuple[str, str]]:
    """One axis value as (key, value) pairs (several for keys that vary together)."""
    keys = key.split(",")
    return list(zip(keys, value.split(":") if len(keys) > 1 else [value], strict=True))


def _safe(text: str) -> str:
    """``text`` for a folder name: surrounding quotes dropped, characters other than letters, digits and
    ``_ . = + -`` replaced by ``-`` (``"ETH/USDT"`` -> ``ETH-USDT``)."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", text.strip().strip("\"'"))


def point_label(point: tuple[tuple[str, str], ...]) -> str:
    """A grid point's part of its run name: ``KEY=VALUE`` per axis joined by ``__``, where KEY is the last two
    parts of the TOML key as TOML reads them (``models.linear.alpha`` -> ``linear.alpha``;
    ``data.paths."ETH/USDT"`` -> ``paths.ETH-USDT``), everything folder-safe (:func:`_safe`); ``base`` for none."""
    parts = []
    for key, value in point:
        path = split_assignment(f"{key}=0", "--grid")[1]
        parts.append(f"{'.'.join(_safe(p) for p in path[-2:])}={_safe(value)}")
    return "__".join(parts) or "base"


def grid_configs(config: str | Path, grid: list[str], seeds: int | None,
                 overrides: list[str]) -> tuple[list[Config], list[str], list[dict[str, str]], dict[str, list[str]]]:
    """Every grid point's validated config (``run.name = <name>__<label>``, seeds ``0..N-1`` when ``seeds``),
    its label and key values, and the grid; a bad key or value is one ConfigError line naming the point."""
    if seeds is not None and seeds < 1:
        raise ConfigError("--seeds must be >= 1")
    base = apply_overrides(read_toml(config), overrides)
    axes = parse_grid(grid)
    points = [tuple(kv for pair in combo for kv in pair)
              for combo in itertools.product(*[[_sets(k, v) for v in vals] for k, vals in axes])] or [()]
    name = base.get("run", {}).get("name", "sweep")
    cfgs, labels, values = [], [], []
    names: dict[str, dict[str, str]] = {}
    for point in points:
        sets = [f"{k}={v}" for k, v in point]
        if seeds is not None:
            sets.append(f"run.seeds=[{', '.join(str(s) for s in range(seeds))}]")
        label = point_label(point)
        run_name = f"{str(name).replace('/', '-')}__{label}"
        if run_name in names:
            raise ConfigError(f"--grid: grid points {names[run_name]} and {dict(point)} get the same run name "
                              f"{run_name!r}; give values that differ in letters or digits")
        names[run_name] = dict(point)
        sets.append(f"run.name={json.dumps(run_name, ensure_ascii=False)}")  # a JSON string is a TOML basic string
        cfgs.append(parse_config(apply_overrides(base, sets), f"{config} [{label}]"))
        labels.append(label)
        values.append({k: v for k, v in point})
    return cfgs, labels, values, {k: v for k, v in axes}


def _data_key(cfg: Config) -> str:
    return cfg.data.model_dump_json()


def sweep_tasks(cfgs: list[Config], plans: dict[str, Any]) -> dict[str, list[Any]]:
    """Every fold task of the sweep, by data set: each grid point's plan with its folders (and warm-start
    sources) moved under its run directory ``<run.name>/``, relative to the sweep's ``out``."""
    by_data: dict[str, list[Any]] = {}
    for c in cfgs:
        for t in plans[c.run.name].tasks:
            by_data.setdefault(_data_key(c), []).append(replace(
                t, folder=f"{c.run.name}/{t.folder}",
                warm_from=None if t.warm_from is None else f"{c.run.name}/{t.warm_from}"))
    return by_data


def forecast_grid(cfgs: list[Config], out: Path, data: dict[str, Any], plans: dict[str, Any], *,
                  progress: bool = False) -> tuple[int, dict[str, Any]]:
    """Train every fold of every grid point: one :func:`execute` call per distinct data set, into one fold store
    under ``out`` (task folders prefixed with the grid point's run name). Returns the trainings planned and,
    per run name, what this call did to its directory (:class:`~backtest.run.Trained`: whether it was resumed,
    its folds' results), for its ``meta.json``.

    ``data``: data key -> :class:`~backtest.data.universe.UniverseData`; ``plans``: run name -> its RunPlan."""
    from backtest.atomic import write_text
    from backtest.folds.execute import execute, session
    from backtest.folds.store import FoldStore
    from backtest.rundir import check_or_claim, forecast_fingerprint

    from backtest.run import Trained

    wf, first = cfgs[0].walkforward, cfgs[0]
    done: dict[str, Trained] = {}
    for c in cfgs:
        run_dir = out / c.run.name
        done[c.run.name] = Trained(check_or_claim(run_dir, forecast_fingerprint(c, data[_data_key(c)].sha256)), [])
        write_text(run_dir / "config.toml", c.to_toml())
    by_data = sweep_tasks(cfgs, plans)
    total = sum(len(v) for v in by_data.values())
    bar = _bar(total, progress)
    store = FoldStore(out)
    try:
        for key, tasks in by_data.items():
            results = execute(tasks, data[key].bars, store, wf.executor, wf.workers, first.ray, on_result=bar)
            for t, r in zip(tasks, results, strict=True):
                done[t.folder.split("/", 1)[0]].results.append(r)
    finally:
        if hasattr(bar, "close"):
            bar.close()
    from models import BASELINE_TYPES

    return sum(t.model_cfg.type not in BASELINE_TYPES for v in by_data.values() for t in v), done


def _bar(total: int, enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return lambda r: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="fold", file=sys.stderr, dynamic_ncols=True, desc="sweep")

    def update(r: Any) -> None:
        bar.set_postfix_str(f"{r.task_key[0]} seed {r.task_key[1]} fold {r.task_key[2]}")
        bar.update(1)

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def evaluate_point(cfg: Config, out: Path, data: Any, trained: Any = None) -> Path:
    """Finish one grid point's run directory with the normal pipeline (its folds are in the store, so
    :func:`backtest.pipeline.run_all` reads them back: ``predictions.csv``, ``metrics.json``, report);
    ``trained``: what :func:`forecast_grid` did to it (its ``meta.json`` says so, not "resumed")."""
    from backtest.pipeline import run_all

    return run_all(cfg, out, data=data, trained=trained).run_dir


def run_sweep(config: str | Path, grid: list[str], *, seeds: int | None, out: Path, overrides: list[str],
              progress: bool = False, select: str = "mse", pbo_blocks: int = 16, reps: int = 1000) -> Path:
    """Run the sweep (see the module docstring); return the sweep report's path (``out/sweep/report.html``;
    a universe sweep: the comparison's, ``out/compare/compare.html``).

    ``select``: the walk-forward selection's criterion (:func:`backtest.selection.parse_criterion`);
    ``pbo_blocks``: S of the CSCV; ``reps``: bootstrap replications of SPA, RC and the MCS."""
    from backtest.data.universe import load_universe
    from backtest.folds.execute import session
    from backtest.folds.plan import plan_run

    criterion = parse_criterion(select)
    if pbo_blocks < 2 or pbo_blocks % 2:
        raise ConfigError(f"--pbo-blocks {pbo_blocks}: needs an even number >= 2")
    if reps < 10:
        raise ConfigError(f"--reps {reps}: needs at least 10 bootstrap replications")
    cfgs, labels, values, axes = grid_configs(config, grid, seeds, overrides)
    out = Path(out)
    data: dict[str, Any] = {}
    for c in cfgs:
        if _data_key(c) not in data:
            data[_data_key(c)] = load_universe(c.data, progress=progress)
    plans = {c.run.name: plan_run(c, data[_data_key(c)].bars) for c in cfgs}  # every point checked first
    first = cfgs[0]
    with session(first.walkforward.executor, first.ray):
        trainings, done = forecast_grid(cfgs, out, data, plans, progress=progress)
        run_dirs = [evaluate_point(c, out, data[_data_key(c)], done[c.run.name]) for c in cfgs]
    from reports.compare import compare_runs

    path = compare_runs(run_dirs, out / "compare")
    tr = first.tracking
    if tr.mlflow_uri:
        from backtest.tracking import TrackingError, log_sweep, warn

        try:
            log_sweep(run_dirs, [c.run.seeds for c in cfgs], tr.mlflow_uri, tr.experiment,
                      name=str(first.run.name).split("__")[0], timeout_s=tr.timeout_s)
        except TrackingError as err:
            warn(err)
    if first.data.universe() is not None:
        print("walkforward: note: the sweep report (selection, PBO, SPA) covers single-symbol sweeps; "
              "this universe sweep has its comparison report", file=sys.stderr)
        return path
    return write_sweep(run_dirs, labels, values, axes, data[_data_key(first)], criterion, out, trainings=trainings,
                       pbo_blocks=pbo_blocks, reps=reps)


def write_sweep(run_dirs: list[Path], labels: list[str], values: list[dict[str, str]], axes: dict[str, list[str]],
                data: Any, criterion: Criterion, out: Path, *, trainings: int, pbo_blocks: int = 16,
                reps: int = 1000) -> Path:
    """Analyse the finished grid points and write ``out/sweep``: ``metrics.json``, ``report.html``, ``figures/``
    and the selection's record ``selected/`` (predictions with the candidate each row came from, equity,
    trades, its run metrics). Returns the report's path."""
    from backtest.atomic import write_text
    from backtest.sweep_analysis import analyse, load_point
    from reports.sweep import write_sweep_report

    points = [load_point(d, lab, v) for d, lab, v in zip(run_dirs, labels, values, strict=True)]
    sym = data.symbols[0]
    res = analyse(points, data.bars[sym], data.timeframe, criterion, grid=axes, trainings=trainings,
                  pbo_blocks=pbo_blocks, reps=reps, synthetic=data.synthetic[sym], out_dir=out)
    folder = out / SWEEP_FOLDER
    if res.selection_eval is not None:
        sel = folder / "selected"
        write_text(sel / "predictions.csv", res.selection_predictions.to_csv(index=False, float_format="%.10g"))
        write_text(sel / "equity.csv", res.selection_eval.equity.to_csv(float_format="%.6f"))
        write_text(sel / "trades.csv", res.selection_eval.trades.to_csv(index=False))
        res.selection_eval.metrics.write(sel / "metrics.json")
    res.metrics.write(folder / "metrics.json")
    return write_sweep_report(folder, res)


__all__ = ["SWEEP_FOLDER", "evaluate_point", "forecast_grid", "grid_configs", "parse_grid", "point_label",
           "run_sweep", "sweep_tasks", "write_sweep"]
