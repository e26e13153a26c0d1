"""Market data for a run: one validated frame per symbol, one timeframe (a single-symbol run is a universe of one).

``[data] symbols = [...]`` (``source = "ccxt"``: one exchange, one timeframe; ``source = "bundled"``:
the package's daily files) or ``[data] paths = {SYMBOL = PATH, ...}`` (``source = "file"``). Each
symbol is loaded, cut to ``[start, end)`` and validated (and repaired, with ``repair = "ffill"``) on
its own, exactly as a single-symbol run loads its one market, so each keeps its own first bar: a
symbol listed later starts later and nothing is back-filled. Any error names the symbol first.
"""
from __future__ import annotations

import hashlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from backtest.config import DataConfig
from backtest.data.load import LoadedData, load_data
from backtest.data.validate import ValidationReport
from backtest.errors import ConfigError, WalkforwardError


@dataclass
class UniverseData:
    """Validated bars per symbol (config order), their shared timeframe, validation reports and one sha256.

    ``bars[symbol]``: the frame convention of :mod:`backtest.data.frame` (UTC open-time index, float64
    OHLCV in the quote currency). ``sha256`` covers every symbol's frame and its name.
    """

    bars: dict[str, pd.DataFrame]
    timeframe: str
    reports: dict[str, ValidationReport]
    sha256: str
    sources: dict[str, str] = field(default_factory=dict)  # symbol -> human description of where it came from
    sha256s: dict[str, str] = field(default_factory=dict)  # symbol -> sha256 of its own frame

    @property
    def symbols(self) -> list[str]:
        return list(self.bars)

    @property
    def synthetic(self) -> dict[str, pd.Series]:
        """Per symbol: True for a bar the repair inserted or price-replaced (indexed like its bars)."""
        return {s: as_loaded(self, s).synthetic for s in self.bars}  # type: ignore[misc]

    @classmethod
    def of_one(cls, symbol: str, data: LoadedData) -> "UniverseData":
        """A single-symbol run's data as a universe of one (its sha256 is the symbol's own; its synthetic-bar
        mask, however it was given, is kept in the symbol's report, where :attr:`synthetic` reads it)."""
        report = dataclasses.replace(data.report, synthetic=data.synthetic)
        return cls({symbol: data.bars}, data.timeframe, {symbol: report}, data.sha256, {symbol: data.source},
                   {symbol: data.sha256})


def symbol_config(cfg: DataConfig, symbol: str) -> DataConfig:
    """The single-symbol ``[data]`` section of one universe member (same source, range, repair, cache)."""
    update: dict[str, object] = {"symbol": symbol, "symbols": None, "paths": None}
    if cfg.paths is not None:
        update["path"] = cfg.paths[symbol]
    return cfg.model_copy(update=update)


def universe_sha256(sha256s: dict[str, str]) -> str:
    """One sha256 for the universe: of the lines ``SYMBOL SHA256`` in config order."""
    text = "".join(f"{s} {h}\n" for s, h in sha256s.items())
    return hashlib.sha256(text.encode()).hexdigest()


def repeated_file(paths: dict[str, str]) -> str | None:
    """``None`` if every symbol of ``data.paths`` has its own file, else the one-line complaint naming the two
    symbols and the file. Paths are compared resolved (``~``, ``..``, symbolic links; relative to the working
    directory, as they are read), so ``eth.csv`` and ``./data/../eth.csv`` are one file."""
    seen: dict[Path, str] = {}
    for sym, p in paths.items():
        resolved = Path(p).expanduser().resolve()
        if resolved in seen:
            return (f"data.paths: {seen[resolved]!r} and {sym!r} name the same file {str(resolved)!r}; "
                    "a universe reads each market from its own file")
        seen[resolved] = sym
    return None


def load_universe(cfg: DataConfig, *, now: pd.Timestamp | None = None, progress: bool = False,
                  fetch: bool = True) -> UniverseData:
    """Load and validate every symbol of ``cfg`` (see the module docstring); a single-symbol config is a
    universe of one (:meth:`UniverseData.of_one`, errors as ``load_data`` gives them).

    ``fetch`` (``source = "ccxt"``): update each symbol's cache from the exchange first (only bars after
    the last cached one); ``False`` reads the cache only. Raises the source's own error class with the
    symbol in front, e.g. ``ETH/USDT: data.csv: non-numeric close 'x' at 2024-01-05T00:00:00+00:00``.
    """
    symbols = cfg.universe()
    if symbols is None:
        return UniverseData.of_one(cfg.symbol, load_data(cfg, now=now, progress=progress, fetch=fetch))
    same_file = repeated_file(cfg.paths or {})
    if same_file:
        raise ConfigError(same_file)
    loaded: dict[str, LoadedData] = {}
    for sym in symbols:
        try:
            loaded[sym] = load_data(symbol_config(cfg, sym), now=now, progress=progress, fetch=fetch)
        except WalkforwardError as err:
            raise type(err)(f"{sym}: {err}") from None
    tfs = {d.timeframe for d in loaded.values()}
    if len(tfs) > 1:  # only reachable for files whose stated timeframe differs; kept as a guard
        raise ConfigError(f"data: symbols have different timeframes ({', '.join(sorted(tfs))}); a universe has one")
    sha256s = {s: d.sha256 for s, d in loaded.items()}
    return UniverseData(
        bars={s: d.bars for s, d in loaded.items()}, timeframe=loaded[symbols[0]].timeframe,
        reports={s: d.report for s, d in loaded.items()}, sha256=universe_sha256(sha256s),
        sources={s: d.source for s, d in loaded.items()}, sha256s=sha256s,
    )


def as_loaded(data: UniverseData, symbol: str) -> LoadedData:
    """One symbol of the universe as the single-symbol :class:`LoadedData`."""
    return LoadedData(data.bars[symbol], data.timeframe, data.sources.get(symbol, symbol), data.reports[symbol],
                      data.sha256s.get(symbol, ""))
