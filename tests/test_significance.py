"""Tests of backtest.significance against published values and independent computations."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import integrate, stats

from backtest.errors import ConfigError
from backtest.significance import (
    EULER_MASCHERONI,
    bootstrap_sharpe_diff,
    deflated_sharpe_from_returns,
    deflated_sharpe_ratio,
    diebold_mariano,
    expected_max_sharpe,
    pesaran_timmermann,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
)


def _json_ok(d: dict) -> None:
    json.dumps(d)  # raises TypeError on numpy scalars / non-serialisable values
    for k, v in d.items():
        assert not isinstance(v, np.generic), (k, type(v))


# --------------------------------------------------------------------------- Deflated Sharpe ratio
# Bailey, D. H. & López de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for
# Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5),
# section "A numerical example": N = 100 trials, best annualised SR = 2.5 over T = 1250
# daily observations (5 years), variance of the annualised trial SRs V = 1/2, skewness -3,
# kurtosis 10.  The paper converts with 250 days a year: SR = 2.5 / sqrt(250) = 0.1581 per
# day, SR0 = sqrt(V / 250) * E[max Z] = 0.1132 per day (1.7894 annualised), and reports
# DSR = 0.9004, i.e. not significant at the 95 % level.
PAPER_SR_DAILY = 2.5 / math.sqrt(250)
PAPER_V_DAILY = 0.5 / 250


def test_dsr_paper_numerical_example():
    res = deflated_sharpe_ratio(
        PAPER_SR_DAILY,
        n_obs=1250,
        n_trials=100,
        sharpe_variance=PAPER_V_DAILY,
        skew=-3.0,
        kurtosis=10.0,
    )
    _json_ok(res)
    assert res["dsr"] == pytest.approx(0.9004, abs=5e-5)
    assert res["sr0"] == pytest.approx(0.1132, abs=5e-5)
    assert res["sr0"] * math.sqrt(250) == pytest.approx(1.7894, abs=5e-4)
    assert res["p_value"] == pytest.approx(1 - res["dsr"])
    assert "note" not in res


def test_dsr_example_derived_by_hand():
    # The same example written out step by step (eqs. of Bailey & López de Prado 2014):
    # E[max Z] ~ (1-g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))
    g = 0.5772156649015329
    e_max_z = (1 - g) * stats.norm.ppf(1 - 1 / 100) + g * stats.norm.ppf(1 - 1 / (100 * math.e))
    assert e_max_z == pytest.approx(2.5306, abs=1e-4)
    sr0 = math.sqrt(PAPER_V_DAILY) * e_max_z
    sr = PAPER_SR_DAILY
    z = (sr - sr0) * math.sqrt(1250 - 1) / math.sqrt(1 - (-3) * sr + (10 - 1) / 4 * sr**2)
    res = deflated_sharpe_ratio(
        sr, n_obs=1250, n_trials=100, sharpe_variance=PAPER_V_DAILY, skew=-3, kurtosis=10
    )
    assert EULER_MASCHERONI == pytest.approx(g, abs=1e-15)
    assert res["statistic"] == pytest.approx(z, rel=1e-12)
    assert res["dsr"] == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    # DSR is by definition PSR with the benchmark SR0.
    psr_at_sr0 = probabilistic_sharpe_ratio(
        sr, n_obs=1250, skew=-3, kurtosis=10, sr_benchmark=res["sr0"]
    )
    assert res["dsr"] == pytest.approx(psr_at_sr0, rel=1e-12)


def test_expected_max_formula_close_to_exact_expectation():
    # Bailey & López de Prado (2014, appendix) state the Euler-Mascheroni formula approximates
    # E[max of N iid N(0,1)]; compare with the exact integral N * int z phi(z) Phi(z)^(N-1) dz.
    for n in (10, 100, 1000):
        exact, _ = integrate.quad(
            lambda z: n * z * stats.norm.pdf(z) * stats.norm.cdf(z) ** (n - 1), -10, 10, limit=200
        )
        assert expected_max_sharpe(n, 1.0) == pytest.approx(exact, rel=0.03)
    assert expected_max_sharpe(1, 0.3) == 0.0  # no selection with a single trial
    assert expected_max_sharpe(50, 4.0) == pytest.approx(2 * expected_max_sharpe(50, 1.0))


def test_psr_normal_returns_hand_formula():
    # Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier", J. of Risk 15(2):
    # PSR(SR*) = Phi((SR - SR*) sqrt(n-1) / sqrt(1 - g3 SR + (g4-1)/4 SR^2)).  For normal
    # returns (g3 = 0, g4 = 3) with per-bar SR 0.1 over 250 bars:
    # z = 0.1 * sqrt(249) / sqrt(1 + 0.5 * 0.01) = 1.578 / 1.00250 = 1.57404
    z = 0.1 * math.sqrt(249) / math.sqrt(1.005)
    assert z == pytest.approx(1.57404, abs=1e-5)
    psr = probabilistic_sharpe_ratio(0.1, n_obs=250, skew=0.0, kurtosis=3.0)
    assert psr == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    assert psr == pytest.approx(0.94226, abs=1e-5)
    # PSR against its own SR is 1/2; negative skew and fat tails lower a positive PSR.
    assert probabilistic_sharpe_ratio(0.1, n_obs=250, skew=0, kurtosis=3, sr_benchmark=0.1) == 0.5
    assert probabilistic_sharpe_ratio(0.1, n_obs=250, skew=-3, kurtosis=10) < psr


def test_dsr_degenerate_inputs_give_nan_not_exceptions():
    for kwargs in (
        dict(n_obs=1, n_trials=10, sharpe_variance=0.01, skew=0, kurtosis=3),
        dict(n_obs=100, n_trials=0, sharpe_variance=0.01, skew=0, kurtosis=3),
        dict(n_obs=100, n_trials=10, sharpe_variance=float("nan"), skew=0, kurtosis=3),
        dict(n_obs=100, n_trials=10, sharpe_variance=0.01, skew=float("nan"), kurtosis=3),
    ):
        res = deflated_sharpe_ratio(0.1, **kwargs)
        assert math.isnan(res["dsr"]) and "note" in res
        _json_ok(res)
    res = deflated_sharpe_ratio(float("nan"), n_obs=100, n_trials=5, sharpe_variance=0.01,
                                skew=0, kurtosis=3)
    assert math.isnan(res["dsr"]) and "note" in res
    assert math.isnan(probabilistic_sharpe_ratio(0.1, n_obs=1, skew=0, kurtosis=3))


def test_deflated_sharpe_from_returns_matches_manual_computation():
    rng = np.random.default_rng(7)
    df = pd.DataFrame(rng.normal(0.0002, 0.01, size=(750, 25)), columns=[f"cfg{i}" for i in range(25)])
    df["cfg3"] += 0.002  # one configuration with a real edge
    sharpes = df.mean() / df.std(ddof=1)
    best = sharpes.idxmax()
    assert best == "cfg3"
    res = deflated_sharpe_from_returns(df, best)
    _json_ok(res)
    x = df[best].to_numpy()
    expected = deflated_sharpe_ratio(
        sharpes[best],
        n_obs=750,
        n_trials=25,
        sharpe_variance=float(np.var(sharpes.to_numpy(), ddof=1)),
        skew=float(stats.skew(x)),
        kurtosis=float(stats.kurtosis(x, fisher=False)),
    )
    for key in ("dsr", "sr0", "psr", "statistic", "sharpe"):
        assert res[key] == pytest.approx(expected[key], rel=1e-10)
    assert res["n_trials"] == 25 and res["n_obs"] == 750 and res["selected"] == "cfg3"
    # Pure noise: the best of many skill-less trials is not significant after deflation
    # although its undeflated PSR looks impressive.
    noise = pd.DataFrame(rng.normal(0, 0.01, size=(500, 50)))
    top = (noise.mean() / noise.std()).idxmax()
    r2 = deflated_sharpe_from_returns(noise, top)
    assert r2["psr"] > 0.9 and r2["dsr"] < 0.5
    with pytest.raises(ConfigError):
        deflated_sharpe_from_returns(df, "no-such-column")


def test_deflated_sharpe_from_returns_degenerate():
    df = pd.DataFrame({"a": np.ones(100), "b": np.zeros(100), "c": np.full(100, np.nan)})
    res = deflated_sharpe_from_returns(df, "a")
    assert math.isnan(res["dsr"]) and "note" in res
    _json_ok(res)


# --------------------------------------------------------------------------- Sharpe ratio
def test_sharpe_ratio_definition():
    r = np.array([0.01, -0.02, 0.015, 0.003, -0.004, 0.02])
    expected = r.mean() / r.std(ddof=1) * math.sqrt(365)
    assert sharpe_ratio(r, 365) == pytest.approx(expected, rel=1e-12)
    assert sharpe_ratio(pd.Series(np.r_[r, np.nan]), 365) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(sharpe_ratio(np.full(10, 0.01), 365))
    assert math.isnan(sharpe_ratio([0.01], 365))
    assert math.isnan(sharpe_ratio([], 365))


# --------------------------------------------------------------------------- Diebold-Mariano
def _errors(n=300, seed=3):
    rng = np.random.default_rng(seed)
    e_bench = rng.standard_t(5, size=n) * 1.1
    e_model = 0.6 * e_bench + rng.normal(scale=0.8, size=n)  # correlated, somewhat better
    return e_model, e_bench


def test_dm_h1_equals_one_sample_t_test():
    # For h = 1 the long-run variance is gamma_0 = sum (d - dbar)^2 / n and the HLN factor is
    # sqrt((n-1)/n), so DM* = dbar / (s_{ddof=1} / sqrt(n)): exactly the one-sample t statistic
    # of the loss differential, with Student-t(n-1) p-values (as R forecast::dm.test).
    e_model, e_bench = _errors()
    for power in (1, 2):
        d = np.abs(e_model) ** power - np.abs(e_bench) ** power
        ref = stats.ttest_1samp(d, 0.0)
        ref_less = stats.ttest_1samp(d, 0.0, alternative="less")
        res = diebold_mariano(e_model, e_bench, h=1, power=power)
        _json_ok(res)
        assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-10)
        assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-8)
        assert res["p_value_less"] == pytest.approx(ref_less.pvalue, rel=1e-8)
        assert res["mean_loss_diff"] == pytest.approx(d.mean(), rel=1e-12)
        assert res["n"] == 300 and res["h"] == 1


@pytest.mark.parametrize("h", [1, 2, 4, 6])
def test_dm_matches_ols_hac_uniform_kernel_with_hln(h):
    # Independent computation: regress d on a constant, HAC standard error with the *uniform*
    # (rectangular) kernel and maxlags = h-1, no small-sample df correction; this is
    # sqrt((gamma_0 + 2 sum_{k<h} gamma_k) / n), the DM denominator. Then the
    # Harvey-Leybourne-Newbold (1997) factor sqrt((n + 1 - 2h + h(h-1)/n) / n) by hand.
    rng = np.random.default_rng(11)
    n = 250
    # h-step errors are MA(h-1): build them from overlapping shocks.
    shocks = rng.normal(size=(n + h, 2))
    kern = np.ones(h)
    e_bench = np.convolve(shocks[:, 0], kern, mode="valid")[:n] * 1.2
    e_model = 0.7 * e_bench + np.convolve(shocks[:, 1], kern, mode="valid")[:n] * 0.6
    d = e_model**2 - e_bench**2
    fit = sm.OLS(d, np.ones(n)).fit(
        cov_type="HAC", cov_kwds={"maxlags": h - 1, "kernel": "uniform", "use_correction": False}
    )
    dm = fit.params[0] / fit.bse[0]
    hln = dm * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    res = diebold_mariano(e_model, e_bench, h=h)
    assert "note" not in res
    assert res["statistic"] == pytest.approx(hln, rel=1e-9)
    assert res["p_value"] == pytest.approx(2 * stats.t.sf(abs(hln), n - 1), rel=1e-8)
    assert res["p_value_less"] == pytest.approx(stats.t.cdf(hln, n - 1), rel=1e-8)


def test_dm_direction_and_symmetry():
    rng = np.random.default_rng(5)
    e_bench = rng.normal(scale=2.0, size=500)
    e_model = rng.normal(scale=1.0, size=500)
    res = diebold_mariano(e_model, e_bench)
    assert res["mean_loss_diff"] < 0 and res["p_value_less"] < 1e-6 and res["p_value"] < 1e-6
    rev = diebold_mariano(e_bench, e_model)
    assert rev["statistic"] == pytest.approx(-res["statistic"])
    assert rev["p_value"] == pytest.approx(res["p_value"])


def test_dm_drops_non_finite_pairs_and_degenerate_inputs():
    e_model, e_bench = _errors(50)
    m = e_model.copy()
    m[[3, 10]] = np.nan
    b = pd.Series(e_bench)
    b[20] = np.inf
    keep = np.ones(50, bool)
    keep[[3, 10, 20]] = False
    assert diebold_mariano(m, b) == diebold_mariano(e_model[keep], e_bench[keep])
    # identical forecasts: constant (zero) loss differential
    res = diebold_mariano(e_model, e_model)
    assert math.isnan(res["statistic"]) and math.isnan(res["p_value"]) and "note" in res
    assert res["mean_loss_diff"] == 0.0
    _json_ok(res)
    for a, b2 in (([], []), ([1.0], [2.0]), ([np.nan] * 5, [1.0] * 5)):
        r = diebold_mariano(a, b2)
        assert math.isnan(r["p_value"]) and "note" in r
    assert "note" in diebold_mariano(e_model[:4], e_bench[:4], h=4)
    # strongly negatively autocorrelated d with h = 2: gamma_0 + 2 gamma_1 < 0 -> nan
    a = np.where(np.arange(40) % 2 == 0, 0.5, -0.5)
    r = diebold_mariano(np.sqrt(1 + a), np.ones(40), h=2)
    assert math.isnan(r["statistic"]) and "long-run variance" in r["note"]
    with pytest.raises(ConfigError):
        diebold_mariano(e_model, e_bench, h=0)
    with pytest.raises(ValueError):
        diebold_mariano(e_model, e_bench[:-1])


# --------------------------------------------------------------------------- Pesaran-Timmermann
def test_pt_hand_computed_small_example():
    # Pesaran & Timmermann (1992), JBES 10(4): S = (P - P*) / sqrt(V(P) - V(P*)).
    y = [0.5, -0.2, 0.3, 0.1, -0.4, 0.2, -0.1, 0.6, -0.3, 0.4, 0.2, -0.5]
    x = [0.1, 0.1, 0.2, -0.3, -0.2, 0.1, 0.3, 0.2, -0.1, 0.1, -0.2, 0.1]
    # y up at 0,2,3,5,7,9,10 -> 7 of 12;  x up at 0,1,2,5,6,7,9,11 -> 8 of 12
    # same sign at 0,2,4,5,7,8,9 -> 7 hits of 12
    n = 12
    py, px, p_hat = 7 / 12, 8 / 12, 7 / 12
    p_star = py * px + (1 - py) * (1 - px)  # = 14/36 + 5/36 = 19/36
    assert p_star == pytest.approx(19 / 36)
    v_p = p_star * (1 - p_star) / n  # = (19/36)(17/36)/12
    v_pstar = (
        (2 * py - 1) ** 2 * px * (1 - px) / n  # (1/6)^2 (2/3)(1/3) / 12
        + (2 * px - 1) ** 2 * py * (1 - py) / n  # (1/3)^2 (7/12)(5/12) / 12
        + 4 * py * px * (1 - py) * (1 - px) / n**2  # 4 (7/12)(2/3)(5/12)(1/3) / 144
    )
    s = (p_hat - p_star) / math.sqrt(v_p - v_pstar)
    # numerically: P - P* = 2/36 = 0.055556, V(P) = 0.020769, V(P*) = 0.0042653 -> S = 0.43245
    assert s == pytest.approx(0.43245, abs=1e-4)
    res = pesaran_timmermann(y, x)
    _json_ok(res)
    assert res["n"] == 12
    assert res["hit_rate"] == pytest.approx(p_hat)
    assert res["expected_hit_rate"] == pytest.approx(p_star)
    assert res["statistic"] == pytest.approx(s, rel=1e-12)
    assert res["p_value"] == pytest.approx(1 - stats.norm.cdf(s), rel=1e-12)


def test_pt_asymptotically_equals_pearson_chi2_of_2x2_table():
    # PT (1992) note their statistic is asymptotically equivalent to the Pearson chi-square test
    # of independence in the 2x2 table of (realised up, predicted up); S^2 ~ chi2 for large n.
    rng = np.random.default_rng(2)
    y = rng.normal(size=4000)
    x = 0.3 * y + rng.normal(size=4000)
    res = pesaran_timmermann(y, x)
    table = pd.crosstab(y > 0, x > 0).to_numpy()
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    assert res["statistic"] ** 2 == pytest.approx(chi2, rel=0.01)


def test_pt_properties():
    rng = np.random.default_rng(9)
    y = rng.normal(size=500)
    perfect = pesaran_timmermann(y, y * 3.0)
    assert perfect["hit_rate"] == 1.0 and perfect["p_value"] < 0.01
    # independent forecasts: size close to nominal over many replications, never "tiny" p
    pvals = np.array(
        [pesaran_timmermann(rng.normal(size=300), rng.normal(size=300))["p_value"] for _ in range(300)]
    )
    assert 0.01 <= np.mean(pvals < 0.05) <= 0.10
    # one fixed independent draw (seed 0; p-values are U(0,1) under H0, this one is ~0.86)
    r0 = np.random.default_rng(0)
    one = pesaran_timmermann(r0.normal(size=300), r0.normal(size=300))
    assert one["p_value"] > 0.05
    # anti-skill: systematically wrong directions -> p-value near 1
    assert pesaran_timmermann(y, -y)["p_value"] > 0.99


def test_pt_degenerate_inputs():
    rng = np.random.default_rng(0)
    for y, x in (
        (np.ones(20), rng.normal(size=20)),  # realised always up
        (rng.normal(size=20), np.zeros(20)),  # forecasts never up
        ([], []),
        ([0.1, -0.1], [0.2, -0.3]),
    ):
        res = pesaran_timmermann(y, x)
        assert math.isnan(res["p_value"]) and math.isnan(res["statistic"]) and "note" in res
        _json_ok(res)


# --------------------------------------------------------------------------- bootstrap
def _returns(n=750, seed=1):
    rng = np.random.default_rng(seed)
    common = rng.normal(0.0, 0.02, size=n)
    r_bench = common + rng.normal(0.0003, 0.01, size=n)
    r_strat = 0.5 * common + rng.normal(0.0008, 0.01, size=n)
    idx = pd.date_range("2021-01-01", periods=n, freq="D")
    return pd.Series(r_strat, index=idx), pd.Series(r_bench, index=idx)


def test_bootstrap_deterministic_and_ci_contains_estimate():
    rs, rb = _returns()
    a = bootstrap_sharpe_diff(rs, rb, periods_per_year=365, n_boot=500, seed=123)
    b = bootstrap_sharpe_diff(rs, rb, periods_per_year=365, n_boot=500, seed=123)
    c = bootstrap_sharpe_diff(rs, rb, periods_per_year=365, n_boot=500, seed=124)
    _json_ok(a)
    assert a == b
    assert a["ci_low"] != c["ci_low"]
    expected = sharpe_ratio(rs, 365) - sharpe_ratio(rb, 365)
    assert a["sharpe_diff"] == pytest.approx(expected, rel=1e-12)
    assert a["ci_low"] < a["sharpe_diff"] < a["ci_high"]
    assert 0.0 <= a["p_value"] <= 1.0 and a["n_boot"] == 500 and a["block"] >= 1.0
    # a wider confidence level gives a wider interval from the same draws
    w = bootstrap_sharpe_diff(rs, rb, periods_per_year=365, n_boot=500, seed=123, ci=0.99)
    assert w["ci_low"] <= a["ci_low"] and w["ci_high"] >= a["ci_high"]
    # explicit block length is used as given
    k = bootstrap_sharpe_diff(rs, rb, periods_per_year=365, n_boot=200, block=10, seed=1)
    assert k["block"] == 10.0


def test_bootstrap_identical_series_and_clear_winner():
    rs, rb = _returns()
    same = bootstrap_sharpe_diff(rs, rs, periods_per_year=365, n_boot=300)
    assert same["sharpe_diff"] == 0.0 and same["ci_low"] == 0.0 and same["ci_high"] == 0.0
    assert same["p_value"] == 1.0  # every bootstrap difference is 0 <= 0: no evidence
    rng = np.random.default_rng(4)
    better = rb + 0.004 + rng.normal(0, 0.002, size=len(rb))
    win = bootstrap_sharpe_diff(better, rb, periods_per_year=365, n_boot=500)
    assert win["sharpe_diff"] > 0 and win["p_value"] < 0.01 and win["ci_low"] > 0
    lose = bootstrap_sharpe_diff(rb, better, periods_per_year=365, n_boot=500)
    assert lose["p_value"] > 0.99


def test_bootstrap_degenerate_inputs():
    rs, rb = _returns(100)
    for a, b in ((np.full(100, 0.001), rb), ([], []), ([0.01, 0.02], [0.0, 0.01])):
        res = bootstrap_sharpe_diff(a, b, periods_per_year=365, n_boot=50)
        assert math.isnan(res["p_value"]) and "note" in res
        _json_ok(res)
    with pytest.raises(ValueError):
        bootstrap_sharpe_diff(rs, rb[:-1], periods_per_year=365)
    with pytest.raises(ConfigError):
        bootstrap_sharpe_diff(rs, rb, periods_per_year=365, ci=1.5)
