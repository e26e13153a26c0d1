"""``walkforward sweep``: run a grid of configs (and seeds), then the comparison report."""
from __future__ import annotations

import itertools
from pathlib import Path

from backtest.config import apply_overrides, parse_config, read_toml
from backtest.errors import ConfigError


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["models.lstm.dropout=0.0,0.2"]`` -> ``[("models.lstm.dropout", ["0.0", "0.2"])]``."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected section.key=V1,V2")
        key, values = item.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"--grid {item!r}: no values")
        out.append((key.strip(), vals))
    return out


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
    for point in points:
        sets = [f"{k}={v}" for k, v in point]
        if seeds is not None:
            if seeds < 1:
                raise ConfigError("--seeds must be >= 1")
            sets.append(f"run.seeds=[{', '.join(str(s) for s in range(seeds))}]")
        label = "__".join(f"{k.split('.')[-2] if k.count('.') >= 2 else k.split('.')[0]}.{k.split('.')[-1]}={v}"
                          for k, v in point) or "base"
        sets.append(f'run.name="{name}__{label}"'.replace("/", "-"))
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
