"""The run configuration: one TOML file, validated on load into typed objects.

Validation runs in two stages (as freqtrade and scikit-learn do):

1. the schema (pydantic): known keys only, types, ranges, defaults, and a
   description for every key;
2. cross-field checks that need the data, e.g. ``initial_train`` shorter than
   the data (:func:`check_against_data`).

Every failure is one :class:`~backtest.errors.ConfigError` line naming the key
and what is allowed, with a "did you mean" for misspelled keys. Nothing is
written before the config is valid.
"""
from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backtest.errors import ConfigError
from strategies.params import STRATEGY_KEYS, StrategyConfig, check_strategy
from models.params import PARAMS_BY_TYPE, AnyModelParams, ModelParams, PersistenceParams, parse_model_params

FEATURE_INPUTS: tuple[str, ...] = (
    "open", "high", "low", "close", "volume",  # levels (window-normalised when normalize = "window")
    "log_return",  # ln(close[t] / close[t-1])
    "rsi",  # 14-bar RSI of close, 0..100
    "macd",  # MACD(12, 26) line divided by close (scale-free)
    "macd_signal",  # 9-bar EMA of that line
    "volatility",  # 20-bar rolling std of log returns
)
LEVEL_INPUTS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


def market_key(symbol: str) -> str:
    """The market a symbol names, for telling repeats apart: ``' eth / usdt'``, ``'"ETH/USDT"'`` -> ``'ETH/USDT'``.

    Case, whitespace and quote characters never make another market (exchanges spell ``BASE/QUOTE`` in capitals).
    """
    return re.sub(r"[\s\"']", "", symbol).upper()


def repeated_market(symbols: list[str]) -> str | None:
    """``None`` if every symbol names its own market, else the complaint's tail, e.g. ``repeats ETH/USDT``
    or ``repeats the market ETH/USDT: 'ETH/USDT' and '"ETH/USDT"' name the same market ...``."""
    groups: dict[str, list[str]] = {}
    for sym in symbols:
        groups.setdefault(market_key(sym), []).append(sym)
    for market, names in groups.items():
        if len(names) > 1:
            spellings = list(dict.fromkeys(names))
            if len(spellings) == 1:
                return f"repeats {spellings[0]}"
            return (f"repeats the market {market}: {' and '.join(map(repr, spellings))} name the same market "
                    "(case, spaces and quotes do not make another one)")
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class DataConfig(_Section):
    """``[data]``: where the candles come from."""

    source: Literal["bundled", "file", "ccxt"] = Field("bundled", description="bundled dataset, a local file, or an exchange through ccxt")
    path: str | None = Field(None, description="CSV or Parquet file, for source = 'file'")
    exchange: str = Field("binance", description="ccxt exchange id, for source = 'ccxt'")
    symbol: str = Field("BTC/USDT", description="market symbol, e.g. 'BTC/USDT' (ignored when symbols or paths is set)")
    symbols: list[str] | None = Field(
        None, min_length=1,
        description="a universe of markets (one exchange, one timeframe), for source = 'ccxt' or 'bundled'; e.g. ['BTC/USDT', 'ETH/USDT']",
    )
    paths: dict[str, str] | None = Field(
        None, min_length=1, description="a universe from files, for source = 'file': symbol -> CSV/Parquet path, e.g. {'BTC/USDT' = 'btc.csv'}",
    )
    timeframe: str | None = Field(
        None, description="bar length as a ccxt timeframe: 1m, 5m, 1h, 4h, 1d, 1w; unset = inferred from a file's "
        "bar spacing, 1d for bundled; required for ccxt. A file whose spacing differs is refused")
    start: str | None = Field(None, description="first bar to use (inclusive), ISO date, UTC (a TOML date works too)")
    end: str | None = Field(None, description="last bar to use (exclusive), ISO date, UTC (a TOML date works too)")
    repair: Literal["none", "ffill"] = Field("none", description="documented repair of gaps/bad prices; 'none' = error")
    max_repair_fraction: float = Field(
        0.01, ge=0.0, le=1.0, description="repair = 'ffill' refuses data in which more than this fraction of the bars "
        "would be synthetic (inserted or price-replaced); 0.01 = 1%")
    cache_dir: str | None = Field(None, description="candle cache folder; default: the user's cache directory")
    base_url: str | None = Field(None, description="override the exchange's REST base URL (testnets, emulators)")
    timeout_ms: int = Field(30000, gt=0, description="exchange request timeout in milliseconds")
    max_retries: int = Field(5, ge=0, description="retries on network errors, timeouts, 429 and 5xx")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso_date(cls, v: Any) -> Any:
        """A TOML date/datetime (``start = 2024-01-01``, unquoted) becomes its ISO string, so config.toml round-trips."""
        import datetime as dt

        if isinstance(v, (dt.date, dt.datetime)):
            return v.isoformat()
        return v

    @model_validator(mode="after")
    def _path_for_file(self) -> "DataConfig":
        if self.paths is not None:
            if self.source != "file":
                raise ValueError(f"data.paths needs data.source = 'file' (got {self.source!r}); use data.symbols for 'ccxt' or 'bundled'")
            if self.symbols is not None:
                raise ValueError("data.symbols and data.paths are exclusive: paths names the symbols of a file universe")
            if self.path:
                raise ValueError("data.path and data.paths are exclusive: use data.paths for several files")
        if self.symbols is not None:
            if self.source == "file":
                raise ValueError("data.symbols is for source = 'ccxt' or 'bundled'; for files use data.paths = {SYMBOL = PATH, ...}")
        for key, names in (("symbols", self.symbols), ("paths", self.paths)):
            repeated = repeated_market(list(names or ()))
            if repeated:
                raise ValueError(f"data.{key} {repeated}")
        if self.source == "file" and not self.path and self.paths is None:
            raise ValueError("data.path is required when data.source = 'file'")
        if self.source == "ccxt" and self.timeframe is None:
            raise ValueError("data.timeframe is required when data.source = 'ccxt' (e.g. '1d', '4h')")
        return self

    def universe(self) -> list[str] | None:
        """The symbols of a universe run in config order (``symbols`` or the keys of ``paths``), or None for one symbol."""
        if self.symbols is not None:
            return list(self.symbols)
        if self.paths is not None:
            return list(self.paths)
        return None


class FeaturesConfig(_Section):
    """``[features]``: the model inputs and target (all causal: row t uses bars <= t)."""

    lookback: int = Field(30, ge=1, le=5000, description="bars per input window")
    inputs: list[str] = Field(default_factory=lambda: ["close"], min_length=1, description=f"input columns, any of {', '.join(FEATURE_INPUTS)}")
    normalize: Literal["window", "minmax", "standard", "none"] = Field(
        "window", description="window = p/p[0]-1 per window (levels); minmax/standard = scaler fit on the fold's training rows only"
    )
    target: Literal["return", "close"] = Field("return", description="return = next-bar log return r[t+1]; close = next close level")
    scale_target: bool = Field(
        True, description="target = 'return': models train on r[t+1] divided by its standard deviation over the "
        "fold's training rows (forecasts scaled back); false: on the raw log returns, as a plain Keras loop does")
    horizon: int = Field(1, ge=1, le=100, description="K bars ahead: the model outputs r[t+1..t+K]")
    pooled: bool = Field(
        False, description="universe runs: one model per fold trained on every eligible symbol's windows (false: one walk-forward per symbol)",
    )
    symbol_input: Literal["none", "onehot"] = Field(
        "none", description="pooled runs: 'onehot' appends one 0/1 channel per universe symbol to every time step of the input window",
    )

    @field_validator("inputs")
    @classmethod
    def _known_inputs(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in FEATURE_INPUTS:
                raise ValueError(f"unknown input {name!r}{_did_you_mean(name, FEATURE_INPUTS)}; allowed: {', '.join(FEATURE_INPUTS)}")
        if len(set(v)) != len(v):
            raise ValueError("inputs are repeated")
        return v

    @model_validator(mode="after")
    def _scale_target_needs_returns(self) -> "FeaturesConfig":
        if not self.scale_target and self.target != "return":
            raise ValueError("scale_target applies to target = 'return' only (close levels are encoded by normalize)")
        return self


class WalkForwardConfig(_Section):
    """``[walkforward]``: the fold plan (in bars) and how folds are executed."""

    initial_train: int = Field(1000, ge=10, description="bars of history before the first test bar")
    step: int = Field(30, ge=1, description="bars per test block = retrain interval")
    window: Literal["expanding", "rolling"] = Field("expanding", description="expanding: train on all past rows; rolling: the last train_length rows")
    train_length: int | None = Field(None, ge=10, description="training rows for window = 'rolling'")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="chronological tail of the training rows used for early stopping")
    warm_start: bool = Field(False, description="fold k starts from fold k-1's weights")
    warm_start_epochs: int | None = Field(None, ge=1, description="epochs for warm-started folds (default: a third of epochs)")
    executor: Literal["sequential", "process", "ray"] = Field(
        "process", description="where units of work run: in worker processes (default: one per core), in this "
        "process, or as Ray tasks (see [ray]); every executor gives the same forecasts")
    workers: int | None = Field(None, ge=1, le=256, description="worker processes for executor = 'process'; "
                                "unset = one per core of the machine")
    max_folds: int | None = Field(None, ge=1, description="stop after this many folds (quick looks; the plan is otherwise unchanged)")
    training: Literal["auto", "grouped", "per_fold"] = Field(
        "auto", description="grouped: cold-start trainings of one architecture (folds, seeds) trained together as one "
        "vectorised computation; per_fold: one Keras fit per fold; auto = grouped for cold starts, per_fold with "
        "warm_start (a chain); see README 'Grouped training'")
    group_size: int = Field(16, ge=1, le=4096, description="most models in one grouped computation")
    group_memory_mib: float = Field(
        48.0, gt=0, le=1_000_000, description="memory knob: estimated MiB of one grouped step's activations "
        "(the largest member batch_size rows per model); a group holds at most as many models as fit (and at most "
        "group_size)")

    @model_validator(mode="after")
    def _rolling_needs_length(self) -> "WalkForwardConfig":
        if self.window == "rolling" and self.train_length is None:
            raise ValueError("walkforward.train_length is required when walkforward.window = 'rolling'")
        if self.training == "grouped" and self.warm_start:
            raise ValueError("walkforward.training = 'grouped' needs cold starts; with warm_start = true "
                             "use training = 'per_fold' or 'auto'")
        return self

    @property
    def grouped(self) -> bool:
        """Whether cold-start network folds take the grouped path (``training``, resolved)."""
        return self.training == "grouped" or (self.training == "auto" and not self.warm_start)


#: ``[models.NAME]``: one forecaster, validated by the schema of its ``type`` (:mod:`models.params`:
#: one pydantic model per type, a discriminated union on ``type``). A key the type does not use, or a
#: value it would change, is an error. ``ModelConfig`` is the common base class (for type hints).
ModelConfig = ModelParams


def make_model_config(type: str, **params: Any) -> ModelParams:
    """A validated ``[models.NAME]`` of ``type`` (e.g. ``make_model_config("lstm", units=8)``); raises ConfigError."""
    try:
        return parse_model_params({"type": type, **params})
    except ValidationError as err:
        raise ConfigError(_format_error(err, "model config", prefix=["models", type])) from None


def _models_before(v: Any) -> Any:
    """Check each ``[models.NAME]`` names a known ``type`` (with "did you mean") before the union picks a schema."""
    from models import MODEL_TYPES  # light: the registry imports no Keras

    if not isinstance(v, dict):
        return v
    for name, body in v.items():
        if isinstance(body, dict) and "type" in body and body["type"] not in MODEL_TYPES:
            t = body["type"]
            raise ValueError(f"models.{name}.type: unknown model type {t!r}{_did_you_mean(str(t), MODEL_TYPES)}; "
                             f"allowed: {', '.join(MODEL_TYPES)}")
    return v


class BacktestConfig(_Section):
    """``[backtest]``: costs and capital of the simulation."""

    fees: float = Field(0.001, ge=0.0, lt=1.0, description="fraction of order value per fill; 0.001 = 0.1%")
    slippage: float = Field(0.0005, ge=0.0, lt=1.0, description="fraction of price lost per fill; 0.0005 = 0.05%")
    init_cash: float = Field(10_000.0, gt=0.0, description="starting cash in the quote currency")
    bootstrap_samples: int = Field(1000, ge=100, le=100_000, description="bootstrap resamples for the Sharpe-difference interval")
    significance_level: float = Field(0.05, gt=0.0, lt=0.5, description="level of the tests behind a verdict: 'beats' only when the two-sided p-value is below it; 0.05 = 5%")
    min_trades: int = Field(10, ge=0, description="a portfolio with fewer trades is flagged 'few trades'")
    min_exposure: float = Field(0.05, ge=0.0, le=1.0, description="a portfolio in the market for a smaller share of bars is flagged 'low exposure'; 0.05 = 5%")


class RunConfig(_Section):
    """``[run]``: name and seeds."""

    name: str = Field("default", min_length=1, description="run folder name under the output folder")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="one or many seeds; each seed's predictions are kept")
    deterministic: bool = Field(True, description="deterministic ops (same config + seed = same forecasts)")

    @field_validator("seeds", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError("run.name must be a plain folder name")
        return v


class NotifyConfig(_Section):
    """``[paper.notify]``: webhook messages from ``paper run`` (JSON POSTs; never an API key in them)."""

    webhooks: list[str] = Field(default_factory=list, description="URLs that receive a JSON POST per event, e.g. ['https://hooks.example/abc']; empty = off")
    events: list[Literal["fill", "error", "stale", "drift"]] = Field(
        default_factory=lambda: ["fill", "error", "stale", "drift"], description="events to send: fill, error, stale (feed late), drift (alarm)")
    timeout_s: float = Field(5.0, gt=0.0, le=120, description="seconds per POST before it counts as failed")
    retries: int = Field(3, ge=0, le=20, description="re-sends of a failed POST, with backoff")
    backoff_s: float = Field(1.0, ge=0.0, le=600, description="wait before the first re-send, doubled for each next one (1, 2, 4 s)")
    stale_after_bars: float = Field(1.0, gt=0.0, le=1000, description="the feed is stale once the next candle is this many bars later than expected (close + paper.delay_s)")

    @field_validator("webhooks")
    @classmethod
    def _http_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook {url!r} is not an http:// or https:// URL")
        return v


class ServeConfig(_Section):
    """``[paper.serve]``: the read-only monitor page of ``paper serve``."""

    host: str = Field("127.0.0.1", min_length=1, description="address to listen on; 127.0.0.1 = this machine only (0.0.0.0 exposes it to the network)")
    port: int = Field(8765, ge=0, le=65535, description="TCP port; 0 = any free port (printed at start)")
    refresh_s: float = Field(10.0, ge=1.0, le=3600, description="seconds between the page's polls for a new bar")


class DriftConfig(_Section):
    """``[paper.drift]``: compare the live account with a backtest run of the same config."""

    run_dir: str | None = Field(None, description="a finished `walkforward run` directory of this config (its equity.csv and predictions.csv); unset = no drift monitor")
    level: float = Field(0.05, gt=0.0, lt=0.5, description="two-sided miss rate of the band: 0.05 = the 2.5%..97.5% quantiles of bootstrapped paths")
    samples: int = Field(2000, ge=200, le=100_000, description="bootstrap paths for the return band")
    block_bars: float | None = Field(None, gt=1.0, description="mean block length of the stationary bootstrap, in bars; default: arch's optimal_block_length estimate")
    min_backtest_bars: int = Field(100, ge=20, description="out-of-sample backtest bars needed before a band is drawn (and at least as many as the paper period)")
    seed: int = Field(0, ge=0, description="seed of the bootstrap (the same ledger gives the same band)")


class PaperConfig(_Section):
    """``[paper]``: the paper-trading account."""

    account: str = Field("default", min_length=1, description="account name (one ledger per account)")
    ledger: str | None = Field(None, description="SQLite ledger path; default: paper/<account>.sqlite")
    model: str | None = Field(None, description="model to trade; default: every model of the config")
    history: int | None = Field(None, ge=10, description="bars of history before the first paper bar; default initial_train")
    delay_s: float = Field(10.0, ge=0.0, description="seconds after a candle closes before polling")
    sandbox_orders: bool = Field(False, description="also send orders to the exchange's sandbox (never live)")
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)


class RayConfig(_Section):
    """``[ray]``: the Ray cluster for ``walkforward.executor = "ray"`` (execution only: no effect on forecasts)."""

    address: str | None = Field(None, description="unset: start a local Ray on this machine; 'auto' or 'HOST:PORT' or 'ray://HOST:10001': join a cluster")
    num_cpus: float = Field(1.0, gt=0.0, le=256, description="CPUs reserved per task (a fold, or a warm-start chain)")
    num_gpus: float = Field(0.0, ge=0.0, le=16, description="GPUs reserved per network task (baselines never ask for one); 0.5 = two tasks share a GPU")
    max_retries: int = Field(3, ge=0, le=100, description="re-runs of a task whose worker process died (Ray task retries)")
    local_cpus: int | None = Field(None, ge=1, le=1024, description="CPUs of a local Ray started by walkforward; default: all of this machine")
    object_store_mb: int = Field(200, ge=75, le=1_000_000, description="object store of a local Ray, in MiB (bars are shipped through it once)")
    connect_timeout_s: float = Field(10.0, gt=0.0, le=600, description="seconds to wait for a cluster address to answer before giving up")


class TrackingConfig(_Section):
    """``[tracking]``: experiment tracking in MLflow (off unless mlflow_uri is set; no effect on forecasts)."""

    mlflow_uri: str | None = Field(None, description="MLflow tracking URI: 'file:/path/mlruns', 'sqlite:///mlflow.db' or 'http://host:5000'; unset = off")
    experiment: str = Field("walkforward", min_length=1, description="MLflow experiment name")
    timeout_s: float = Field(10.0, gt=0.0, le=600, description="seconds per request to a tracking server before the upload is given up (one warning)")


class Config(_Section):
    """The whole resolved configuration."""

    data: DataConfig = Field(default_factory=DataConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    walkforward: WalkForwardConfig = Field(default_factory=WalkForwardConfig)
    models: dict[str, AnyModelParams] = Field(default_factory=lambda: {"persistence": PersistenceParams(type="persistence")})
    strategies: dict[str, StrategyConfig] = Field(default_factory=lambda: {"long_flat": StrategyConfig(type="long_flat")})
    backtest: BacktestConfig = Field(default_factory=BacktestConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("models", mode="before")
    @classmethod
    def _known_model_types(cls, v: Any) -> Any:
        return _models_before(v)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if not self.models:
            raise ValueError("models: at least one [models.NAME] section is required")
        # Baselines are always reported beside models: add any the config left out.
        if not any(m.type == "persistence" for m in self.models.values()):
            self.models["persistence"] = PersistenceParams(type="persistence")
        for base in ("buy_and_hold", "always_flat", "sma_cross"):
            if not any(s.type == base for s in self.strategies.values()):
                self.strategies[base] = StrategyConfig(type=base)
        for name, s in self.strategies.items():
            if s.type == "ensemble" and s.models:
                unknown = [m for m in s.models if m not in self.models]
                if unknown:
                    raise ValueError(f"strategies.{name}.models names unknown model(s) {', '.join(unknown)}; defined: {', '.join(self.models)}")
            check_strategy(name, s, self.models, self.backtest.fees, self.backtest.slippage)
        if self.paper.model is not None and self.paper.model not in self.models:
            raise ValueError(f"paper.model {self.paper.model!r} is not a defined model; defined: {', '.join(self.models)}")
        wf = self.walkforward
        if wf.window == "rolling" and wf.train_length is not None and wf.train_length > wf.initial_train:
            raise ValueError("walkforward.train_length must be <= walkforward.initial_train")
        return self

    def to_toml(self) -> str:
        """The fully resolved config as TOML (every key, defaults included; a strategy lists only the keys
        its type reads, so the file validates again)."""
        d = self.model_dump(mode="json")
        for body in d.get("strategies", {}).values():
            for k in [k for k in body if k != "type" and k not in STRATEGY_KEYS.get(body["type"], ())]:
                del body[k]
        return _to_toml(d)


#: Keys added after run directories existed (universe runs; ``scale_target``), with the value that means the
#: behaviour before them ("not a universe"; return targets scaled): left out of identities (run fingerprints,
#: paper accounts) at that value, so runs made before they existed still resume.
_ADDED_KEY_DEFAULTS = {"data": {"symbols": None, "paths": None},
                       "features": {"pooled": False, "symbol_input": "none", "scale_target": True}}


def identity_section(section: str, dumped: dict[str, Any]) -> dict[str, Any]:
    """``dumped`` (a section's ``model_dump(mode="json")``) without the keys added later left at their old value."""
    defaults = _ADDED_KEY_DEFAULTS.get(section, {})
    return {k: v for k, v in dumped.items() if not (k in defaults and v == defaults[k])}


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_SECTION_KEYS = {
    "data": DataConfig, "features": FeaturesConfig, "walkforward": WalkForwardConfig, "backtest": BacktestConfig,
    "run": RunConfig, "paper": PaperConfig, "models": ModelConfig, "strategies": StrategyConfig,
    "ray": RayConfig, "tracking": TrackingConfig,
}


_PAPER_SUBSECTIONS = {"notify": NotifyConfig, "serve": ServeConfig, "drift": DriftConfig}


def _format_error(err: ValidationError, source: str, prefix: list[str] | None = None) -> str:
    e = err.errors()[0]
    loc = (prefix or []) + [str(x) for x in e["loc"]]
    model_type = None
    if len(loc) >= 3 and loc[0] == "models" and loc[2] in PARAMS_BY_TYPE:
        model_type = loc.pop(2)  # the discriminated union's tag: the schema that was used
    if prefix and len(loc) >= 2 and loc[0] == "models" and loc[1] in PARAMS_BY_TYPE and model_type is None:
        model_type = loc[1]
    key = ".".join(loc)
    msg = e["msg"].removeprefix("Value error, ")
    of_type = f" (type {model_type!r})" if model_type else ""
    if e["type"] == "extra_forbidden":
        parent = loc[:-1]
        if model_type is not None:
            allowed = list(PARAMS_BY_TYPE[model_type].parameter_names())
            hint = _did_you_mean(loc[-1], allowed)
            return (f"{source}: {'.'.join(parent)}: {loc[-1]!r} is not a parameter of type {model_type!r}{hint}; "
                    f"allowed: {', '.join(allowed) or 'no keys besides type'}")
        model = _SECTION_KEYS.get(parent[0]) if parent else None
        if len(parent) == 2 and parent[0] == "paper" and parent[1] in _PAPER_SUBSECTIONS:
            model = _PAPER_SUBSECTIONS[parent[1]]
        if parent and parent[0] in ("models", "strategies") and len(parent) == 2:
            model = _SECTION_KEYS[parent[0]]
        if len(parent) == 0:
            allowed = list(_SECTION_KEYS)
        elif model is not None and not (parent[0] in ("models", "strategies") and len(parent) == 1):
            allowed = list(model.model_fields)
        else:
            allowed = []
        hint = _did_you_mean(loc[-1], allowed)
        return f"{source}: unknown key {key!r}{hint}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if e["type"] == "union_tag_not_found":
        return f"{source}: {key}.type is required; allowed: {', '.join(PARAMS_BY_TYPE)}"
    if e["type"] == "literal_error":
        return f"{source}: {key or 'config'}{of_type}: {msg}, got {e.get('input')!r}"
    if e["type"] == "missing":
        return f"{source}: {key} is required"
    if not key or (e["type"] == "value_error" and msg.startswith(key + ".")):
        return f"{source}: {msg}"
    return f"{source}: {key}{of_type}: {msg} (got {e.get('input')!r})"


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a raw (TOML-shaped) dict into a :class:`Config`, or raise one-line ConfigError."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def toml_key_path(key: str) -> list[str] | None:
    """The parts of a TOML dotted key as TOML reads them, or None if ``key`` is not one.

    Bare parts (letters, digits, ``_``, ``-``) and quoted parts: ``data.paths."ETH/USDT"`` ->
    ``["data", "paths", "ETH/USDT"]``; ``models."my.net".units`` -> ``["models", "my.net", "units"]``.
    Parsed by :mod:`tomllib` (as the document ``KEY = 0``), never split by hand.
    """
    if not key.strip() or "\n" in key or "\r" in key:
        return None
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(node, dict):
        ((part, node),) = node.items()  # one key per level: the document holds one dotted key
        path.append(part)
    return path


def split_assignment(text: str, flag: str = "--set") -> tuple[str, list[str], str]:
    """Split ``KEY=VALUE`` at the ``=`` that ends a whole TOML key: ``(key text, key parts, value text)``.

    A quoted part may hold ``=`` or ``.`` (``data.paths."A=B"=x``). Raises a one-line ConfigError naming
    ``flag`` when there is no ``=`` or the text before it is not a TOML key (with the quoted spelling to use).
    """
    if "=" not in text:
        raise ConfigError(f"{flag} {text!r}: expected section.key=value")
    start = 0
    while (i := text.find("=", start)) >= 0:
        path = toml_key_path(text[:i])
        if path is not None:
            return text[:i].strip(), path, text[i + 1:]
        start = i + 1
    head = text.split("=", 1)[0].strip()
    parts = [p.strip().strip("\"'") for p in head.split(".")]
    example = ".".join(p if _bare_key(p) else '"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
    hint = f", e.g. {example}" if all(parts) else ""
    raise ConfigError(f"{flag} {text!r}: {head!r} is not a TOML key; parts are separated by dots, and a part with "
                      f"characters other than letters, digits, _ and - is quoted{hint}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse one ``--set section.key=value`` into a key path and a TOML value.

    The key is a TOML dotted key (:func:`toml_key_path`: bare or quoted parts, so
    ``data.paths."ETH/USDT"=eth.csv`` sets the symbol ``ETH/USDT``). The value is read as TOML
    (``0.2``, ``true``, ``[1, 2]``, ``"x"``); anything that is not valid TOML is taken as a bare
    string (``--set data.symbol=ETH/USDT``).
    """
    _, path, value = split_assignment(text)
    if len(path) < 2:
        raise ConfigError(f"--set {text!r}: the key must name a section and a key, e.g. walkforward.step=30")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``section.key=value`` set."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a one-line ConfigError."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot be read ({exc.strerror})") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config file (schema stage)."""
    raw = apply_overrides(read_toml(path), overrides or [])
    return parse_config(raw, str(path))


def check_against_data(cfg: Config, n_bars: int) -> None:
    """Cross-field checks that need the data length (stage 2). Raises ConfigError."""
    wf, ft = cfg.walkforward, cfg.features
    if wf.initial_train >= n_bars:
        raise ConfigError(f"walkforward.initial_train = {wf.initial_train} is not shorter than the data ({n_bars} bars)")
    warmup = ft.lookback + _indicator_warmup(ft.inputs) + ft.horizon + 1
    if wf.initial_train <= warmup + 10:
        raise ConfigError(
            f"walkforward.initial_train = {wf.initial_train} leaves too few training rows after lookback ({ft.lookback}), "
            f"indicator warm-up and horizon ({ft.horizon}); use at least {warmup + 11}"
        )


def _indicator_warmup(inputs: list[str]) -> int:
    """Bars an input needs before its first defined value (MACD: 26 + 9, RSI 14, vol 20)."""
    need = {"log_return": 1, "rsi": 14, "macd": 26, "macd_signal": 35, "volatility": 20}
    return max([need.get(i, 0) for i in inputs] + [0])


def _bare_key(k: str) -> bool:
    """A TOML bare key (letters, digits, ``_``, ``-``); anything else (``BTC/USDT``) is written quoted."""
    return re.fullmatch(r"[A-Za-z0-9_-]+", k) is not None


def _to_toml(obj: dict[str, Any]) -> str:
    """Minimal TOML writer for the config's shape (tables of scalars/lists, two nesting levels)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def table(name: str, d: dict[str, Any]) -> None:
        flat = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        nested = {k: v for k, v in d.items() if isinstance(v, dict)}
        if flat or not nested:
            lines.append(f"[{name}]")
            lines.extend(f"{k if _bare_key(k) else scalar(k)} = {scalar(v)}" for k, v in flat.items())
            lines.append("")
        for k, v in nested.items():
            key = k if _bare_key(k) else scalar(k)
            table(f"{name}.{key}", v)

    for section, body in obj.items():
        table(section, body)
    return "\n".join(lines)
