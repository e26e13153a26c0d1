"""The run directory contract (docs/design.md, "Run directory"): paths, the config fingerprint, and reading runs back.

``runs/<name>/`` holds ``config.toml``, ``meta.json``, ``predictions.csv``,
``metrics.json``, ``trades.csv``, ``equity.csv``, ``folds/``, ``figures/`` and
``report.html``. A run directory is tied to the *forecasting* part of its
config (data, features, walk-forward plan, models, seeds) and to the data's
sha256: re-running with the same ones resumes; anything else is refused.
Strategy and backtest sections may change: the forecasts are reused and only
the simulation is redone.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import Config, identity_section, parse_config
from backtest.errors import RunDirError

PREDICTION_COLUMNS = ["timestamp", "model", "seed", "fold", "y_true", "y_pred", "close", "pred_close"]
_EXECUTION_ONLY = {"executor", "workers"}  # walkforward keys; the [ray] and [tracking] sections are never hashed


def forecast_fingerprint(cfg: Config, data_sha256: str) -> str:
    """sha256 of everything that changes a forecast: data, features, fold plan, models, seeds."""
    d = cfg.model_dump(mode="json")
    wf = {k: v for k, v in d["walkforward"].items() if k not in _EXECUTION_ONLY}
    data = {k: v for k, v in identity_section("data", d["data"]).items()
            if k not in ("cache_dir", "base_url", "timeout_ms", "max_retries")}
    payload = {"data": data, "data_sha256": data_sha256, "features": identity_section("features", d["features"]), "walkforward": wf,
               "models": d["models"], "seeds": d["run"]["seeds"], "deterministic": d["run"]["deterministic"]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def check_or_claim(run_dir: Path, fingerprint: str) -> bool:
    """Refuse ``run_dir`` if it was made by a different forecasting config; return True when resuming."""
    fp_file = run_dir / "fingerprint.txt"
    if fp_file.exists():
        if fp_file.read_text().strip() != fingerprint:
            raise RunDirError(
                f"{run_dir}: made by a different config or data (data, features, walkforward, models or seeds differ); "
                f"use another --out or run.name"
            )
        return True
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir}: exists and is not a walkforward run directory; use another --out or run.name")
    from backtest.atomic import write_text

    write_text(fp_file, fingerprint + "\n")
    return False


def read_run(run_dir: str | Path) -> tuple[Config, dict[str, Any], pd.DataFrame]:
    """Read a finished run's config, meta and predictions, or raise one-line RunDirError."""
    d = Path(run_dir)
    if not d.is_dir():
        raise RunDirError(f"{d}: run directory not found")
    for name in ("config.toml", "meta.json", "predictions.csv"):
        if not (d / name).is_file():
            raise RunDirError(f"{d}: not a finished run ({name} missing)")
    import tomllib

    try:
        cfg = parse_config(tomllib.loads((d / "config.toml").read_text()), str(d / "config.toml"))
        meta = json.loads((d / "meta.json").read_text())
        preds = pd.read_csv(d / "predictions.csv")
        missing = [c for c in PREDICTION_COLUMNS if c not in preds.columns]
        if missing:
            raise ValueError(f"predictions.csv lacks {', '.join(missing)}")
        preds["timestamp"] = pd.to_datetime(preds["timestamp"], utc=True)
    except RunDirError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of a run dir is the same user error
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{d}: corrupt run directory ({msg})") from None
    return cfg, meta, preds
