"""The one definition of a sweep's ``metrics.json`` (``<out>/sweep/metrics.json``): typed blocks, written and
read only through :class:`SweepMetrics`.

Conventions are the runs' (:mod:`backtest.schema`): fractions, not percentages; every number out of sample
(walk-forward test bars only); ``None`` = undefined; a p-value says its test in its name. Sharpe ratios
named ``sharpe`` are annualised with ``SweepInfo.periods_per_year``; the per-bar ones inside the PBO block
(``is_perf``, ``oos_perf``) are not. A *candidate* is one model of one grid point (``"<grid point>/<model>"``);
its seeds are repeats of it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backtest.overfitting import MCSResult, PBOResult, SPAResult
from backtest.schema import DeflatedSharpe, SchemaError, Verdict, build

#: Version of the sweep metrics.json layout written by this code.
SWEEP_SCHEMA_VERSION = 1


@dataclass
class SweepInfo:
    """What was swept: the base config's name, symbol and timeframe, the grid (key -> values tried), the seeds,
    the test span (decision bars, UTC ISO), trainings planned (grid points x seeds x folds x networks)."""

    name: str
    symbol: str
    timeframe: str
    periods_per_year: float
    grid: dict[str, list[str]]
    seeds: list[int]
    first_test_bar: str
    last_test_bar: str
    test_bars: int
    blocks: int
    trainings: int
    significance_level: float
    strategy: str | None = None  # the long/flat strategy whose portfolios the selection, PBO and SPA use


@dataclass
class GridPoint:
    """One grid point: its label, the key values it sets, and its run directory (relative to the sweep's out)."""

    label: str
    values: dict[str, str]
    run_dir: str


@dataclass
class CandidateSeeds:
    """One candidate's out-of-sample numbers per seed (lists in ``seeds`` order): MSE of r̂[t+1] (log-return
    units squared), MSE / persistence's MSE (below 1 beats "no change"), direction accuracy (fraction), and
    each long/flat strategy's annualised Sharpe ratio (strategy -> per seed)."""

    candidate: str
    grid_point: str
    model: str
    seeds: list[int]
    mse: list[float | None] = field(default_factory=list)
    mse_ratio: list[float | None] = field(default_factory=list)
    accuracy: list[float | None] = field(default_factory=list)
    sharpe: dict[str, list[float | None]] = field(default_factory=dict)


@dataclass
class Baselines:
    """The baselines beside the grid: each baseline strategy's annualised Sharpe (buy & hold, always flat,
    SMA cross, ...), the share of up bars (the accuracy of always "up"), and persistence's MSE ratio (1)."""

    sharpe: dict[str, float | None] = field(default_factory=dict)
    buy_and_hold: str | None = None
    up_share: float | None = None
    persistence_mse: float | None = None


@dataclass
class SelectionBlock:
    """One test block of the walk-forward selection: its first and last decision bar and the candidate chosen
    before it (from earlier blocks only), with that candidate's score then (None: no history yet)."""

    block: int
    first_bar: str
    last_bar: str
    chosen: str
    score: float | None = None


@dataclass
class SelectionRecord:
    """The procedure "tune, then trade", out of sample: ``rule`` in words, each block's choice, and the traded
    selection's numbers (mean and std over seeds; its full run metrics in ``metrics_path``, relative to the
    sweep folder). ``hindsight_best``: the candidate best over the whole span by the same criterion -- known
    only afterwards, **not tradeable** -- with its numbers for comparison."""

    criterion: str
    lookback: int
    min_history: int
    rule: str
    blocks: list[SelectionBlock]
    switches: int
    sharpe_mean: float | None = None
    sharpe_std: float | None = None
    total_return_mean: float | None = None
    max_drawdown_mean: float | None = None
    mse_ratio_mean: float | None = None
    accuracy_mean: float | None = None
    verdict: Verdict | None = None  # the first seed's selection portfolio against buy & hold (bootstrap)
    metrics_path: str = "selected/metrics.json"
    hindsight_best: str | None = None
    hindsight_sharpe_mean: float | None = None
    hindsight_mse_ratio_mean: float | None = None
    hindsight_tradeable: bool = False


@dataclass
class SweepVerdict:
    """Whether a tuned model beats its benchmark, decided by the multiple-testing tests only: ``portfolio``
    (SPA against buy & hold on returns) and ``forecast`` (SPA against persistence on squared error) are
    ``beats`` when SPA's consistent p-value < the level, else ``not_shown``; ``text``: the sentence."""

    portfolio: str
    forecast: str
    text: str


@dataclass
class SweepMetrics:
    """Everything in a sweep's ``metrics.json``. Write with :meth:`write`, read with :meth:`read`."""

    sweep: SweepInfo
    grid: list[GridPoint]
    candidates: list[CandidateSeeds]
    baselines: Baselines
    selection: SelectionRecord | None
    pbo: PBOResult | None
    spa_portfolio: SPAResult | None
    spa_forecast: SPAResult | None
    mcs: MCSResult | None
    deflated_sharpe: DeflatedSharpe
    verdict: SweepVerdict
    notes: list[str] = field(default_factory=list)
    kind: str = "sweep"
    schema_version: int = SWEEP_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> SweepMetrics:
        if not isinstance(data, dict):
            raise SchemaError("metrics.json: not a JSON object")
        if data.get("kind") != "sweep":
            raise SchemaError(f"metrics.json: kind {data.get('kind')!r}, not a sweep's ('sweep')")
        if data.get("schema_version") != SWEEP_SCHEMA_VERSION:
            raise SchemaError(f"metrics.json: sweep schema_version {data.get('schema_version')!r}, this version "
                              f"reads {SWEEP_SCHEMA_VERSION} (re-run the sweep to rewrite it)")
        return build(cls, data, "sweep")

    @classmethod
    def read(cls, path: str | Path) -> SweepMetrics:
        """Read a sweep's metrics.json; :class:`SchemaError` (one line) when it does not match."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError(f"metrics.json: not JSON ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data)

    def write(self, path: str | Path) -> Path:
        """Write atomically (:mod:`backtest.atomic`)."""
        from backtest.atomic import write_text

        return write_text(Path(path), self.to_json() + "\n")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return x


__all__ = ["Baselines", "CandidateSeeds", "GridPoint", "SWEEP_SCHEMA_VERSION", "SelectionBlock", "SelectionRecord",
           "SweepInfo", "SweepMetrics", "SweepVerdict"]
