"""Replay equals backtest: the paper ledger, fed one closed bar per cycle, reproduces ``walkforward run``.

The emulator serves the bundled history up to a clock that moves one bar per cycle.
After N cycles the ledger's equity (every portfolio) must equal the equity of
``run_forecasts`` + ``evaluate`` on the same bars with ``initial_train = T0`` and the
same step and seed, to rtol 1e-9; signals must be identical, fills must be
vectorbt's orders, and forecasts equal to float32 rounding (the backtest predicts a
fold's block in one batch, the paper trader one row at a time).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.config import BacktestConfig
from backtest.data.load import LoadedData, frame_sha256
from backtest.data.validate import ValidationReport, validate
from backtest.evaluate import evaluate
from backtest.paper.engine import PaperTrader
from backtest.paper.fills import buy_all, sell_all, value
from backtest.paper.ledger import Ledger, ts
from backtest.run import run_forecasts
from backtest.simulate import simulate
from backtest.folds.plan import plan_run
from tests.paper.helpers import T0, bar_close, make_config, no_sleep


def _replay(cfg, emu, source, n: int) -> PaperTrader:
    """One cycle per bar: the clock moves to the close of bar ``T0 + k``, and exactly that bar is processed."""
    trader = PaperTrader(cfg, fetch_sleep=no_sleep)
    for k in range(n):
        emu.now = bar_close(source, T0 + k)
        res = trader.cycle(emu.now)
        assert res.processed == [source.index[T0 + k]]
    return trader


def _backtest(cfg, bars: pd.DataFrame, out: Path, synthetic: pd.Series | None = None):
    """``walkforward run`` (``backtest.pipeline.run_all``: run_forecasts, then evaluate with the data's
    synthetic-bar mask) on ``bars``; ``synthetic`` = the repair's mask of those bars (None: all real)."""
    mask = None if synthetic is None else synthetic.reindex(bars.index, fill_value=False)
    data = LoadedData(bars, "1d", "emulator slice", ValidationReport("emulator slice"), frame_sha256(bars), mask)
    fr = run_forecasts(cfg, out, data=data)
    # the mask is passed as such: UniverseData.of_one keeps a LoadedData's report, not its explicit mask
    return fr, evaluate(cfg, fr.predictions, fr.data.bars, "1d",
                        synthetic=None if mask is None else {cfg.data.symbol: mask})


def _compare(trader: PaperTrader, cfg, source: pd.DataFrame, n: int, out: Path, *, forecast_rtol: float,
             synthetic: pd.Series | None = None):
    """Assert the ledger equals the backtest of ``source[: T0 + n]``; return the backtest's (forecasts, evaluation)."""
    bars = source.iloc[: T0 + n]  # row 0 = the account's origin; the last bar is the newest processed one
    fr, ev = _backtest(cfg, bars, out, synthetic)
    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        acct = ledger.account()
        assert acct.origin == source.index[0] and acct.first_bar == source.index[T0]
        assert ledger.check_invariants(acct) == []
        equity = ledger.equity_frame(acct)
        fc, sig, fills, trainings = (ledger.frame(t) for t in ("forecasts", "signals", "fills", "trainings"))

    # equity: every portfolio, every bar from the first decision to the newest close
    assert sorted(equity.columns) == sorted(ev.equity.columns)
    assert len(equity) == n
    pd.testing.assert_frame_equal(equity, ev.equity[equity.columns], rtol=1e-9, atol=0.0, check_freq=False,
                                  check_names=False)

    # signals: identical decisions for T0 .. J-1 (the ledger also has the pending one at J)
    wide = sig.pivot(index="bar_time", columns="portfolio", values="long").astype(bool)
    wide.index = pd.DatetimeIndex([ts(t) for t in wide.index])
    pd.testing.assert_frame_equal(wide.iloc[:-1][ev.signals[cfg.data.symbol].columns], ev.signals[cfg.data.symbol], check_names=False, check_freq=False)

    # forecasts: same folds, same numbers (float32 rounding of a batch of 1 vs a batch of `step`)
    fc["timestamp"] = pd.DatetimeIndex([ts(t) for t in fc["bar_time"]])
    mine = fc.set_index(["timestamp", "model"]).sort_index()
    theirs = fr.predictions.set_index(["timestamp", "model"]).sort_index()
    common = theirs.index
    assert len(common) == (n - 1) * len(acct.models)
    np.testing.assert_array_equal(mine.loc[common, "fold"].to_numpy(), theirs["fold"].to_numpy())
    np.testing.assert_allclose(mine.loc[common, "y_pred"].to_numpy(), theirs["y_pred"].to_numpy(),
                               rtol=forecast_rtol, atol=1e-9)

    # fills: vectorbt's orders, one for one
    orders = ev.simulations[cfg.data.symbol].portfolio.orders.records_readable
    assert len(fills) == len(orders) > 0
    o = orders.rename(columns={"Column": "portfolio"}).assign(bar_time=lambda d: [pd.Timestamp(t) for t in d["Timestamp"]])
    f = fills.assign(bar_time=[ts(t) for t in fills["bar_time"]])
    merged = f.merge(o, on=["bar_time", "portfolio"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all()
    np.testing.assert_allclose(merged["size"], merged["Size"], rtol=1e-12)
    np.testing.assert_allclose(merged["exec_price"], merged["Price"], rtol=1e-12)
    np.testing.assert_allclose(merged["fees"], merged["Fees"], rtol=1e-9)
    assert (merged["side"].str.capitalize() == merged["Side"]).all()

    # retraining: exactly the backtest's fold plan
    folds = plan_run(cfg, {cfg.data.symbol: bars}).folds[cfg.data.symbol]
    got = trainings[trainings["model"] == acct.models[0]][["fold", "train_start", "train_stop", "val_start",
                                                          "val_stop", "test_start"]]
    want = pd.DataFrame([(f.k, f.train_start, f.train_stop, f.val_start, f.val_stop, f.test_start) for f in folds],
                        columns=got.columns)
    pd.testing.assert_frame_equal(got.iloc[: len(want)].reset_index(drop=True), want)
    # ... plus, when the newest bar starts a fold, its training (the backtest has no target for that row yet)
    assert (got.iloc[len(want):]["test_start"] == T0 + n - 1).all() and len(got) - len(want) <= 1
    return fr, ev


def test_replay_equals_backtest(emu, source, tmp_path):
    """Linear + persistence, long/flat (with and without hysteresis), ensemble and baselines; 3 folds."""
    cfg = make_config(emu.url, tmp_path, step=20)
    n = 43
    trader = _replay(cfg, emu, source, n)
    _compare(trader, cfg, source, n, tmp_path / "runs", forecast_rtol=1e-5)
    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        acct = ledger.account()
        assert [p.label for p in acct.portfolios] == [
            "linear/long_flat", "persistence/long_flat", "linear/hyst", "persistence/hyst", "ens",
            "buy_and_hold", "always_flat", "sma_cross"]
        model_trades = ledger.conn.execute(
            "SELECT COUNT(*) FROM fills WHERE portfolio LIKE 'linear/%' OR portfolio = 'ens'").fetchone()[0]
    assert model_trades >= 2  # the model portfolios actually traded


def test_replay_equals_backtest_with_a_keras_model(emu, source, tmp_path):
    """One tiny LSTM (4 units, 2 epochs): trained in the paper account exactly as in the backtest."""
    models = {"lstm": {"type": "lstm", "units": 4, "epochs": 2, "batch_size": 32, "patience": 0}}
    strategies = {"long_flat": {"type": "long_flat", "threshold": 0.0}}
    cfg = make_config(emu.url, tmp_path, step=5, models=models, strategies=strategies, paper={"model": "lstm"})
    n = 11  # folds at T0, T0+5, T0+10 (the last one only in the paper account: its row has no target yet)
    trader = _replay(cfg, emu, source, n)
    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        assert ledger.account().models == ["lstm"]
        assert [r[0] for r in ledger.conn.execute("SELECT fold FROM trainings ORDER BY fold")] == [0, 1, 2]
    assert (trader.paths.folder / "folds" / "lstm" / "2" / "seed-0" / "model" / "model.keras").exists()
    # the backtest of the same config trades the same one model (paper.model); persistence is not traded
    bt = cfg.model_copy(update={"models": {"lstm": cfg.models["lstm"]}})
    _compare(trader, bt, source, n, tmp_path / "runs", forecast_rtol=1e-4)


def test_replay_of_a_repaired_gap_equals_backtest_and_never_trades_the_synthetic_bar(emu, source, tmp_path):
    """The exchange skips one daily bar; ``data.repair = "ffill"`` inserts it (close = previous close).

    On the inserted bar (2020-03-11, T0 + 10, also a retraining bar) the linear model's raw signal
    differs from the bar before, so without the mask ``linear/long_flat`` (and ``ens``) would trade at
    the open after the fake bar. The ledger must equal ``walkforward run`` on the same repaired bars
    (which holds every signal on a synthetic bar, ``strategies.signals.hold_on_synthetic``): no fill
    at that open, every portfolio keeps its previous bar's signal.
    """
    gap = T0 + 10  # 2020-03-11, missing on the exchange
    emu.set_frame(source.drop(index=source.index[gap]))
    cfg = make_config(emu.url, tmp_path, step=10, data={"repair": "ffill", "max_repair_fraction": 0.05})
    n = 12  # bars T0 .. T0 + 11 (the open after the fake bar is the newest one); folds at T0 and T0 + 10
    trader = PaperTrader(cfg, fetch_sleep=no_sleep)
    processed = []
    for k in range(n):
        emu.now = bar_close(source, T0 + k)
        processed += trader.cycle(emu.now).processed
    # at the close of the missing bar nothing is new; the next cycle processes the inserted bar and the real one
    assert processed == list(source.index[T0: T0 + n])

    # the same repair, by the same validation, of the bars the exchange served
    repaired, report = validate(source.drop(index=source.index[gap]).iloc[: T0 + n - 1], "1d", source="emulator",
                                repair="ffill", max_repair_fraction=0.05)
    assert repaired.index.equals(source.index[: T0 + n])
    assert report.synthetic is not None and list(repaired.index[report.synthetic.to_numpy()]) == [source.index[gap]]
    fr, ev = _compare(trader, cfg, repaired, n, tmp_path / "runs", forecast_rtol=1e-5, synthetic=report.synthetic)

    after = source.index[gap + 1]  # the open where an order decided on the fake bar would fill
    with Ledger.open(trader.paths.ledger, create=False) as ledger:
        fills = ledger.frame("fills")
        sig = ledger.frame("signals").pivot(index="bar_time", columns="portfolio", values="long").astype(bool)
    assert fills["bar_time"].map(ts).ne(after).all()
    sig.index = pd.DatetimeIndex([ts(t) for t in sig.index])
    pd.testing.assert_series_equal(sig.loc[source.index[gap]], sig.loc[source.index[gap - 1]], check_names=False)

    # the case is not vacuous: the same forecasts without the mask trade linear/long_flat at that open
    label = "linear/long_flat"
    naive = evaluate(cfg, fr.predictions, {cfg.data.symbol: repaired}, "1d")
    orders = naive.simulations[cfg.data.symbol].portfolio.orders.records_readable
    assert label in set(orders.loc[pd.to_datetime(orders["Timestamp"], utc=True) == after, "Column"])
    assert naive.signals[cfg.data.symbol].loc[source.index[gap], label] != naive.signals[cfg.data.symbol].loc[source.index[gap - 1], label]
    assert ev.signals[cfg.data.symbol].loc[source.index[gap], label] == ev.signals[cfg.data.symbol].loc[source.index[gap - 1], label]


@pytest.mark.parametrize("fees,slippage", [(0.001, 0.0005), (0.0, 0.0), (0.0075, 0.002)])
def test_fill_arithmetic_equals_vectorbt(fees, slippage):
    """buy_all / sell_all / value, stepped bar by bar, equal vectorbt's from_signals (size=inf, price=open)."""
    rng = np.random.default_rng(7)
    n, cols = 250, 6
    idx = pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC", name="timestamp")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.03, n)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.005, n))
    bars = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.01, "low": np.minimum(open_, close) * 0.99,
                         "close": close, "volume": 1.0}, index=idx)
    signals = pd.DataFrame(rng.random((n - 1, cols)) > 0.5, index=idx[:-1], columns=[f"c{j}" for j in range(cols)])
    costs = BacktestConfig(fees=fees, slippage=slippage, init_cash=1000.0)
    sim = simulate(signals, bars, costs, "1d")
    for col in signals.columns:
        pos, cash, eq = 0.0, 1000.0, []
        for i in range(n):
            if i > 0:
                want = bool(signals[col].iloc[i - 1])
                if want and pos == 0:
                    f = buy_all(cash, open_[i], fees, slippage)
                    pos, cash = f.position_after, f.cash_after
                elif not want and pos > 0:
                    f = sell_all(pos, cash, open_[i], fees, slippage)
                    pos, cash = f.position_after, f.cash_after
            eq.append(value(cash, pos, close[i]))
        np.testing.assert_allclose(eq, sim.equity[col].to_numpy(), rtol=1e-12, atol=0.0)
