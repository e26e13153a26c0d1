"""``walkforward run``: forecasts, evaluation and report in one call (the Python API for notebooks too).

One path for one symbol or several: :func:`backtest.run.run_forecasts` -> :func:`backtest.evaluate.evaluate`
-> :func:`reports.html.write_report`. The orchestration that needs the reports lives here, above them:
``backtest.run`` (forecasts), ``backtest.evaluate`` (metrics) and ``backtest.schema`` import nothing
from ``reports``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import pandas as pd

from backtest.atomic import write_text
from backtest.config import Config
from backtest.evaluate import Evaluation, evaluate
from backtest.run import ForecastRun, run_forecasts


@dataclass
class RunResult:
    """A finished run: its folder, forecasts, evaluation and report path."""

    run_dir: Path
    forecasts: ForecastRun
    evaluation: Evaluation
    report_path: Path

    @property
    def predictions(self) -> pd.DataFrame:
        return self.forecasts.predictions


def write_evaluation(run_dir: Path, ev: Evaluation) -> None:
    """``metrics.json``, ``equity.csv`` (wide, quote currency at each bar's close) and ``trades.csv``."""
    ev.metrics.write(run_dir / "metrics.json")
    write_text(run_dir / "equity.csv", ev.equity.to_csv(float_format="%.6f"))
    write_text(run_dir / "trades.csv", ev.trades.to_csv(index=False))


def run_all(cfg: Config, out: str | Path = "runs", *, progress: bool = False, data: Any = None,
            trained: Any = None) -> RunResult:
    """Run or resume the forecasts, simulate every model x strategy, write metrics and the HTML report.

    ``data``: already loaded bars (:class:`backtest.data.universe.UniverseData`, e.g. a sweep's grid points
    share one load); ``None`` loads them from ``cfg.data``. ``trained``: see :func:`backtest.run.run_forecasts`."""
    from reports.html import write_report

    fr = run_forecasts(cfg, out, progress=progress, data=data, trained=trained)
    data = fr.data
    ev = evaluate(cfg, fr.predictions, data.bars, data.timeframe, synthetic=data.synthetic)
    write_evaluation(fr.run_dir, ev)
    report = write_report(fr.run_dir, ev.metrics, fr.predictions, fr.history, ev.equity)
    return RunResult(fr.run_dir, fr, ev, Path(report))
