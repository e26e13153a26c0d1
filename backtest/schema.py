"""The one definition of ``metrics.json``: typed blocks, written and read only through :class:`RunMetrics`.

Every consumer (the HTML report, figures, ``compare``, ``sweep``, ``paper
report``/``status``, users' notebooks) reads a run's metrics with
:meth:`RunMetrics.read` / :meth:`RunMetrics.from_json` and uses attributes, not
string keys, so a renamed field fails loudly instead of showing "n/a".

Conventions for every field below:

* fractions, not percentages: 0.05 = 5 % (returns, drawdowns, exposure, rates);
* Sharpe, Sortino, Calmar, CAGR and volatility are annualised with
  ``RunInfo.periods_per_year`` bars a year (365 for ``1d``, 8,760 for ``1h``);
* every number is out of sample: computed on walk-forward test bars only, with
  the decision made at the close of bar t executed at the open of bar t+1;
* ``None`` (JSON ``null``) = undefined (too few observations, a constant
  series, ...), never 0 in disguise;
* p-values say in their name which test and which side they are:
  ``p_value_two_sided``, ``p_value_one_sided_model_better``, ...

A run is a universe of one: a one-symbol run and a universe run write the same
:class:`RunMetrics`. Its top-level blocks describe *the run's* portfolios (the
symbol's own for one symbol, the equal-weight universe portfolios for several);
``universe`` (``null`` for one symbol) holds what only several symbols have:
each symbol's own metrics and the per-model counts of symbols beaten. Bump
:data:`SCHEMA_VERSION` when a field changes meaning.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

#: Version of the metrics.json layout written by this code.
SCHEMA_VERSION = 3


class SchemaError(ValueError):
    """metrics.json does not match this definition (a missing or mistyped field); one line."""


def finite(x: Any) -> float | None:
    """``x`` as a finite float, else None (None, NaN, inf, bools and non-numbers). The one number cleaner."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- forecast-level blocks


@dataclass
class ClassificationMetrics:
    """Direction metrics; positive = up (``r[t+1] > 0``), predicted up = the long signal or ``r̂[t+1] > 0``.

    ``precision``, ``recall``, ``f1``, ``accuracy``, ``balanced_accuracy`` are fractions
    (0..1), ``mcc`` in [-1, 1]; ``tp``/``fp``/``tn``/``fn``/``support`` are counts of
    forecasts (means over seeds in ``mean`` blocks); ``base_rate`` = share of up bars.
    """

    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    accuracy: float | None = None
    balanced_accuracy: float | None = None
    mcc: float | None = None
    tp: float | None = None
    fp: float | None = None
    tn: float | None = None
    fn: float | None = None
    support: float | None = None
    base_rate: float | None = None


@dataclass
class RegressionMetrics:
    """Errors of the log-return forecast r̂[t+1] (``mse``, ``rmse``, ``mae``: log-return units) and of the
    implied next close (``price_mae``, ``price_rmse``: quote currency).

    ``*_ratio`` = the error divided by the persistence forecast's (r̂ = 0, next close = close): below 1
    beats "no change" (Theil's U style); None for persistence itself or a zero benchmark error.
    """

    mse: float | None = None
    rmse: float | None = None
    mae: float | None = None
    price_mae: float | None = None
    price_rmse: float | None = None
    mse_ratio: float | None = None
    rmse_ratio: float | None = None
    mae_ratio: float | None = None
    price_mae_ratio: float | None = None
    price_rmse_ratio: float | None = None


@dataclass
class DieboldMariano:
    """Diebold-Mariano test (HLN-corrected, squared error) of the model against persistence.

    H0: equal expected squared error. ``mean_loss_diff`` = mean(e_model² − e_persistence²) (log-return
    units squared; negative = the model's error is lower). ``p_value_two_sided``: H1 unequal accuracy;
    ``p_value_one_sided_model_better``: H1 the model's loss is lower. ``n`` forecasts, horizon ``h`` bars.
    """

    statistic: float | None = None
    p_value_two_sided: float | None = None
    p_value_one_sided_model_better: float | None = None
    mean_loss_diff: float | None = None
    n: int | None = None
    h: int | None = None
    note: str | None = None


@dataclass
class PesaranTimmermann:
    """Pesaran-Timmermann test of directional skill. H0: predicted and realised directions independent.

    ``p_value_one_sided_skill``: H1 more right calls than chance (the test is one-sided by construction).
    ``hit_rate`` and ``expected_hit_rate`` (under H0) are fractions; ``n`` forecasts.
    """

    statistic: float | None = None
    p_value_one_sided_skill: float | None = None
    hit_rate: float | None = None
    expected_hit_rate: float | None = None
    n: int | None = None
    note: str | None = None


@dataclass
class ForecastSignificance:
    """Significance of one model's forecasts against persistence (DM) and chance (PT)."""

    diebold_mariano: DieboldMariano = field(default_factory=DieboldMariano)
    pesaran_timmermann: PesaranTimmermann = field(default_factory=PesaranTimmermann)


@dataclass
class Verdict:
    """What a test says about a candidate against a benchmark, as data (the view colours by ``outcome``).

    ``outcome``: ``beats`` / ``worse`` only when the test rejects H0 (no difference) at ``level`` with
    ``p_value`` (two-sided) below it, in the direction of the point estimate; ``not_distinguishable``
    otherwise; ``undefined`` when the test could not be run (``note`` says why); ``benchmark`` for the
    benchmark itself. ``measure`` is ``sharpe`` (annualised; ``estimate`` vs ``benchmark_value``) or
    ``mse`` (``estimate`` = MSE ratio to persistence, ``benchmark_value`` = 1).
    """

    outcome: str = "undefined"
    against: str = "buy & hold"
    measure: str = "sharpe"
    test: str = ""
    sided: str = "two-sided"
    level: float = 0.05
    p_value: float | None = None
    estimate: float | None = None
    benchmark_value: float | None = None
    note: str | None = None

    def short(self) -> str:
        """Table text, e.g. ``beats B&H (p=0.01)``, ``≈ B&H (p=0.48)``, ``worse (p=0.03)``."""
        who = "B&H" if self.against == "buy & hold" else self.against
        p = "" if self.p_value is None else f" (p={self.p_value:.2f})"
        return {"beats": f"beats {who}{p}", "worse": f"worse than {who}{p}",
                "not_distinguishable": f"≈ {who}{p}", "benchmark": "benchmark"}.get(self.outcome, "undefined")

    def text(self) -> str:
        """The full sentence, with the numbers, the test, its side and the level."""
        if self.outcome == "benchmark":
            return f"the benchmark ({self.against})"
        name = "Sharpe" if self.measure == "sharpe" else "MSE"
        if self.measure == "sharpe":
            nums = (f"{name} {self.estimate:.2f} vs {self.benchmark_value:.2f}"
                    if self.estimate is not None and self.benchmark_value is not None else f"{name} undefined")
        else:
            nums = f"MSE {self.estimate:.3f}x persistence" if self.estimate is not None else "MSE ratio undefined"
        if self.outcome == "undefined":
            return f"{nums}; not tested against {self.against}" + (f" ({self.note})" if self.note else "")
        p = f"{self.test}, {self.sided} p = {self.p_value:.3f}, level {self.level:g}"
        head = {"beats": f"beats {self.against}", "worse": f"worse than {self.against}",
                "not_distinguishable": f"not distinguishable from {self.against}"}[self.outcome]
        return f"{head} on {name} ({nums}; {p})"


@dataclass
class SeedModelMetrics:
    """One model's forecast metrics for one seed (or the mean / std across seeds, where only numbers are kept)."""

    classification: ClassificationMetrics = field(default_factory=ClassificationMetrics)
    regression: RegressionMetrics = field(default_factory=RegressionMetrics)
    significance: ForecastSignificance = field(default_factory=ForecastSignificance)
    verdict_vs_persistence: Verdict | None = None


@dataclass
class ModelMetrics:
    """A forecaster's metrics: ``type`` (registry name), ``per_seed`` keyed by the seed as text, and with
    several seeds the element-wise ``mean`` and ``std`` (ddof=1) across seeds."""

    type: str
    per_seed: dict[str, SeedModelMetrics]
    mean: SeedModelMetrics | None = None
    std: SeedModelMetrics | None = None

    def first_seed(self) -> tuple[str, SeedModelMetrics]:
        """The lowest seed and its block."""
        key = sorted(self.per_seed, key=lambda s: (0, int(s)) if s.lstrip("-").isdigit() else (1, s))[0]
        return key, self.per_seed[key]


# --------------------------------------------------------------------------- portfolio-level blocks


@dataclass
class PortfolioMetrics:
    """Statistics of one simulated portfolio (vectorbt), over the test bars.

    ``total_return``, ``cagr``, ``max_drawdown`` (negative), ``exposure`` (share of bars held long),
    ``win_rate``: fractions. ``volatility``: annualised std of bar returns. ``sharpe`` is 0 for a
    portfolio whose value never moves (always flat), not undefined. ``max_drawdown_duration_days`` in
    days; ``trades`` a count; ``fees_paid`` and ``final_value`` in the quote currency.
    """

    total_return: float | None = None
    cagr: float | None = None
    volatility: float | None = None
    sharpe: float | None = None
    sortino: float | None = None
    calmar: float | None = None
    max_drawdown: float | None = None
    max_drawdown_duration_days: float | None = None
    exposure: float | None = None
    trades: float | None = None
    win_rate: float | None = None
    profit_factor: float | None = None
    fees_paid: float | None = None
    final_value: float | None = None


@dataclass
class SharpeDiffBootstrap:
    """Stationary bootstrap of the annualised Sharpe difference, strategy minus buy & hold (paired bars).

    ``p_value_one_sided_better`` = share of resampled differences <= 0 (H1: strategy better);
    ``p_value_one_sided_worse`` = share >= 0 (H1: strategy worse); ``p_value_two_sided`` = 2 x the
    smaller, capped at 1. ``ci_low``/``ci_high``: 95 % percentile interval; ``block``: mean block length
    in bars; ``n`` bars; ``n_boot`` finite replications.
    """

    sharpe_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value_one_sided_better: float | None = None
    p_value_one_sided_worse: float | None = None
    p_value_two_sided: float | None = None
    n_boot: int | None = None
    block: float | None = None
    sharpe_strategy: float | None = None
    sharpe_benchmark: float | None = None
    n: int | None = None
    note: str | None = None


@dataclass
class PortfolioResult:
    """One portfolio (model x strategy x seed, an ensemble or a baseline).

    ``model`` is None for baselines; ``classification`` is of its long signals against the realised
    direction (None for baselines); ``flags`` name reasons not to trust its numbers (too few trades,
    too little exposure: ``RunInfo.min_trades`` / ``min_exposure``).
    """

    label: str
    model: str | None
    strategy: str
    strategy_type: str
    seed: int | None
    portfolio: PortfolioMetrics
    verdict: Verdict
    classification: ClassificationMetrics | None = None
    sharpe_vs_buy_and_hold: SharpeDiffBootstrap | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class SymbolTest:
    """One symbol's two-sided test of a model x strategy against a baseline (several-symbol runs).

    ``statistic``: DM statistic (HLN-corrected; negative favours the model) or the annualised Sharpe
    difference (strategy minus buy & hold). ``p_value_two_sided``: uncorrected; ``p_holm`` / ``p_bh``:
    two-sided p adjusted over the symbols. ``point_better``: the point estimate favours the model
    (lower MSE, higher Sharpe). ``verdict``: that symbol's own verdict.
    """

    symbol: str
    statistic: float | None
    p_value_two_sided: float | None
    p_holm: float | None
    p_bh: float | None
    point_better: bool | None
    verdict: Verdict | None = None


@dataclass
class BeatCount:
    """On how many symbols a model x strategy beats a baseline.

    ``point``: symbols where the point estimate is better; ``raw``: two-sided p < ``level`` uncorrected
    and the point estimate better; ``holm`` / ``bh``: the same with the Holm / Benjamini-Hochberg
    adjusted two-sided p (family: this row's symbols).
    """

    test: str
    null: str
    level: float
    n_symbols: int
    point: int
    raw: int
    holm: int
    bh: int
    sided: str = "two-sided"
    per_symbol: list[SymbolTest] = field(default_factory=list)


@dataclass
class SummaryRow:
    """One row of the summary table (best Sharpe first; a flat portfolio ranks with Sharpe 0).

    Units as in :class:`PortfolioMetrics`; ``mse_ratio`` is the model's MSE / persistence (None for
    baselines and ensembles, and in runs of several symbols); ``verdict`` is against buy & hold
    (Sharpe; with several symbols the equal-weight buy & hold of the universe), ``forecast_verdict``
    the model's forecasts against persistence (DM), None for baselines and with several symbols.
    ``precision``/``recall``/``f1`` are of the long signals (pooled over the symbols); None where
    undefined (precision of a portfolio that is never long: 0/0).

    Several symbols only (None otherwise): ``bh_*`` the equal-weight buy & hold's total return,
    Sharpe and max drawdown; ``sharpe_diff`` the bootstrap's Sharpe difference to it;
    ``beats_buy_and_hold`` / ``beats_persistence`` on how many symbols the row's model x strategy beats
    each symbol's buy & hold (Sharpe) and persistence (DM).
    """

    portfolio: str
    model: str | None
    strategy: str
    seed: int | None
    total_return: float | None
    cagr: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float | None
    trades: float | None
    exposure: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    mse_ratio: float | None
    sharpe_diff_p_value_two_sided: float | None
    verdict: Verdict
    forecast_verdict: Verdict | None = None
    flags: list[str] = field(default_factory=list)
    strategy_type: str | None = None
    bh_total_return: float | None = None
    bh_sharpe: float | None = None
    bh_max_drawdown: float | None = None
    sharpe_diff: float | None = None
    beats_buy_and_hold: BeatCount | None = None
    beats_persistence: BeatCount | None = None

    @property
    def is_baseline(self) -> bool:
        return self.model is None


@dataclass
class DeflatedSharpe:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014) of the best of ``n_trials`` tried portfolios.

    Trials are every model x strategy x seed of the run (or of every run of a sweep), baselines
    excluded; ``trials`` names them. ``sharpe``, ``sr0`` per bar (not annualised); ``dsr``, ``psr``
    probabilities; ``p_value`` = 1 − dsr (one-sided, H1: the best has real skill).
    """

    n_trials: int = 0
    trials: list[str] = field(default_factory=list)
    selected: str | None = None
    dsr: float | None = None
    psr: float | None = None
    sr0: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    sharpe: float | None = None
    n_obs: int | None = None
    skew: float | None = None
    kurtosis: float | None = None
    sharpe_variance: float | None = None
    note: str | None = None


@dataclass
class SeedPortfolio:
    """Portfolio numbers of one model x strategy, as the mean or std across seeds."""

    portfolio: PortfolioMetrics | None = None
    classification: ClassificationMetrics | None = None


@dataclass
class AcrossSeeds:
    """Mean and std (ddof=1) across ``seeds`` seeds of one model x strategy."""

    seeds: int
    mean: SeedPortfolio
    std: SeedPortfolio


@dataclass
class BarRepairs:
    """What the data repair did to one symbol's bars and what the run did about it (counts).

    ``synthetic_bars``: bars of the loaded data that the loader inserted or price-replaced
    (``data.repair = "ffill"``; the same count as ``meta.json``); ``signals_held``: decision bars t of
    the test span that are synthetic, on which every portfolio kept its previous signal
    (:func:`strategies.signals.hold_on_synthetic`); ``fills_moved``: fills that would have fallen on
    a synthetic bar and were moved to the next real bar's open (0 where the simulation does not
    report it).
    """

    synthetic_bars: int = 0
    signals_held: int = 0
    fills_moved: int = 0


@dataclass
class RunInfo:
    """What was run: market, timeframe, test span (forecast times t, UTC, ISO 8601), costs and thresholds.

    ``fees``: fraction of the order value per fill (0.001 = 0.1 %); ``slippage``: fraction of the price
    per fill; ``init_cash`` in the quote currency. ``significance_level``: the level verdicts test at;
    ``min_trades`` / ``min_exposure`` (fraction of bars): below them a portfolio is flagged.

    ``symbol``: the market (with several: ``"universe of N symbols"``); ``symbols`` in listing order
    (``n_symbols`` of them); ``bar_seconds``: bar length in seconds; ``pooled``: one model per network
    type trained on every symbol. ``synthetic_bars`` / ``signals_held`` / ``fills_moved``: as in
    :class:`BarRepairs`, summed over the symbols; ``bars_per_symbol`` the same per symbol (several
    symbols only). With several symbols the test span is the union of the symbols' decision bars and
    ``rebalancing`` / ``baselines`` / ``multiple_testing`` state those rules in words.
    """

    name: str
    symbol: str
    quote: str
    timeframe: str
    periods_per_year: float
    first_test_bar: str
    last_test_bar: str
    test_bars: int
    fees: float
    slippage: float
    init_cash: float
    seeds: list[int]
    significance_level: float = 0.05
    min_trades: int = 10
    min_exposure: float = 0.05
    execution: str = "decision at close of bar t, filled at open of bar t+1"
    exchange: str | None = None
    symbols: list[str] = field(default_factory=list)
    n_symbols: int = 1
    bar_seconds: int | None = None
    pooled: bool = False
    synthetic_bars: int = 0
    signals_held: int = 0
    fills_moved: int = 0
    bars_per_symbol: dict[str, BarRepairs] | None = None
    rebalancing: str | None = None
    baselines: str | None = None
    multiple_testing: str | None = None


@dataclass
class SymbolMetrics:
    """The metrics of one market's portfolios and forecasts (the whole run for one symbol; each symbol of a
    universe under :attr:`UniverseBlock.symbols`). See :class:`RunMetrics` for the fields."""

    run: RunInfo
    summary: list[SummaryRow]
    models: dict[str, ModelMetrics]
    portfolios: dict[str, PortfolioResult]
    deflated_sharpe: DeflatedSharpe
    across_seeds: dict[str, AcrossSeeds] = field(default_factory=dict)

    def row(self, portfolio: str) -> SummaryRow | None:
        return next((r for r in self.summary if r.portfolio == portfolio), None)

    @property
    def benchmark(self) -> SummaryRow | None:
        """The buy & hold row."""
        return next((r for r in self.summary if r.verdict.outcome == "benchmark"), None)


@dataclass
class UniverseBlock:
    """What only a run of several symbols has.

    ``symbols``: per symbol, exactly the metrics a one-symbol run on its test bars has (its own
    portfolios, verdicts against its own buy & hold, flags, forecast metrics with price errors);
    ``deflated_sharpe_symbols``: the deflated Sharpe over every symbol x model x strategy x seed tried
    (trials labelled ``SYMBOL|portfolio``).
    """

    symbols: dict[str, SymbolMetrics]
    deflated_sharpe_symbols: DeflatedSharpe


@dataclass
class RunMetrics(SymbolMetrics):
    """Everything in ``metrics.json``. Write with :meth:`write` / :meth:`to_json`, read with :meth:`read`.

    ``run``: what was run. ``summary``: one row per portfolio of the run, best Sharpe first.
    ``portfolios``: full statistics, verdict and flags of each. ``models``: per model and seed, forecast
    metrics over every test bar (of every symbol, stacked; with several symbols the price errors are
    None, they would mix price scales). ``deflated_sharpe``: of the best of the run's model portfolios.
    ``across_seeds``: mean/std over seeds. ``universe``: ``None`` for one symbol, else
    :class:`UniverseBlock`. With several symbols the run's portfolios are equal-weight, cash-shared
    portfolios over the symbols, judged against the equal-weight buy & hold.
    """

    universe: UniverseBlock | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _clean(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> RunMetrics:
        if not isinstance(data, dict):
            raise SchemaError("metrics.json: not a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaError(f"metrics.json: schema_version {version!r}, this version reads {SCHEMA_VERSION} "
                              "(re-run the run to rewrite it)")
        return _build(cls, data, "metrics")

    @classmethod
    def from_json(cls, text: str) -> RunMetrics:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SchemaError(f"metrics.json: not JSON ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data)

    @classmethod
    def read(cls, path: str | Path) -> RunMetrics:
        """Read ``path`` (a metrics.json); :class:`SchemaError` (one line) when it does not match."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise SchemaError(f"metrics.json: not UTF-8 ({exc.reason})") from None
        return cls.from_json(text)

    def write(self, path: str | Path) -> Path:
        """Write atomically (:mod:`backtest.atomic`)."""
        from backtest.atomic import write_text

        return write_text(Path(path), self.to_json() + "\n")


# --------------------------------------------------------------------------- (de)serialisation

T = TypeVar("T")


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):  # numpy scalars
        return _clean(x.item())
    return x


def _build(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) < len(typing.get_args(tp)):
                return None
            raise SchemaError(f"metrics.json: {where} is null")
        return _build(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SchemaError(f"metrics.json: {where} should be an object")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise SchemaError(f"metrics.json: {where} has unknown field {unknown[0]!r}")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"metrics.json: {where} lacks field {f.name!r}")
        return tp(**kwargs)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"metrics.json: {where} should be a list")
        (arg,) = typing.get_args(tp)
        return [_build(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"metrics.json: {where} should be an object")
        _, arg = typing.get_args(tp)
        return {str(k): _build(arg, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"metrics.json: {where} should be a number")
        return float(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"metrics.json: {where} should be true or false")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():  # a count averaged over seeds
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"metrics.json: {where} should be an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(f"metrics.json: {where} should be text")
        return value
    if tp is Any:
        return value
    raise SchemaError(f"metrics.json: {where}: unsupported type {tp!r}")  # pragma: no cover


def build(tp: type[T], data: dict[str, Any], where: str = "block") -> T:
    """A schema block from a dict of numbers (e.g. what :mod:`backtest.metrics` computes); NaN -> None."""
    return _build(tp, _clean(data), where)  # type: ignore[no-any-return]
