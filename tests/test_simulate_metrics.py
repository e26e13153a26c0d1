"""Simulation against hand-computed equity, metrics against hand-computed values, strategies."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtest.config import BacktestConfig
from backtest.metrics import classification, regression
from backtest.simulate import defer_synthetic_fills, execution_positions, simulate, trades_table
from strategies.signals import long_flat, round_trip_cost


def bars_of(opens, closes) -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=len(opens), freq="1D", tz="UTC", name="timestamp")
    o, c = np.array(opens, float), np.array(closes, float)
    return pd.DataFrame({"open": o, "high": np.maximum(o, c) + 1, "low": np.minimum(o, c) - 1, "close": c, "volume": 1.0}, index=idx)


def test_equity_matches_hand_computation() -> None:
    bars = bars_of([100, 101, 104, 103, 99, 98], [101, 103, 102, 100, 98, 97])
    # decisions at the close of bars 0..4: long, long, flat, long, flat
    sig = pd.DataFrame({"s": [True, True, False, True, False]}, index=bars.index[:5])
    f, s, cash0 = 0.001, 0.0005, 1000.0
    sim = simulate(sig, bars, BacktestConfig(fees=f, slippage=s, init_cash=cash0), "1d")
    # by hand: buy at open[1]*(1+s) with all cash net of fees; sell at open[3]*(1-s); buy at open[4]; sell at open[5]
    p_buy1 = 101 * (1 + s)
    size1 = cash0 / (p_buy1 * (1 + f))
    eq = [cash0]  # bar 0: nothing executed yet
    eq.append(size1 * 103)  # bar 1 close
    eq.append(size1 * 102)  # bar 2 close (the flat decision at bar 2 executes at bar 3's open)
    cash = size1 * 103 * (1 - s) * (1 - f)  # sold at open[3]
    eq.append(cash)
    p_buy2 = 99 * (1 + s)
    size2 = cash / (p_buy2 * (1 + f))
    eq.append(size2 * 98)  # bar 4 close
    cash = size2 * 98 * (1 - s) * (1 - f)  # sold at open[5]
    eq.append(cash)
    np.testing.assert_allclose(sim.equity["s"].to_numpy(), eq, rtol=1e-10)
    assert sim.equity.index.equals(bars.index)


def test_signals_are_shifted_exactly_one_bar() -> None:
    bars = bars_of([1] * 5, [1] * 5)
    sig = pd.DataFrame({"a": [True, False, True, True]}, index=bars.index[:4])
    held = execution_positions(sig, bars)
    assert held["a"].tolist() == [False, True, False, True, True]


def test_a_fill_due_on_a_synthetic_bar_moves_to_the_next_real_open() -> None:
    """Bar 2 was inserted by the repair (open = high = low = close = close[1], volume 0). The long decided
    at the close of bar 1 would fill at bar 2's invented open (103 * (1 + s)); it must fill at the open of
    bar 3 (106, the next real bar), the sell decided at bar 3 at bar 4's open, and one fill is moved."""
    bars = bars_of([100, 101, 103, 106, 99, 98], [101, 103, 103, 104, 98, 97])
    bars.iloc[2] = [103.0, 103.0, 103.0, 103.0, 0.0]
    synthetic = pd.Series([False, False, True, False, False, False], index=bars.index)
    sig = pd.DataFrame({"s": [False, True, True, False, False], "flat": False}, index=bars.index[:5])
    f, s, cash0 = 0.001, 0.0005, 1000.0
    costs = BacktestConfig(fees=f, slippage=s, init_cash=cash0)
    sim = simulate(sig, bars, costs, "1d", synthetic=synthetic)
    trades = trades_table(sim)
    [trade] = trades[trades["portfolio"] == "s"].itertuples()
    assert trade.entry_time == bars.index[3] and trade.entry_price == pytest.approx(106 * (1 + s), rel=1e-12)
    assert trade.exit_time == bars.index[4] and trade.exit_price == pytest.approx(99 * (1 - s), rel=1e-12)
    assert sim.fills_moved == 1 and sim.fills_moved_by.to_dict() == {"s": 1, "flat": 0}
    assert sim.positions["s"].tolist() == [False, False, False, True, False, False]
    size = cash0 / (106 * (1 + s) * (1 + f))
    want = [cash0, cash0, cash0, size * 104, size * 99 * (1 - s) * (1 - f), size * 99 * (1 - s) * (1 - f)]
    np.testing.assert_allclose(sim.equity["s"].to_numpy(), want, rtol=1e-12)
    # without the mask the same signals buy at the synthetic open: the case is not vacuous
    naive = trades_table(simulate(sig, bars, costs, "1d"))
    assert naive.loc[naive["portfolio"] == "s", "entry_price"].item() == pytest.approx(103 * (1 + s), rel=1e-12)


def test_deferral_over_a_run_of_synthetic_bars_and_at_the_end() -> None:
    """Positions keep the previous bar's value over consecutive synthetic bars; a fill due on a synthetic
    last bar is not made (no real open to fill at) and still counts as moved."""
    idx = pd.date_range("2024-01-01", periods=6, freq="1D", tz="UTC")
    held = pd.DataFrame({"a": [False, True, True, True, False, False], "b": [False, False, False, False, False, True]},
                        index=idx)
    syn = pd.Series([False, True, True, False, False, True], index=idx)
    out, moved = defer_synthetic_fills(held, syn)
    assert out["a"].tolist() == [False, False, False, True, False, False]
    assert out["b"].tolist() == [False] * 6
    assert moved.to_dict() == {"a": 1, "b": 1}
    same, none = defer_synthetic_fills(held, None)
    assert same is held and none.sum() == 0


def test_round_trip_cost_and_long_flat_hysteresis() -> None:
    assert round_trip_cost(0.001, 0.0005) == pytest.approx(0.0030, abs=2e-6)
    fc = pd.Series([0.01, 0.004, 0.002, -0.001, 0.0005, 0.006])
    assert long_flat(fc, 0.003).tolist() == [True, True, False, False, False, True]
    # enter above 0.005, leave below 0.0: hold in between
    assert long_flat(fc, 0.0, entry_threshold=0.005, exit_threshold=0.0).tolist() == [True, True, True, False, False, True]


def test_classification_by_hand() -> None:
    y = np.array([0.1, -0.2, 0.3, 0.05, -0.1, -0.3, 0.2, 0.0])  # up: 1,0,1,1,0,0,1,0 (0.0 is not up)
    p = np.array([1, 1, 0, 1, 0, 1, 1, 0], bool)
    m = classification(y, p)
    # tp = 3 (idx 0,3,6), fp = 2 (idx 1,5), fn = 1 (idx 2), tn = 2 (idx 4,7)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 2, 1, 2)
    assert m["precision"] == pytest.approx(3 / 5) and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35) and m["accuracy"] == pytest.approx(5 / 8)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 4) / 2) and m["base_rate"] == 0.5
    mcc = (3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 4 * 3)
    assert m["mcc"] == pytest.approx(mcc) and m["support"] == 8


def test_regression_by_hand() -> None:
    y = np.array([0.01, -0.02])
    p = np.array([0.0, -0.01])
    c = np.array([100.0, 200.0])
    m = regression(y, p, c)
    assert m["mse"] == pytest.approx((0.01**2 + 0.01**2) / 2) and m["mae"] == pytest.approx(0.01)
    assert m["mse_ratio"] == pytest.approx(m["mse"] / ((0.01**2 + 0.02**2) / 2))
    price_err = np.array([100 - 100 * math.exp(0.01), 200 * math.exp(-0.01) - 200 * math.exp(-0.02)])
    assert m["price_mae"] == pytest.approx(np.abs(price_err).mean())


@pytest.mark.parametrize("timeframe,per_year", [("1d", 365), ("1h", 8760)])
def test_portfolio_stats_annualise_from_the_timeframe(timeframe: str, per_year: int) -> None:
    from backtest.metrics import portfolio_stats

    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 400)))
    idx = pd.date_range("2024-01-01", periods=400, freq=pd.Timedelta(timeframe), tz="UTC", name="timestamp")
    bars = pd.DataFrame({"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0}, index=idx)
    sig = pd.DataFrame({"bh": True}, index=idx[:-1])
    sim = simulate(sig, bars, BacktestConfig(), timeframe)
    st = portfolio_stats(sim.portfolio, "bh", float(per_year), sim.positions["bh"].iloc[1:])
    r = sim.equity["bh"].pct_change().dropna().to_numpy()
    assert st["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(per_year), rel=1e-9)
    assert st["volatility"] == pytest.approx(r.std(ddof=1) * math.sqrt(per_year), rel=1e-9)
    years = len(r) / per_year  # bars after the first, each one bar long
    assert st["cagr"] == pytest.approx((1 + st["total_return"]) ** (1 / years) - 1, rel=1e-6)


# --- verdicts, flags, flat Sharpe --------------------------------------------------------------
def test_a_higher_sharpe_is_not_beats_unless_the_test_rejects() -> None:
    from backtest.evaluate import sharpe_verdict
    from backtest.schema import SharpeDiffBootstrap

    higher_but_noise = SharpeDiffBootstrap(sharpe_diff=0.4, p_value_one_sided_better=0.24,
                                           p_value_one_sided_worse=0.76, p_value_two_sided=0.48)
    v = sharpe_verdict(higher_but_noise, 1.2, 0.8, 0.05)
    assert v.outcome == "not_distinguishable" and v.p_value == 0.48 and v.sided == "two-sided"
    assert v.text().startswith("not distinguishable from buy & hold") and "p = 0.480" in v.text()
    assert sharpe_verdict(SharpeDiffBootstrap(sharpe_diff=0.9, p_value_two_sided=0.01), 1.7, 0.8, 0.05).outcome == "beats"
    assert sharpe_verdict(SharpeDiffBootstrap(sharpe_diff=-0.9, p_value_two_sided=0.01), 0.1, 1.0, 0.05).outcome == "worse"
    # the level is the configured one
    assert sharpe_verdict(SharpeDiffBootstrap(sharpe_diff=0.9, p_value_two_sided=0.03), 1.7, 0.8, 0.01).outcome \
        == "not_distinguishable"
    undefined = sharpe_verdict(SharpeDiffBootstrap(sharpe_diff=None, note="a return series is constant"), 0.0, 0.8, 0.05)
    assert undefined.outcome == "undefined" and "constant" in undefined.text()


def test_forecast_verdict_uses_the_two_sided_dm_p_it_quotes() -> None:
    from backtest.evaluate import forecast_verdict
    from backtest.schema import DieboldMariano, RegressionMetrics

    dm = DieboldMariano(statistic=-1.2, p_value_two_sided=0.23, p_value_one_sided_model_better=0.115, mean_loss_diff=-1e-6)
    v = forecast_verdict(RegressionMetrics(mse_ratio=0.99), dm, 0.05)
    assert v.outcome == "not_distinguishable" and v.p_value == dm.p_value_two_sided
    assert forecast_verdict(RegressionMetrics(mse_ratio=0.9), DieboldMariano(p_value_two_sided=0.001, mean_loss_diff=-1e-4),
                            0.05).outcome == "beats"


def test_bootstrap_two_sided_p_is_twice_the_smaller_side() -> None:
    from backtest.significance import bootstrap_sharpe_diff

    rng = np.random.default_rng(3)
    b = rng.normal(0.0005, 0.02, 300)
    res = bootstrap_sharpe_diff(b + rng.normal(0, 0.01, 300), b, periods_per_year=365, n_boot=200, seed=0)
    assert res["p_value_two_sided"] == pytest.approx(min(1.0, 2 * min(res["p_value"], res["p_value_worse"])))
    assert res["p_value"] + res["p_value_worse"] >= 1.0 - 1e-12


def test_flags_and_flat_sharpe(btc: pd.DataFrame) -> None:
    from backtest.evaluate import flags_of
    from backtest.metrics import portfolio_stats
    from backtest.schema import PortfolioMetrics

    assert flags_of(PortfolioMetrics(trades=3, exposure=0.02), 10, 0.05) == [
        "few trades (3 < 10)", "low exposure (2.0% < 5%)"]
    assert flags_of(PortfolioMetrics(trades=12, exposure=0.5), 10, 0.05) == []
    bars = btc.iloc[:100]
    sig = pd.DataFrame({"flat": False, "bh": True}, index=bars.index[:-1])
    sim = simulate(sig, bars, BacktestConfig(), "1d")
    flat = portfolio_stats(sim.portfolio, "flat", 365.0, sim.positions["flat"].iloc[1:])
    assert flat["sharpe"] == 0.0 and flat["trades"] == 0 and flat["exposure"] == 0.0


def test_real_run_ranks_a_flat_portfolio_at_sharpe_zero_and_flags_it(tiny_real_run) -> None:
    m = tiny_real_run.evaluation.metrics
    flat = m.row("always_flat")
    assert flat.sharpe == 0.0 and any(f.startswith("few trades") for f in flat.flags)
    order = [r.portfolio for r in m.summary]
    for r in m.summary:
        if r.sharpe is not None and r.sharpe < 0:
            assert order.index(r.portfolio) > order.index("always_flat")
    assert m.row("buy_and_hold").verdict.outcome == "benchmark" and not m.row("buy_and_hold").flags
    for r in m.summary:  # a verdict says "beats" only with a rejecting test, whatever the point Sharpe
        if r.verdict.outcome == "beats":
            assert r.verdict.p_value < m.run.significance_level and r.sharpe > m.row("buy_and_hold").sharpe
    trials = [p for p in m.portfolios.values() if p.model is not None]
    assert m.deflated_sharpe.n_trials == len(trials) == len(m.deflated_sharpe.trials)
