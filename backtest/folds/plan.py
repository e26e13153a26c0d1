"""The fold plan of a run: every symbol's folds over one test span, and the fold tasks (docs/design.md,
"Fold plan"). A single-symbol config is planned exactly like a universe of one symbol.

Alignment: bars are labelled by open time; decision row ``t`` sees bars ``<= t`` and forecasts
``r[t+1..t+K]``. A fold that tests rows ``[T, T+step)`` trains only on rows ``t <= T - 1 - K`` (a gap of
``K = horizon`` rows, so every training target is known before ``T``), and the validation rows for early
stopping are the chronological tail of those, again with a gap of ``K`` rows after the rows the model is
fit on. ``window = "expanding"`` trains on every earlier row; ``"rolling"`` on the last ``train_length``.

**One test span** (:func:`test_span`): it starts at the first bar at which any symbol has ``initial_train``
bars and ends at the last bar whose next close is known; a symbol enters when it has ``initial_train`` bars
of its own and stays to the end (nothing is back-filled). ``max_folds`` cuts the span for all symbols at
once: after ``max_folds`` blocks of ``step`` bars of the common calendar (the union of the bar times).

Per-symbol models (``features.pooled = false``, and every single-symbol run): each symbol gets its own
walk-forward over its own bars (:func:`plan_folds`), its test rows cut at the span's end. Pooled models:
one model per block of the common calendar (:func:`pooled_blocks`), each symbol's rows computed by
:func:`plan_folds` itself, so the two modes share one definition of a fold.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from backtest.config import Config, FeaturesConfig, ModelConfig, WalkForwardConfig, check_against_data
from backtest.errors import ConfigError, DataError, WalkforwardError
from backtest.features import feature_matrix, first_valid_row

#: Forecasters fit in closed form: never warm-started, never grouped, no TensorFlow.
BASELINES = ("persistence", "mean", "linear")


@dataclass(frozen=True)
class FoldSpec:
    """Row positions (into one symbol's bar index) of one fold; ``stop`` is exclusive."""

    k: int
    train_start: int
    train_stop: int  # rows the model is fit on: [train_start, train_stop)
    val_start: int
    val_stop: int  # validation rows: [val_start, val_stop); empty when val_fraction = 0
    test_start: int
    test_stop: int

    @property
    def n_train(self) -> int:
        return self.train_stop - self.train_start


def plan_folds(n_bars: int, first_row: int, wf: WalkForwardConfig, horizon: int,
               stop_row: int | None = None) -> list[FoldSpec]:
    """One symbol's folds, from its data length and the config alone.

    ``first_row``: the first decision row with a full input window. Test rows run from ``initial_train``
    to the last row whose target is known (``n_bars - 1 - horizon``), or to ``stop_row`` (exclusive) when
    given, in blocks of ``step``; ``max_folds`` stops after that many folds (a run's planner passes the
    common span as ``stop_row`` instead: :func:`test_span`).
    """
    last_row = n_bars - 1 - horizon  # last row whose r[t+1..t+K] is known
    if stop_row is not None:
        last_row = min(last_row, stop_row - 1)
    folds: list[FoldSpec] = []
    T = wf.initial_train
    k = 0
    while T <= last_row:
        test_stop = min(T + wf.step, last_row + 1)
        end = T - horizon  # training rows t <= T - 1 - horizon  ->  stop = T - horizon
        start = first_row if wf.window == "expanding" else max(first_row, end - int(wf.train_length or 0))
        n = end - start
        n_val = int(np.floor(n * wf.val_fraction))
        if n_val > 0:
            val_start, val_stop = end - n_val, end
            fit_stop = val_start - horizon
        else:
            val_start = val_stop = fit_stop = end
        if fit_stop - start < 10 and wf.window == "rolling" and end - int(wf.train_length or 0) >= first_row:
            raise ConfigError(
                f"walkforward.train_length = {wf.train_length}: fold {k} would train on {fit_stop - start} rows "
                f"after validation ({n_val}) and horizon gap ({horizon}); it needs at least 10: raise walkforward.train_length"
            )
        if fit_stop - start < 10:
            raise ConfigError(
                f"walkforward.initial_train = {wf.initial_train}: fold {k} would train on {fit_stop - start} rows; "
                f"it needs at least 10 after lookback, warm-up, horizon and validation"
            )
        folds.append(FoldSpec(k, start, fit_stop, val_start, val_stop, T, test_stop))
        T = test_stop
        k += 1
        if stop_row is None and wf.max_folds is not None and k >= wf.max_folds:
            break
    return folds


def symbol_safe(symbol: str) -> str:
    """A symbol as a folder/file name: ``BTC/USDT`` -> ``BTC_USDT`` (anything but letters, digits, ``-._`` -> ``_``)."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in symbol)


# --------------------------------------------------------------------------- the span


@dataclass(frozen=True)
class Span:
    """The test span shared by every symbol: decision bars ``[start, stop)`` (open times, UTC), and the
    common calendar (the union of the symbols' bar times) it is counted on."""

    start: pd.Timestamp
    stop: pd.Timestamp
    calendar: pd.DatetimeIndex

    def blocks(self, step: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """The span cut into blocks of ``step`` calendar bars: ``[(first bar, end exclusive), ...]``."""
        cal = self.calendar
        pos, end = int(cal.searchsorted(self.start)), int(cal.searchsorted(self.stop))
        out = []
        while pos < end:
            stop = min(pos + step, end)
            out.append((cal[pos], cal[stop] if stop < len(cal) else cal[-1] + pd.Timedelta(1, "ns")))
            pos = stop
        return out


def test_span(bars: dict[str, pd.DataFrame], wf: WalkForwardConfig, horizon: int) -> Span:
    """The one test span of a run (see the module docstring); refuses symbols that end on different bars."""
    ends = {s: b.index[-1] for s, b in bars.items()}
    last = max(ends.values())
    early = next((s for s, e in ends.items() if e < last), None)
    if early is not None:
        raise DataError(f"{early}: bars end at {ends[early].isoformat()}, before the other symbols' "
                        f"({last.isoformat()}); a universe's symbols end on the same bar: fix the data or set "
                        f"data.end to at most {ends[early].isoformat()}")
    calendar = pd.DatetimeIndex(sorted(set().union(*[set(b.index) for b in bars.values()])))
    entries = [b.index[wf.initial_train] for b in bars.values() if wf.initial_train <= len(b) - 1 - horizon]
    longest = max(bars.values(), key=len)
    if not entries:
        raise ConfigError(f"walkforward.initial_train = {wf.initial_train} leaves no test bar in {len(longest)} bars")
    first = int(calendar.get_loc(min(entries)))
    end = int(calendar.get_loc(longest.index[len(longest) - 1 - horizon])) + 1  # last decision bar with a known target
    if wf.max_folds is not None:
        end = min(end, first + wf.max_folds * wf.step)
    stop = calendar[end] if end < len(calendar) else calendar[-1] + pd.Timedelta(1, "ns")
    return Span(calendar[first], stop, calendar)


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Member:
    """One symbol's rows in a fold task (positions into that symbol's bars)."""

    symbol: str
    spec: FoldSpec


@dataclass
class FoldTask:
    """One training of one model for one fold: picklable and small (no bars: each member gets only its bars
    ``[0, test_stop)`` from :func:`backtest.folds.compute.prepare`). ``members``: the symbols it trains on
    (one, or every symbol with enough history for a pooled fold); ``folder``: relative to the run directory.
    """

    model_name: str
    model_cfg: ModelConfig
    features: FeaturesConfig
    k: int
    seed: int
    members: tuple[Member, ...]
    folder: str
    n_folds: int = 1
    pooled: bool = False  # one model of several symbols (transforms/<SYMBOL>.pkl, members.json)
    universe: tuple[str, ...] = ()  # every symbol of the run (the one-hot channel order)
    warm_from: str | None = None  # the previous fold's folder: this fold starts from its weights (warm start)
    warm_epochs: int | None = None
    deterministic: bool = True
    grouped: bool = False  # may train in a grouped unit (the model's type decides whether it can)
    group_slots: int = 1  # models training at once in a grouped unit of this architecture

    @property
    def warm(self) -> bool:
        return self.warm_from is not None

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.model_name, self.seed, self.k)

    @property
    def symbol(self) -> str:
        return self.members[0].symbol

    @property
    def train_rows(self) -> int:
        return sum(m.spec.n_train for m in self.members)

    @property
    def chain(self) -> str:
        """The (symbol folder, model, seed) chain this fold belongs to: ``folds/.../<model>/*/seed-<s>``."""
        parts = self.folder.split("/")
        return "/".join(parts[:-2] + [parts[-1]])


@dataclass
class RunPlan:
    """A run's plan: the span, each symbol's fold rows, and every fold task in plan order."""

    symbols: list[str]
    span: Span
    folds: dict[str, list[FoldSpec]]  # symbol -> its fold rows (pooled: the blocks it took part in)
    tasks: list[FoldTask] = field(default_factory=list)
    pooled: bool = False

    @property
    def n_folds(self) -> int:
        """Folds of the plan: per symbol (the most any symbol has), or blocks of a pooled calendar."""
        return max((len(f) for f in self.folds.values()), default=0) if not self.pooled else \
            len({t.k for t in self.tasks})


def _for_symbol(symbol: str | None, fn):  # type: ignore[no-untyped-def]
    """Call ``fn``; in a universe a user error gets the symbol in front of its one line."""
    try:
        return fn()
    except WalkforwardError as err:
        if symbol is None:
            raise
        raise type(err)(f"{symbol}: {err}") from None


def _first_row(bars: pd.DataFrame, features: FeaturesConfig) -> int:
    """The first decision row with a full input window; an input the data lacks is one ConfigError line."""
    feats = feature_matrix(bars, features.inputs)
    unknown = [c for c in feats.columns if feats[c].isna().all()]
    if unknown:
        raise ConfigError(f"features.inputs: {', '.join(unknown)} is not available in this data (e.g. volume in a "
                          f"Date,Close file); remove it from features.inputs")
    return first_valid_row(feats, features.lookback)


def pooled_blocks(bars: dict[str, pd.DataFrame], rows: dict[str, int], span: Span, wf: WalkForwardConfig,
                  horizon: int) -> list[tuple[int, dict[str, FoldSpec]]]:
    """The pooled calendar: per block ``k`` of the span, each participating symbol's fold rows.

    A symbol takes part in block ``[t0, t1)`` when it has at least ``initial_train`` bars before ``t0`` and
    at least one decision bar in the block; its rows are those of a one-fold plan starting at its first
    row at or after ``t0`` (:func:`plan_folds`)."""
    out = []
    for t0, t1 in span.blocks(wf.step):
        specs: dict[str, FoldSpec] = {}
        for sym, b in bars.items():
            T = int(b.index.searchsorted(t0, side="left"))
            stop = min(int(b.index.searchsorted(t1, side="left")), len(b) - horizon)
            if T < wf.initial_train or stop <= T:
                continue
            one = wf.model_copy(update={"initial_train": T, "step": stop - T, "max_folds": 1})
            specs[sym] = replace(plan_folds(len(b), rows[sym], one, horizon)[0], k=len(out))
        if specs:
            out.append((len(out), specs))
    return out


def plan_run(cfg: Config, bars: dict[str, pd.DataFrame], universe: bool | None = None) -> RunPlan:
    """Every fold task of ``cfg`` over ``bars`` (symbol -> validated bars, listing order), in plan order.

    ``universe``: fold folders under ``folds/<SYMBOL>/`` and errors prefixed with the symbol (default:
    whether the config names a universe). Raises a one-line ConfigError/DataError before anything is
    written: an ``initial_train`` too long for a symbol, an input the data lacks, symbols ending on
    different bars, a fold with too few training rows.
    """
    universe = cfg.data.universe() is not None if universe is None else universe
    wf, fc = cfg.walkforward, cfg.features
    for sym, b in bars.items():
        _for_symbol(sym if universe else None, lambda: check_against_data(cfg, len(b)))
    rows = {sym: _for_symbol(sym if universe else None, lambda: _first_row(b, fc)) for sym, b in bars.items()}
    span = test_span(bars, wf, fc.horizon)
    symbols = list(bars)
    pooled = bool(fc.pooled) and universe
    from backtest.folds.units import group_cap

    slots = {name: group_cap(mcfg, fc, wf, n_inputs=len(fc.inputs) + (len(symbols) if pooled and fc.symbol_input == "onehot" else 0))
             for name, mcfg in cfg.models.items()}
    if pooled:
        blocks = pooled_blocks(bars, rows, span, wf, fc.horizon)
        folds = {s: [specs[s] for _, specs in blocks if s in specs] for s in symbols}
        planned = [("folds/", [(k, len(blocks), tuple(Member(s, f) for s, f in specs.items())) for k, specs in blocks])]
    else:
        folds, planned = {}, []
        for sym, b in bars.items():
            stop_row = int(b.index.searchsorted(span.stop))
            folds[sym] = _for_symbol(sym if universe else None,
                                     lambda: plan_folds(len(b), rows[sym], wf, fc.horizon, stop_row=stop_row))
            planned.append((f"folds/{symbol_safe(sym)}/" if universe else "folds/",
                            [(f.k, len(folds[sym]), (Member(sym, f),)) for f in folds[sym]]))
    tasks: list[FoldTask] = []  # by folder base (pooled: one), model, seed, fold
    for base, fold_members in planned:
        for name, mcfg in cfg.models.items():
            for seed in cfg.run.seeds:
                for k, n, members in fold_members:
                    warm = wf.warm_start and k > 0 and mcfg.type not in BASELINES
                    tasks.append(FoldTask(
                        model_name=name, model_cfg=mcfg, features=fc, k=k, seed=seed, members=members,
                        folder=f"{base}{name}/{k}/seed-{seed}", n_folds=n, pooled=pooled, universe=tuple(symbols),
                        warm_from=f"{base}{name}/{k - 1}/seed-{seed}" if warm else None,
                        warm_epochs=(wf.warm_start_epochs or max(1, mcfg.epochs // 3)) if warm else None,
                        deterministic=cfg.run.deterministic, grouped=wf.grouped, group_slots=slots[name]))
    return RunPlan(symbols, span, folds, tasks, pooled=pooled)


__all__ = ["BASELINES", "FoldSpec", "FoldTask", "Member", "RunPlan", "Span", "plan_folds", "plan_run",
           "pooled_blocks", "symbol_safe", "test_span"]
