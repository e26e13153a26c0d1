"""One entry point for every data source, returning a validated frame.

``SOURCE`` strings understood by the CLI: ``bundled``, a file path (CSV or
Parquet), or ``ccxt:EXCHANGE:SYMBOL:TIMEFRAME`` (read from the local cache,
no network).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from backtest.config import DataConfig
from backtest.data.files import read_ohlcv_file
from backtest.data.frame import infer_timeframe, timeframe_delta, timeframe_seconds
from backtest.data.validate import HintStyle, ValidationReport, validate
from backtest.errors import DataError

BUNDLED_NAME = "BTC_USDT_1d.csv"
BUNDLED_DESCRIPTION = "bundled Binance BTC/USDT 1d"  # the single-symbol default


def bundled_path(symbol: str = "BTC/USDT") -> Path:
    """Path of a bundled daily CSV inside the installed package (default: BTC/USDT; see the folder's README.md)."""
    name = symbol.replace("/", "_") + "_1d.csv"
    path = Path(str(resources.files("backtest.data.bundled").joinpath(name)))
    if not path.is_file():
        raise DataError(f"bundled data has no {symbol!r}; bundled symbols: {', '.join(bundled_symbols())}")
    return path


def bundled_symbols() -> list[str]:
    """The symbols of the bundled daily files (``BTC_USDT_1d.csv`` -> ``BTC/USDT``), sorted."""
    folder = Path(str(resources.files("backtest.data.bundled")))
    return sorted(p.name.removesuffix("_1d.csv").replace("_", "/", 1) for p in folder.glob("*_1d.csv"))


@dataclass
class LoadedData:
    """A validated frame and what is known about it.

    ``synthetic``: boolean Series indexed like ``bars``; True for a bar that ``repair = "ffill"``
    inserted (missing bar) or whose prices it replaced (NaN, non-positive). Such a bar is not real
    market data: no order is decided on it (:func:`strategies.signals.hold_on_synthetic`).
    All False when nothing was repaired (or when not given).
    """

    bars: pd.DataFrame
    timeframe: str
    source: str  # human description
    report: ValidationReport
    sha256: str  # of the frame's canonical CSV bytes (what the run used)
    synthetic: pd.Series | None = None

    def __post_init__(self) -> None:
        if self.synthetic is None:
            mask = self.report.synthetic if self.report.synthetic is not None else None
            self.synthetic = (mask.reindex(self.bars.index, fill_value=False) if mask is not None
                              else pd.Series(False, index=self.bars.index)).astype(bool).rename("synthetic")

    @property
    def synthetic_bars(self) -> int:
        """How many bars are synthetic (inserted or price-replaced by the repair)."""
        return int(self.synthetic.sum()) if self.synthetic is not None else 0


def frame_sha256(bars: pd.DataFrame) -> str:
    """sha256 of the frame written as ccxt-style CSV (stable across sources and reruns)."""
    return hashlib.sha256(bars.to_csv(float_format="%.10g").encode()).hexdigest()


def _select(bars: pd.DataFrame, start: str | None, end: str | None, source: str) -> pd.DataFrame:
    try:
        lo = pd.Timestamp(start, tz="UTC") if start else None
        hi = pd.Timestamp(end, tz="UTC") if end else None
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: data.start/data.end is not a date ({exc})") from None
    out = bars
    if lo is not None:
        out = out[out.index >= lo]
    if hi is not None:
        out = out[out.index < hi]
    if out.empty:
        raise DataError(f"{source}: no bars between {start or 'the start'} and {end or 'the end'}")
    return out


def file_timeframe(raw: pd.DataFrame, configured: str | None, source: str, *, key: str = "data.timeframe") -> str:
    """The timeframe of a file's bars: inferred from their spacing (:func:`infer_timeframe`, the most
    common spacing) when ``configured`` is None, else ``configured`` if it matches the file.

    A mismatch (a 2-hour file run with ``1h`` would get every other bar filled with synthetic candles
    and be annualised with the wrong year) is a one-line DataError naming both. The file's spacing is
    trusted when it is the spacing of most (> half) of at least two intervals between bars.
    """
    idx = raw.index.sort_values().unique()
    inferred = infer_timeframe(idx)
    if configured is None:
        return inferred
    timeframe_delta(configured)  # validates the timeframe string
    steps = pd.Series(idx[1:] - idx[:-1]).dt.total_seconds()
    clear = len(steps) >= 2 and int((steps == timeframe_seconds(inferred)).sum()) * 2 > len(steps)
    if clear and timeframe_seconds(configured) != timeframe_seconds(inferred):
        if key.startswith("--"):
            raise DataError(f"{key} {configured} but {source} has {inferred} bars; "
                            f"use {key} {inferred} (or leave it out to infer it)")
        raise DataError(f"{key} = {configured!r} but {source} has {inferred} bars; "
                        f"set {key} = {inferred!r} (or leave it unset to infer it)")
    return configured


def load_data(cfg: DataConfig, *, now: pd.Timestamp | None = None, progress: bool = False, fetch: bool = True,
              hint_style: HintStyle = "config") -> LoadedData:
    """Load, select ``[start, end)`` and validate the configured data.

    ``source = "ccxt"`` with ``fetch=True`` updates the cache from the exchange
    first (only bars after the last cached one are downloaded); ``fetch=False``
    reads the cache only. ``data.timeframe`` unset: inferred for a file, ``1d``
    for the bundled data (ccxt needs it). ``hint_style`` spells error hints for
    the command that was run (``"config"``: ``--set data.repair=ffill``;
    ``"cli"``: ``--repair ffill``).
    """
    key = "data.timeframe" if hint_style == "config" else "--timeframe"
    if cfg.source == "bundled":
        raw = read_ohlcv_file(bundled_path(cfg.symbol))
        source, timeframe = f"bundled Binance {cfg.symbol} 1d", "1d"
        if cfg.timeframe not in (None, "1d"):
            raise DataError(f"{source}: the bundled dataset is daily; set data.timeframe = '1d' (got {cfg.timeframe!r})")
    elif cfg.source == "file":
        raw = read_ohlcv_file(cfg.path or "")
        source = str(cfg.path)
        timeframe = file_timeframe(raw, cfg.timeframe, source, key=key)
    else:
        if cfg.timeframe is None:  # DataConfig requires it for ccxt; a hand-built one may not have it
            raise DataError(f"ccxt:{cfg.exchange}:{cfg.symbol}: {key} is required for an exchange source")
        from backtest.data.cache import cache_path, default_cache_dir, read_cache

        cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        source, timeframe = f"ccxt:{cfg.exchange}:{cfg.symbol}:{cfg.timeframe}", cfg.timeframe
        if fetch:
            from backtest.data.ccxt_source import update_cache

            until = pd.Timestamp(cfg.end, tz="UTC") if cfg.end else None
            since = pd.Timestamp(cfg.start, tz="UTC") if cfg.start else None
            raw, _ = update_cache(
                cfg.exchange, cfg.symbol, cfg.timeframe, cache_dir=cache_dir, since=since, until=until,
                now=now if now is not None else pd.Timestamp.now(tz="UTC"), base_url=cfg.base_url,
                timeout_ms=cfg.timeout_ms, max_retries=cfg.max_retries, progress=progress,
            )
        else:
            raw = read_cache(cache_path(cache_dir, cfg.exchange, cfg.symbol, cfg.timeframe))
            if raw is None:
                raise DataError(f"{source}: not in the cache at {cache_dir}; run walkforward data fetch first")
    bars = _select(raw, cfg.start, cfg.end, source)
    timeframe_delta(timeframe)  # validates the timeframe string
    bars, report = validate(bars, timeframe, source=source, repair=cfg.repair,
                            max_repair_fraction=cfg.max_repair_fraction, hint_style=hint_style)
    return LoadedData(bars, timeframe, source, report, frame_sha256(bars))


def load_source(spec: str, *, timeframe: str | None = None, repair: str = "none", cache_dir: str | None = None,
                hint_style: HintStyle = "cli", max_repair_fraction: float = 0.01) -> LoadedData:
    """Load a CLI ``SOURCE`` string: ``bundled``, a file path, or ``ccxt:EXCHANGE:SYMBOL:TIMEFRAME`` (cache only).

    A file's timeframe is inferred unless ``timeframe`` is given (then it must match the file).
    ``max_repair_fraction``: as ``data.max_repair_fraction`` (0.01 = at most 1% synthetic bars).
    """
    cap = {"max_repair_fraction": max_repair_fraction}
    if spec == "bundled":
        return load_data(DataConfig(source="bundled", repair=repair, timeframe=timeframe, **cap), hint_style=hint_style)
    if spec.startswith("ccxt:"):
        parts = spec.split(":")
        if len(parts) != 4:
            raise DataError(f"{spec}: expected ccxt:EXCHANGE:SYMBOL:TIMEFRAME, e.g. ccxt:binance:BTC/USDT:1d")
        _, exchange, symbol, tf = parts
        return load_data(DataConfig(source="ccxt", exchange=exchange, symbol=symbol, timeframe=tf, repair=repair,
                                    cache_dir=cache_dir, **cap), fetch=False, hint_style=hint_style)
    return load_data(DataConfig(source="file", path=spec, timeframe=timeframe, repair=repair, **cap), hint_style=hint_style)


def summary(data: LoadedData) -> dict[str, object]:
    """Rows, first and last bar, timeframe, gaps, min/max close: what ``data show`` prints."""
    b = data.bars
    return {
        "source": data.source,
        "rows": len(b),
        "first_bar": b.index[0].isoformat(),
        "last_bar": b.index[-1].isoformat(),
        "timeframe": data.timeframe,
        "gaps": data.report.repairs.get("missing bars filled", 0),
        "synthetic_bars": data.synthetic_bars,
        "min_close": float(b["close"].min()),
        "max_close": float(b["close"].max()),
        "repairs": data.report.describe(),
    }


def summary_line(symbol: str, bars: pd.DataFrame, timeframe: str, report: ValidationReport) -> str:
    """One line per symbol for ``data fetch`` of several symbols: rows, first/last bar (open, UTC), gaps, validation."""
    first, last = bars.index[0].isoformat(), bars.index[-1].isoformat()
    gaps = report.repairs.get("missing bars filled", 0)
    return f"{symbol}  {len(bars):,} rows  {first} .. {last}  {timeframe}  gaps {gaps}  {report.describe()}"


def format_summary(s: dict[str, object]) -> str:
    """``summary`` as aligned lines for the terminal."""
    labels = {
        "source": "source", "rows": "rows", "first_bar": "first bar (open, UTC)", "last_bar": "last bar (open, UTC)",
        "timeframe": "timeframe", "gaps": "gaps (missing bars)", "synthetic_bars": "synthetic bars", "min_close": "min close", "max_close": "max close",
        "repairs": "validation",
    }
    width = max(len(v) for v in labels.values())
    lines = []
    for k, label in labels.items():
        v = s[k]
        lines.append(f"{label:<{width}}  {v:,.2f}" if isinstance(v, float) else f"{label:<{width}}  {v}")
    return "\n".join(lines)
