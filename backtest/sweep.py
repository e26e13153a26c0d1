"""``walkforward sweep``: run a grid of configs (and seeds), then the comparison report."""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from backtest.config import apply_overrides, parse_config, read_toml, split_assignment
from backtest.errors import ConfigError


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["models.lstm.dropout=0.0,0.2"]`` -> ``[("models.lstm.dropout", ["0.0", "0.2"])]``.

    The key is a TOML dotted key (quoted parts allowed: ``data.paths."ETH/USDT"=a.csv,b.csv``), read as
    ``--set`` reads it (:func:`~backtest.config.split_assignment`)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected section.key=V1,V2")
        key, _, values = split_assignment(item, "--grid")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"--grid {item!r}: no values")
        out.append((key, vals))
    return out


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


def run_sweep(config: str | Path, grid: list[str], *, seeds: int | None, out: Path, overrides: list[str],
              progress: bool = False) -> Path:
    """Run every grid point (each its own run directory under ``out``), then ``compare`` them into ``out/compare``.

    Every grid point's config is validated before the first run starts.
    """
    base = apply_overrides(read_toml(config), overrides)
    axes = parse_grid(grid)
    points = list(itertools.product(*[[(k, v) for v in vals] for k, vals in axes])) or [()]
    name = base.get("run", {}).get("name", "sweep")
    cfgs = []
    names: dict[str, dict[str, str]] = {}
    for point in points:
        sets = [f"{k}={v}" for k, v in point]
        if seeds is not None:
            if seeds < 1:
                raise ConfigError("--seeds must be >= 1")
            sets.append(f"run.seeds=[{', '.join(str(s) for s in range(seeds))}]")
        label = point_label(point)
        run_name = f"{str(name).replace('/', '-')}__{label}"
        if run_name in names:
            raise ConfigError(f"--grid: grid points {names[run_name]} and {dict(point)} get the same run name "
                              f"{run_name!r}; give values that differ in letters or digits")
        names[run_name] = dict(point)
        sets.append(f"run.name={json.dumps(run_name, ensure_ascii=False)}")  # a JSON string is a TOML basic string
        cfgs.append(parse_config(apply_overrides(base, sets), f"{config} [{label}]"))
    from backtest.pipeline import run_all
    from reports.compare import compare_runs

    if cfgs[0].walkforward.executor == "ray":
        _forecast_on_ray(cfgs, out)
    run_dirs = [run_all(c, out, progress=progress).run_dir for c in cfgs]
    path = compare_runs(run_dirs, out / "compare")
    tr = cfgs[0].tracking
    if tr.mlflow_uri:
        from backtest.tracking import TrackingError, log_sweep, warn

        try:
            log_sweep(run_dirs, [c.run.seeds for c in cfgs], tr.mlflow_uri, tr.experiment, name=str(name),
                      timeout_s=tr.timeout_s)
        except TrackingError as err:
            warn(err)
    return path


def _forecast_on_ray(cfgs: list, out: Path) -> None:  # type: ignore[type-arg]
    """Every grid point's folds (grid points x seeds x folds) on one Ray connection at once.

    One driver thread per grid point submits its tasks; the driver writes every fold. The evaluation that
    follows (:func:`run_all`) then finds all folds complete and only reads them back.
    """
    from concurrent.futures import ThreadPoolExecutor

    from backtest.folds.ray import connect
    from backtest.run import run_forecasts

    started = connect(cfgs[0].ray)
    try:
        with ThreadPoolExecutor(max_workers=len(cfgs)) as pool:
            for f in [pool.submit(run_forecasts, c, out) for c in cfgs]:
                f.result()
    finally:
        if started:
            import ray

            ray.shutdown()
