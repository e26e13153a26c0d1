"""The paper trader: one cycle processes every newly closed bar, in order, one transaction each.

A cycle (:meth:`PaperTrader.cycle`, ``walkforward paper run CONFIG --once``):

1. fetch the newest **closed** candles through ccxt and the Parquet cache
   (:func:`backtest.data.ccxt_source.update_cache`; ``now`` is the clock, or
   injected); nothing is written to the ledger if the exchange fails;
2. for each closed bar ``t`` not yet processed, in order:

   a. fill the order decided at the close of the previous bar at **this bar's
      open** (:mod:`backtest.paper.fills`: vectorbt's all-in/all-out rules,
      ``backtest.fees`` and ``backtest.slippage``) -- unless this bar is synthetic
      (inserted or price-replaced by ``data.repair = "ffill"``: its open never
      traded); then every pending order waits and fills at the open of the next
      real bar, as :func:`backtest.simulate.defer_synthetic_fills` does in the
      backtest, and the ledger records the bar as synthetic;
   b. value every portfolio at this bar's close (``cash + position * close``);
   c. retrain when the walk-forward schedule says so -- every
      ``walkforward.step`` bars from the first paper bar, with the
      :class:`~backtest.folds.plan.FoldSpec` that :func:`~backtest.folds.plan.plan_folds`
      computes for the fold starting at this bar (training rows
      ``t <= T - 1 - horizon``, validation tail with a gap, fold seed from the
      fold index ``k``) and the backtest's own executor protocol
      (:func:`~backtest.folds.execute.execute`, in this process), the fold stored
      under the account folder -- otherwise reuse the current model, read back
      with the one reader of a saved fold (:func:`~backtest.folds.store.read_saved_fold`);
   d. forecast ``r̂[t+1]`` and compute every portfolio's signal for the next bar
      with :func:`strategies.build.build_signals` (the backtest's own code: long/flat
      per model, ensembles, buy-and-hold, always-flat, SMA cross), then the backtest's
      :func:`strategies.signals.hold_on_synthetic`: on a bar that ``data.repair = "ffill"``
      inserted or price-replaced every portfolio keeps its previous signal (no order is
      decided on a synthetic bar);
   e. record a pending order where the signal changes the position, and write
      all of it in one SQLite transaction (:meth:`Ledger.write_bar`).

The engine window: row 0 is the account's ``origin`` bar, the first paper
decision is row ``T0 = paper.history`` (default ``walkforward.initial_train``).
Without ``data.start`` a new account starts at the newest closed bar with the
``T0`` bars before it as history; with ``data.start`` row 0 is the first bar at
or after it (and a new account catches up from row ``T0``). Replaying history,
the ledger therefore equals ``walkforward run`` on the window's bars with
``initial_train = T0``: same folds, seeds, forecasts, signals and fills.

Paper trading uses ``run.seeds[0]`` only, and trades every model of the config
unless ``paper.model`` names one (ensembles naming other models are then left
out). Candles always come through ccxt (``data.exchange``, ``symbol``,
``timeframe``, ``base_url``, ``cache_dir``), whatever ``data.source`` says;
``data.end`` and ``walkforward.max_folds`` do not apply.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import Config, check_against_data, identity_section
from backtest.data.cache import default_cache_dir
from backtest.data.frame import timeframe_delta
from backtest.errors import ConfigError, DataError, ExchangeError, LedgerError, RunDirError, WalkforwardError
from backtest.features import feature_matrix, first_valid_row
from backtest.paper.fills import buy_all, sell_all, value
from backtest.paper.hooks import crash_point
from backtest.paper.ledger import (
    Account, BarRecord, ForecastRow, Ledger, LedgerState, Portfolio, TrainingRow, iso,
)
from backtest.paper.logs import get_logger
from backtest.paper.paths import AccountPaths, account_paths
from backtest.folds.execute import execute
from backtest.folds.plan import BASELINES, FoldSpec, FoldTask, Member, plan_folds
from backtest.folds.store import FoldStore, read_saved_fold

Clock = Callable[[], pd.Timestamp]


def utc_now() -> pd.Timestamp:
    """The wall clock, UTC (the paper trader is the one module allowed to read it)."""
    return pd.Timestamp.now(tz="UTC")


def _utc(t: pd.Timestamp | str) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


# --------------------------------------------------------------------------- config -> setup
@dataclass
class PaperSetup:
    """What the paper account trades, derived from the config alone (no data, no network)."""

    engine: Config  # the config the walk-forward engine sees: traded models, initial_train = history, one seed
    history: int  # T0: bars of history before the first paper decision
    seed: int
    models: list[str]
    identity: dict[str, Any]  # everything that shapes a number of the account
    fingerprint: str
    dropped: list[str] = field(default_factory=list)  # ensemble strategies left out by paper.model

    @classmethod
    def from_config(cls, cfg: Config) -> "PaperSetup":
        if cfg.data.universe() is not None:
            raise ConfigError("paper trading takes one market: set data.symbol, not data.symbols or data.paths")
        T0 = cfg.paper.history if cfg.paper.history is not None else cfg.walkforward.initial_train
        seed = cfg.run.seeds[0]
        names = [cfg.paper.model] if cfg.paper.model else list(cfg.models)
        models = {n: cfg.models[n] for n in names}
        strategies, dropped = {}, []
        for sname, s in cfg.strategies.items():
            if s.type == "ensemble" and s.models and any(m not in models for m in s.models):
                dropped.append(sname)
                continue
            strategies[sname] = s
        wf = cfg.walkforward.model_copy(update={"initial_train": T0, "max_folds": None})
        run = cfg.run.model_copy(update={"seeds": [seed]})
        engine = cfg.model_copy(update={"models": models, "strategies": strategies, "walkforward": wf, "run": run})
        d = engine.model_dump(mode="json")
        identity = {
            "exchange": cfg.data.exchange, "symbol": cfg.data.symbol, "timeframe": cfg.data.timeframe,
            "start": cfg.data.start, "repair": cfg.data.repair,
            "features": identity_section("features", d["features"]),
            "walkforward": {k: v for k, v in d["walkforward"].items() if k not in ("executor", "workers", "max_folds")},
            "models": d["models"], "strategies": d["strategies"],
            "backtest": {k: d["backtest"][k] for k in ("fees", "slippage", "init_cash")},
            "seed": seed, "deterministic": d["run"]["deterministic"], "history": T0,
        }
        fp = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return cls(engine, T0, seed, names, identity, fp, dropped)

    def differences(self, acct: Account) -> list[str]:
        """How the config differs from the account (empty = the same account)."""
        old, new = acct.identity, self.identity
        out = []
        for key in ("exchange", "symbol", "timeframe"):
            if old.get(key) != new.get(key):
                out.append(f"{key} {old.get(key)!r} -> {new.get(key)!r}")
        so, sn = old.get("strategies", {}), new.get("strategies", {})
        if set(so) != set(sn) or any(so[k].get("type") != sn[k].get("type") for k in so if k in sn):
            out.append(f"strategy set {sorted(so)} -> {sorted(sn)}")
        elif so != sn:
            out.append("strategy parameters changed")
        mo, mn = old.get("models", {}), new.get("models", {})
        if set(mo) != set(mn):
            out.append(f"model set {sorted(mo)} -> {sorted(mn)}")
        elif mo != mn:
            out.append("model parameters changed")
        for key in sorted((set(old) | set(new)) - {"exchange", "symbol", "timeframe", "strategies", "models"}):
            if old.get(key) != new.get(key):
                out.append(f"{key} changed")
        if not out and acct.fingerprint != self.fingerprint:
            out.append("config fingerprint changed")
        return out


def portfolios_of(engine: Config) -> list[Portfolio]:
    """The portfolio labels ``build_signals`` makes for ``engine`` (one seed), in its order."""
    from strategies.build import build_signals

    idx = pd.date_range("2000-01-01", periods=3, freq="D", tz="UTC", name="timestamp")
    bars = pd.DataFrame(1.0, index=idx, columns=["open", "high", "low", "close", "volume"])
    preds = pd.DataFrame({"timestamp": [idx[0]] * len(engine.models), "model": list(engine.models),
                          "seed": engine.run.seeds[0], "fold": 0, "y_pred": 0.0})
    _, specs = build_signals(engine, preds, bars)
    return [Portfolio(s.label, s.model, s.strategy, s.strategy_type) for s in specs]


# --------------------------------------------------------------------------- results
@dataclass
class CycleResult:
    """What one cycle did."""

    account: str
    processed: list[pd.Timestamp]  # bars processed, in order
    trained: list[tuple[str, int, pd.Timestamp]]  # (model, fold, bar)
    newest_bar: pd.Timestamp | None  # newest closed bar seen
    equity: dict[str, float]  # after the last processed bar
    orders: dict[str, str]  # pending after the last processed bar
    created: bool = False

    def summary(self) -> str:
        """One line for the terminal."""
        if not self.processed:
            return f"paper {self.account}: no new closed bar (newest {self.newest_bar})"
        span = iso(self.processed[0]) if len(self.processed) == 1 else f"{iso(self.processed[0])} .. {iso(self.processed[-1])}"
        parts = [f"paper {self.account}: processed {len(self.processed)} bar(s) {span}"]
        if self.trained:
            parts.append("retrained " + ", ".join(f"{m} fold {k}" for m, k, _ in self.trained))
        if self.orders:
            parts.append("orders for the next open: " + ", ".join(f"{p} {s}" for p, s in self.orders.items()))
        return "; ".join(parts)


# --------------------------------------------------------------------------- the trader
class PaperTrader:
    """A paper account driven by a config.

    Args:
        cfg: the validated config.
        ledger_path: the SQLite ledger (default :func:`~backtest.paper.paths.account_paths`).
        root: folder of default ledgers (instead of ``$WALKFORWARD_PAPER_DIR`` or ``./paper``).
        new_account: on the first cycle, archive a ledger made by a different config and start fresh.
        fetch_sleep: back-off sleep between exchange retries (inject a no-op in tests).
    """

    def __init__(self, cfg: Config, *, ledger_path: str | os.PathLike[str] | None = None,
                 root: str | os.PathLike[str] | None = None, new_account: bool = False,
                 fetch_sleep: Callable[[float], None] = time.sleep, logger: logging.Logger | None = None) -> None:
        self.cfg = cfg
        self.paths: AccountPaths = account_paths(cfg, ledger_path=ledger_path, root=root)
        self.setup = PaperSetup.from_config(cfg)
        self.new_account = new_account
        self.fetch_sleep = fetch_sleep
        self.log = logger or get_logger()
        self.stop = threading.Event()  # set by SIGINT/SIGTERM: finish the current bar, then stop
        self._loaded: dict[str, tuple[int, Any]] = {}  # model -> (fold, SavedFold)
        self.bar = timeframe_delta(cfg.data.timeframe)
        if self.setup.dropped:
            self.log.warning("paper.model = %s: ensemble strategies %s name other models and are not traded",
                             cfg.paper.model, ", ".join(self.setup.dropped))
        if len(cfg.run.seeds) > 1:
            self.log.info("paper trading uses the first seed (%d) of run.seeds", self.setup.seed)
        if cfg.data.end:
            self.log.warning("data.end = %s is ignored: paper trading runs up to the newest closed candle", cfg.data.end)
        if cfg.walkforward.max_folds is not None:
            self.log.info("walkforward.max_folds is ignored: paper trading retrains every walkforward.step bars")

    # ----------------------------------------------------------------- start-up
    def preflight(self) -> None:
        """Checks of a new account that need no ledger, before any file is created: the exchange id,
        the symbol and timeframe (one ``load_markets`` request) and, with ``paper.sandbox_orders``,
        the sandbox and its API keys. Skipped once the ledger exists (its account was checked).

        Raises ConfigError (bad exchange id, symbol, timeframe or keys) or ExchangeError; writes nothing.
        """
        if self.paths.ledger.exists():
            return
        from backtest.data.ccxt_source import check_market

        d = self.cfg.data
        if self.cfg.paper.sandbox_orders:
            from backtest.paper.sandbox import open_sandbox

            open_sandbox(d)  # keys and sandbox URLs, no request
        check_market(d.exchange, d.symbol, d.timeframe or "", base_url=d.base_url, timeout_ms=d.timeout_ms,
                     max_retries=d.max_retries, sleep=self.fetch_sleep)

    # ----------------------------------------------------------------- cycle
    def cycle(self, now: pd.Timestamp | str | None = None) -> CycleResult:
        """Fetch, then process every closed bar not yet in the ledger (see the module docstring).

        Raises ExchangeError / DataError (exchange or candles; the ledger is unchanged), LedgerError
        (a different config, the candle history changed, another process), ConfigError.
        """
        now = _utc(now) if now is not None else utc_now()
        self.preflight()  # a bad exchange, symbol or key leaves no ledger, lock or log file
        with _account_lock(self.paths):
            ledger = Ledger.open(self.paths.ledger)
            try:
                return self._cycle(ledger, now)
            finally:
                ledger.close()

    def _cycle(self, ledger: Ledger, now: pd.Timestamp) -> CycleResult:
        acct = ledger.account()
        if acct is not None:
            diffs = self.setup.differences(acct)
            if diffs:
                if not self.new_account:
                    raise LedgerError(
                        f"{self.paths.ledger}: the config does not match paper account {acct.account!r} "
                        f"({'; '.join(diffs)}); use --new-account to archive this ledger and start a new account")
                ledger.close()
                archived = archive_account(self.paths)
                self.log.warning("config changed (%s): archived the old account as %s", "; ".join(diffs), archived)
                ledger.conn = Ledger.open(self.paths.ledger).conn  # the caller closes this one
                acct = None
                self._loaded.clear()
        self.new_account = False
        sandbox = None
        if self.cfg.paper.sandbox_orders:
            from backtest.paper.sandbox import open_sandbox

            sandbox = open_sandbox(self.cfg.data)
        frame, synthetic = self._fetch(acct, now)
        crash_point("after_fetch")
        created = acct is None
        if acct is None:
            acct = self._create_account(ledger, frame, synthetic)
        window = self._window(ledger, acct, frame)
        state = ledger.load_state(acct)
        start = acct.history if state.last_idx is None else state.last_idx + 1
        processed: list[BarRecord] = []
        for i in range(start, len(window)):
            if self.stop.is_set():
                self.log.info("stop requested: not starting bar %s", iso(window.index[i]))
                break
            rec = self._compute_bar(acct, window, i, state, synthetic)
            ledger.write_bar(acct, rec, expect_last=state.last_time)
            state.apply(rec)
            processed.append(rec)
            self._log_bar(rec)
        if sandbox is not None and processed and processed[-1].idx == len(window) - 1:
            self._send_sandbox(ledger, acct, sandbox, processed[-1])
        last = processed[-1] if processed else None
        return CycleResult(
            acct.account, [r.time for r in processed],
            [(t.model, t.fold, r.time) for r in processed for t in r.trainings],
            window.index[-1] if len(window) else None,
            dict(last.equity) if last else {}, dict(last.orders) if last else {}, created)

    # ----------------------------------------------------------------- data
    def _fetch(self, acct: Account | None, now: pd.Timestamp) -> tuple[pd.DataFrame, pd.Series | None]:
        """Closed candles from the account's origin (or enough history for a new account), validated,
        and the repair's synthetic-bar mask (:attr:`ValidationReport.synthetic`: True = a bar inserted
        or price-replaced by ``data.repair = "ffill"``, indexed by bar open time; None = nothing repaired)."""
        from backtest.data.ccxt_source import update_cache
        from backtest.data.validate import validate

        d = self.cfg.data
        if acct is not None:
            since = acct.origin
        elif d.start:
            since = _utc(pd.Timestamp(d.start))
        else:
            since = now - (self.setup.history + 3) * self.bar
        source = f"ccxt:{d.exchange}:{d.symbol}:{d.timeframe}"
        frame, new = update_cache(
            d.exchange, d.symbol, d.timeframe, cache_dir=Path(d.cache_dir) if d.cache_dir else default_cache_dir(),
            since=since, now=now, base_url=d.base_url, timeout_ms=d.timeout_ms, max_retries=d.max_retries,
            sleep=self.fetch_sleep,
        )
        if frame.empty:
            raise DataError(f"{source}: no closed candle since {iso(since)}")
        frame, report = validate(frame, d.timeframe, source=source, repair=d.repair,
                                 max_repair_fraction=d.max_repair_fraction, hint_style="config")
        if report.rows_changed:
            self.log.warning("%s: %s", source, report.describe())
        self.log.debug("%s: %d closed bars up to %s (%d new)", source, len(frame), iso(frame.index[-1]), new)
        return frame, report.synthetic

    def _create_account(self, ledger: Ledger, frame: pd.DataFrame, synthetic: pd.Series | None = None) -> Account:
        s, d = self.setup, self.cfg.data
        need = s.history + 1
        if len(frame) < need:
            raise DataError(f"ccxt:{d.exchange}:{d.symbol}:{d.timeframe}: {len(frame)} closed bars since "
                            f"{iso(frame.index[0])}; a new paper account needs {need} (paper.history or "
                            f"walkforward.initial_train = {s.history}, plus the first paper bar)")
        window = frame if d.start else frame.iloc[len(frame) - need:]
        check_against_data(s.engine, need)
        self._fold(window.iloc[:need], s.history)  # a fold plan that cannot train is a ConfigError now
        acct = Account(
            account=self.cfg.paper.account, exchange=d.exchange, symbol=d.symbol, timeframe=d.timeframe,
            portfolios=portfolios_of(s.engine), models=list(s.models), fingerprint=s.fingerprint,
            identity=s.identity, origin=window.index[0], first_bar=window.index[s.history], history=s.history,
            seed=s.seed, init_cash=float(s.engine.backtest.init_cash), fees=float(s.engine.backtest.fees),
            slippage=float(s.engine.backtest.slippage),
        )
        _claim_folder(self.paths, acct, self.log)
        ledger.create_account(acct, window.iloc[: s.history], synthetic)
        self.log.info("new paper account %r: %s %s %s, history %d bars from %s, first decision at the close of %s; "
                      "portfolios %s", acct.account, acct.exchange, acct.symbol, acct.timeframe, acct.history,
                      iso(acct.origin), iso(acct.first_bar), ", ".join(acct.labels))
        return acct

    def _window(self, ledger: Ledger, acct: Account, frame: pd.DataFrame) -> pd.DataFrame:
        """The engine window (row 0 = origin), checked against the candles the ledger already used."""
        window = frame.loc[frame.index >= acct.origin]
        if len(window) == 0 or window.index[0] != acct.origin:
            raise DataError(f"ccxt:{acct.exchange}:{acct.symbol}:{acct.timeframe}: the candles from the account's "
                            f"origin {iso(acct.origin)} are missing (first available "
                            f"{iso(window.index[0]) if len(window) else 'none'})")
        seen = ledger.window_bars(acct)
        n = min(len(seen), len(window))
        cols = ["open", "high", "low", "close"]
        if len(seen) > len(window) or not seen.index[:n].equals(window.index[:n]) or not np.allclose(
                seen[cols].to_numpy()[:n], window[cols].to_numpy()[:n], rtol=1e-12, atol=0.0):
            raise LedgerError(f"{self.paths.ledger}: the candles differ from those the ledger already used "
                              "(exchange history revised, or another cache); use --new-account to start afresh")
        return window

    # ----------------------------------------------------------------- one bar
    def _compute_bar(self, acct: Account, window: pd.DataFrame, i: int, state: LedgerState,
                     synthetic: pd.Series | None = None) -> BarRecord:
        t = window.index[i]
        o, h, lo, c, v = (float(x) for x in window.iloc[i][["open", "high", "low", "close", "volume"]])
        fake = (np.zeros(len(window), bool) if synthetic is None
                else synthetic.reindex(window.index, fill_value=False).astype(bool).to_numpy())
        rec = BarRecord(t, i, (o, h, lo, c, v), synthetic=bool(fake[i]))
        book = dict(state.book)
        for label in [x for x in acct.labels if x in state.pending]:
            decided, side = state.pending[label]
            j = window.index.get_indexer([decided])[0]
            if j < 0 or j >= i or not fake[j + 1: i].all():  # due at the first real bar after its decision
                raise LedgerError(f"{self.paths.ledger}: order of {label} decided at {iso(decided)} cannot be "
                                  f"filled at {iso(t)}")
            if rec.synthetic:  # no fill at an invented open: the order waits for the next real bar's open
                rec.waiting[label] = (decided, side)
                continue
            pos, cash = book[label]
            fill = (buy_all(cash, o, acct.fees, acct.slippage) if side == "buy"
                    else sell_all(pos, cash, o, acct.fees, acct.slippage))
            if fill is not None:
                book[label] = (fill.position_after, fill.cash_after)
                rec.fills.append((label, decided, fill))
        rec.book = book
        rec.equity = {label: value(cash, pos, c) for label, (pos, cash) in book.items()}

        bars = window.iloc[: i + 1]
        step = self.setup.engine.walkforward.step
        retrain = (i - acct.history) % step == 0
        for model in acct.models:
            if retrain:
                steps, training = self._train(acct, model, bars, i)
                rec.trainings.append(training)
                fold = training.fold
            else:
                current = state.current.get(model)
                if current is None:
                    raise LedgerError(f"{self.paths.ledger}: no trained {model} model for bar {iso(t)}")
                steps = self._predict(model, current, bars, i)
                fold = current.fold
            rec.forecasts.append(ForecastRow(model, acct.seed, fold, steps))
        if retrain:
            crash_point("after_train")

        signals = self._signals(acct, state, rec, bars, synthetic)
        rec.signals = signals
        for label in acct.labels:
            if label in rec.waiting:  # its order still waits for a real open (the signal was held: same side)
                continue
            long_now = book[label][0] > 0
            if signals[label] and not long_now:
                rec.orders[label] = "buy"
            elif not signals[label] and long_now:
                rec.orders[label] = "sell"
        return rec

    def _fold(self, bars: pd.DataFrame, i: int) -> FoldSpec:
        """The fold that starts at row ``i``, exactly as :func:`plan_folds` plans it for the backtest."""
        eng = self.setup.engine
        fc = eng.features
        first = first_valid_row(feature_matrix(bars, fc.inputs), fc.lookback)
        folds = plan_folds(i + 1 + fc.horizon, first, eng.walkforward, fc.horizon)
        if not folds or folds[-1].test_start != i:
            raise ConfigError(f"walkforward: no fold starts at row {i} (history {self.setup.history}, "
                              f"step {eng.walkforward.step})")
        return folds[-1]

    def _train(self, acct: Account, model: str, bars: pd.DataFrame, i: int) -> tuple[list[float], TrainingRow]:
        eng = self.setup.engine
        wf, fc = eng.walkforward, eng.features
        fold = self._fold(bars, i)
        mcfg = eng.models[model]
        warm = wf.warm_start and fold.k > 0 and mcfg.type not in BASELINES
        folder = f"folds/{model}/{fold.k}/seed-{acct.seed}"
        out_dir = self.paths.folder / folder
        self.log.info("retraining %s for fold %d at %s on rows %d..%d (%d training, %d validation)", model, fold.k,
                      iso(bars.index[i]), fold.train_start, fold.train_stop - 1, fold.n_train,
                      fold.val_stop - fold.val_start)
        task = FoldTask(
            model_name=model, model_cfg=mcfg, features=fc, k=fold.k, seed=acct.seed,
            members=(Member(acct.symbol, fold),), folder=folder, n_folds=fold.k + 1,
            warm_from=f"folds/{model}/{fold.k - 1}/seed-{acct.seed}" if warm else None,
            warm_epochs=(wf.warm_start_epochs or max(1, mcfg.epochs // 3)) if warm else None,
            deterministic=eng.run.deterministic, grouped=wf.grouped,  # trained as the backtest trains it
        )
        [result] = execute([task], {acct.symbol: bars}, FoldStore(self.paths.folder), "sequential")
        row = result.forecasts.iloc[-1]
        if pd.Timestamp(row["timestamp"]) != bars.index[i]:
            raise LedgerError(f"{out_dir}: fold forecast is for {row['timestamp']}, not {iso(bars.index[i])}")
        steps = [float(row[f"y_pred_h{h + 1}"]) for h in range(fc.horizon)]
        loss = result.best_val_loss
        training = TrainingRow(
            model=model, fold=fold.k, seed=acct.seed, bar_time=bars.index[i], train_start=fold.train_start,
            train_stop=fold.train_stop, val_start=fold.val_start, val_stop=fold.val_stop, test_start=fold.test_start,
            first_train_bar=bars.index[fold.train_start], last_train_bar=bars.index[fold.train_stop - 1],
            best_val_loss=None if loss is None or not np.isfinite(loss) else float(loss),
            path=os.path.relpath(out_dir, self.paths.ledger.parent), seconds=round(result.seconds, 3),
        )
        self._loaded.pop(model, None)
        return steps, training

    def _predict(self, model: str, current: TrainingRow, bars: pd.DataFrame, i: int) -> list[float]:
        """Forecast row ``i`` with the model of fold ``current.fold`` and its saved input transform
        (:func:`~backtest.folds.store.read_saved_fold`, the reader every consumer of a fold uses)."""
        fc = self.setup.engine.features
        loaded = self._loaded.get(model)
        if loaded is None or loaded[0] != current.fold:
            folder = self.paths.ledger.parent / current.path
            try:
                saved = read_saved_fold(folder)
            except RunDirError as exc:
                raise LedgerError(f"the {model} model of fold {current.fold} cannot be loaded ({exc})") from None
            loaded = (current.fold, saved)
            self._loaded[model] = loaded
        feats = feature_matrix(bars, fc.inputs).to_numpy()
        return [float(x) for x in loaded[1].forecast(feats, bars["close"].to_numpy(), i)]

    def _signals(self, acct: Account, state: LedgerState, rec: BarRecord, bars: pd.DataFrame,
                 synthetic: pd.Series | None = None) -> dict[str, bool]:
        """Every portfolio's desired position for the next bar: the backtest's ``build_signals``, then, as in
        :func:`backtest.evaluate.evaluate`, :func:`strategies.signals.hold_on_synthetic` (a bar the repair
        inserted or price-replaced keeps the previous bar's signal, so no order is decided on it); last row."""
        from strategies.build import build_signals
        from strategies.signals import hold_on_synthetic

        rows = state.forecasts + [{"timestamp": rec.time, "model": f.model, "seed": f.seed, "fold": f.fold,
                                   "y_pred": f.y_pred, "steps": f.steps} for f in rec.forecasts]
        preds = pd.DataFrame({"timestamp": pd.DatetimeIndex([r["timestamp"] for r in rows]),
                              "model": [r["model"] for r in rows], "seed": [r["seed"] for r in rows],
                              "fold": [r["fold"] for r in rows], "y_pred": [r["y_pred"] for r in rows]})
        horizon = self.setup.engine.features.horizon
        if horizon > 1:
            for h in range(horizon):
                preds[f"y_pred_h{h + 1}"] = [r["steps"][h] for r in rows]
        sig, _ = build_signals(self.setup.engine, preds, bars)
        sig = hold_on_synthetic(sig, synthetic)  # the backtest's rule, over the account's whole signal history
        if sig.index[-1] != rec.time or set(sig.columns) != set(acct.labels):
            raise LedgerError(f"{self.paths.ledger}: signals for {iso(rec.time)} do not match the account's portfolios")
        last = sig.iloc[-1]
        return {label: bool(last[label]) for label in acct.labels}

    def _log_bar(self, rec: BarRecord) -> None:
        fills = ", ".join(f"{p} {f.side} {f.size:.8g} @ {f.exec_price:.8g}" for p, _, f in rec.fills)
        orders = ", ".join(f"{p} {s}" for p, s in rec.orders.items())
        self.log.info("bar %s close %.8g: %s%s", iso(rec.time), rec.close,
                      f"filled {fills}" if fills else
                      "synthetic (repaired) bar, no fill at its open" if rec.synthetic else "no fills",
                      f"; orders for the next open: {orders}" if orders else "")

    def _send_sandbox(self, ledger: Ledger, acct: Account, exchange: Any, rec: BarRecord) -> None:
        """Send the newest decision of the first model portfolio to the sandbox (never during catch-up)."""
        from backtest.paper.sandbox import send_order

        label = next((p.label for p in acct.portfolios if p.model is not None), None)
        if label is None or label not in rec.orders:
            return
        side = rec.orders[label]
        pos, cash = rec.book[label]
        amount = pos if side == "sell" else cash / (rec.close * (1 + acct.slippage) * (1 + acct.fees))
        client_id = f"wf-{acct.fingerprint[:8]}-{int(rec.time.timestamp())}"
        status, order_id, error = send_order(exchange, acct.symbol, side, amount, client_id)
        ledger.record_sandbox_order(acct, rec.time, label, client_id, side, amount, status, order_id, error)
        if error:
            self.log.error("sandbox order %s %s %.8g %s failed: %s", label, side, amount, acct.symbol, error)
        else:
            self.log.info("sandbox order %s %s %.8g %s sent (id %s)", label, side, amount, acct.symbol, order_id)

    # ----------------------------------------------------------------- loop
    def next_wait(self, newest: pd.Timestamp | None, now: pd.Timestamp, failures: int = 0) -> float:
        """Seconds to sleep: until the bar after ``newest`` closes plus ``paper.delay_s``; sooner after failures."""
        bar_s = self.bar.total_seconds()
        if newest is None:
            seconds = min(60.0, bar_s)
        else:
            seconds = (newest + 2 * self.bar - now).total_seconds() + self.cfg.paper.delay_s
            if seconds <= 0:  # the exchange has not published the bar yet: poll again soon
                seconds = min(60.0, bar_s)
        if failures:
            seconds = min(seconds, min(300.0, 15.0 * 2 ** (failures - 1)))
        return seconds


def run_cycle(cfg: Config, *, now: pd.Timestamp | str | None = None, ledger_path: str | os.PathLike[str] | None = None,
              new_account: bool = False, fetch_sleep: Callable[[float], None] = time.sleep) -> CycleResult:
    """One cycle of the paper account of ``cfg`` (``walkforward paper run --once``)."""
    return PaperTrader(cfg, ledger_path=ledger_path, new_account=new_account, fetch_sleep=fetch_sleep).cycle(now)


@contextlib.contextmanager
def stop_on_signals(trader: PaperTrader) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM ask ``trader`` to stop after the bar it is writing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        trader.log.info("received %s: finishing the current bar, then stopping", signal.Signals(signum).name)
        trader.stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_loop(trader: PaperTrader, *, clock: Clock = utc_now, wait: Callable[[float], Any] | None = None,
             after_cycle: Callable[[pd.Timestamp, list[pd.Timestamp]], None] | None = None) -> int:
    """Cycle until SIGINT/SIGTERM: sleep until the next candle closes + ``paper.delay_s``, process, repeat.

    Exchange and candle errors are logged (one line) and retried on the next cycle; a config or
    ledger error stops the loop with status 2. A stop signal lets the current bar's transaction
    finish (or roll back), then returns 0. ``clock`` and ``wait`` are injectable for tests;
    ``after_cycle(now, bars processed)`` runs after every cycle, failed or not (notifications,
    :class:`backtest.paper.alerts.CycleAlerts`; it must not raise).
    """
    wait = wait or trader.stop.wait
    newest: pd.Timestamp | None = None
    failures = 0
    with stop_on_signals(trader):
        while not trader.stop.is_set():
            processed: list[pd.Timestamp] = []
            try:
                res = trader.cycle(clock())
                newest, failures, processed = res.newest_bar, 0, res.processed
                if res.processed:
                    trader.log.info("%s", res.summary())
            except (ExchangeError, DataError) as err:
                failures += 1
                trader.log.error("%s (ledger unchanged; retrying next cycle)", err)
            except WalkforwardError as err:
                trader.log.error("%s", err)
                return 2
            if after_cycle is not None:
                after_cycle(clock(), processed)
            if trader.stop.is_set():
                break
            seconds = trader.next_wait(newest, clock(), failures)
            trader.log.debug("next poll in %.0f s", seconds)
            wait(seconds)
    trader.log.info("stopped")
    return 0


# --------------------------------------------------------------------------- files
@contextlib.contextmanager
def _account_lock(paths: AccountPaths) -> Iterator[None]:
    """An exclusive, non-blocking lock on the account for the length of a cycle (POSIX ``flock``)."""
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: SQLite's own locking still guards each bar
        yield
        return
    with open(paths.lock, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LedgerError(f"{paths.ledger}: another paper process is running this account") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def archive_account(paths: AccountPaths) -> Path:
    """Rename the ledger (and the account folder) aside with a UTC time stamp; return the new ledger path."""
    import sqlite3

    stamp = _stamp()
    with contextlib.closing(sqlite3.connect(paths.ledger)) as conn:  # rolls back a hot journal, if any
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    dest = paths.ledger.with_name(f"{paths.folder.name}.{stamp}.archived{paths.ledger.suffix}")
    os.replace(paths.ledger, dest)
    if paths.folder.exists():
        os.replace(paths.folder, paths.folder.with_name(f"{paths.folder.name}.{stamp}.archived"))
    return dest


def _stamp() -> str:
    """Wall-clock UTC time stamp for archived file names."""
    return pd.Timestamp.now(tz="UTC").strftime("%Y%m%dT%H%M%S%fZ")


def _claim_folder(paths: AccountPaths, acct: Account, log: logging.Logger) -> None:
    """Make the account folder belong to ``acct``: a folder left by another account is moved aside.

    (Models in a folder from a crashed creation of the *same* account are reused; any other
    folder would feed the new account stale models.)
    """
    from backtest.atomic import write_json

    marker = paths.folder / "account.json"
    ident = {"fingerprint": acct.fingerprint, "origin": iso(acct.origin), "first_bar": iso(acct.first_bar)}
    if paths.folder.exists():
        try:
            same = json.loads(marker.read_text()) == ident
        except (OSError, ValueError):
            same = False
        if not same:
            stamp = _stamp()
            dest = paths.folder.with_name(f"{paths.folder.name}.{stamp}.stale")
            os.replace(paths.folder, dest)
            log.warning("moved a stale account folder aside to %s", dest)
    write_json(marker, ident)
