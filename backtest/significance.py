"""Statistical significance of out-of-sample forecasts and strategies.

Every function here is a pure function of numpy arrays / pandas Series and
returns either a float or a plain ``dict`` of Python floats and ints (JSON
serialisable; ``json.dumps`` writes NaN as ``NaN``). Where a quantity is not
defined -- too few observations, a constant series, a zero variance -- the
affected values are ``nan`` and the dict carries a ``"note"`` key saying why;
degenerate *data* never raises. Invalid *parameters* (``h < 1``, ``ci`` outside
(0, 1), an unknown column name ...) raise :class:`backtest.errors.ConfigError`
(a ``ValueError``), and paired series of different lengths raise ``ValueError``.

Non-finite values (NaN, +-inf) are dropped before testing; for paired inputs
a time step is dropped when either member is non-finite, so alignment is kept.

Contents
--------
* :func:`diebold_mariano` -- equal predictive accuracy of two forecasts
  (Diebold & Mariano 1995, with the Harvey, Leybourne & Newbold 1997
  small-sample correction).
* :func:`pesaran_timmermann` -- directional accuracy (Pesaran & Timmermann 1992).
* :func:`sharpe_ratio` -- annualised Sharpe ratio.
* :func:`bootstrap_sharpe_diff` -- stationary-bootstrap CI / p-value of a
  Sharpe difference (Politis & Romano 1994; block length by Politis & White
  2004 via :mod:`arch`).
* :func:`probabilistic_sharpe_ratio`, :func:`deflated_sharpe_ratio`,
  :func:`deflated_sharpe_from_returns` -- Bailey & López de Prado (2012, 2014).

Library pieces used: :func:`statsmodels.tsa.stattools.acovf` (autocovariances
of the loss differential), :mod:`scipy.stats` (Student-t and normal
distributions, sample skewness / kurtosis), :class:`arch.bootstrap.StationaryBootstrap`
and :func:`arch.bootstrap.optimal_block_length` (bootstrap).
"""
from __future__ import annotations

import math
from typing import Any, Hashable

import numpy as np
import pandas as pd
from scipy import stats

from backtest.errors import ConfigError

__all__ = [
    "EULER_MASCHERONI",
    "diebold_mariano",
    "pesaran_timmermann",
    "sharpe_ratio",
    "bootstrap_sharpe_diff",
    "probabilistic_sharpe_ratio",
    "expected_max_sharpe",
    "deflated_sharpe_ratio",
    "deflated_sharpe_from_returns",
    "adjust_pvalues",
    "CORRECTIONS",
]

#: Euler-Mascheroni constant (gamma), used by the expected-maximum formula.
EULER_MASCHERONI = 0.5772156649015329

_NAN = float("nan")


# --------------------------------------------------------------------------- helpers
def _as_1d(x: Any, name: str) -> np.ndarray:
    """``x`` as a 1-d float64 array (a Series' index is ignored)."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _paired(a: Any, b: Any, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned 1-d arrays with every time step where either is non-finite dropped."""
    x = _as_1d(a, name_a)
    y = _as_1d(b, name_b)
    if x.shape != y.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same length, got {x.size} and {y.size}"
        )
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _finite(a: Any, name: str) -> np.ndarray:
    x = _as_1d(a, name)
    return x[np.isfinite(x)]


def _f(v: Any) -> float:
    """A plain Python float (nan for None / non-finite-able input)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return _NAN


def _per_bar_sharpe(x: np.ndarray) -> float:
    """mean / std(ddof=1) of a finite 1-d array; nan when undefined."""
    if x.size < 2:
        return _NAN
    sd = float(np.std(x, ddof=1))
    mean = float(np.mean(x))
    # A series constant up to rounding has no defined Sharpe ratio.
    if not np.isfinite(sd) or sd <= 1e-12 * float(np.max(np.abs(x))):
        return _NAN
    return mean / sd


# --------------------------------------------------------------------------- Diebold-Mariano
def diebold_mariano(e_model: Any, e_bench: Any, *, h: int = 1, power: int = 2) -> dict:
    """Diebold-Mariano test of equal predictive accuracy, HLN-corrected.

    The loss of each forecast is ``|e| ** power`` (``power=2``: squared error,
    ``power=1``: absolute error) and the loss differential is
    ``d_t = |e_model_t|**power - |e_bench_t|**power``.

    **Null hypothesis** H0: ``E[d_t] = 0`` -- both forecasts are equally
    accurate. The long-run variance of ``d`` is
    ``gamma_0 + 2 * sum_{k=1}^{h-1} gamma_k`` with the sample
    autocovariances ``gamma_k`` (divisor ``n``, rectangular / uniform weights,
    as in Diebold & Mariano 1995 for ``h``-step forecasts whose errors are at
    most MA(h-1)). The statistic ``mean(d) / sqrt(lrv / n)`` is multiplied by
    the Harvey, Leybourne & Newbold (1997) factor
    ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` and compared with Student-t(n-1),
    exactly as R's ``forecast::dm.test``. For ``h = 1`` the result equals the
    one-sample t-test of ``d`` against 0.

    Parameters
    ----------
    e_model, e_bench : array-like
        Forecast errors (actual - forecast, in the units of the target, e.g.
        log-return) of the model and of the benchmark, aligned in time.
    h : int
        Forecast horizon in bars (>= 1).
    power : int
        Exponent of the loss function (> 0).

    Returns
    -------
    dict
        ``statistic`` (HLN-corrected DM statistic, dimensionless),
        ``p_value`` (two-sided, H1: accuracies differ),
        ``p_value_less`` (one-sided, H1: ``E[d] < 0``, the model is more
        accurate than the benchmark), ``mean_loss_diff`` (mean of ``d`` in
        loss units, i.e. target units ** power; negative favours the model),
        ``n`` (pairs used), ``h``; plus ``note`` when the test is undefined.

    References
    ----------
    Diebold, F. X. & Mariano, R. S. (1995). Comparing predictive accuracy.
    JBES 13(3), 253-263. Harvey, D., Leybourne, S. & Newbold, P. (1997).
    Testing the equality of prediction mean squared errors. IJF 13(2), 281-291.
    """
    if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
        raise ConfigError(f"diebold_mariano: h must be an integer >= 1, got {h!r}")
    if not (isinstance(power, (int, float, np.integer, np.floating)) and power > 0):
        raise ConfigError(f"diebold_mariano: power must be > 0, got {power!r}")
    h = int(h)
    e1, e2 = _paired(e_model, e_bench, "e_model", "e_bench")
    n = int(e1.size)
    out: dict[str, Any] = {
        "statistic": _NAN,
        "p_value": _NAN,
        "p_value_less": _NAN,
        "mean_loss_diff": _NAN,
        "n": n,
        "h": h,
    }
    if n == 0:
        out["note"] = "no finite error pairs"
        return out
    d = np.abs(e1) ** power - np.abs(e2) ** power
    dbar = float(np.mean(d))
    out["mean_loss_diff"] = dbar
    hln_num = n + 1 - 2 * h + h * (h - 1) / n
    if n < 3 or n <= h or hln_num <= 0:
        out["note"] = f"too few observations (n={n}) for horizon h={h}"
        return out
    from statsmodels.tsa.stattools import acovf

    gam = np.atleast_1d(acovf(d, adjusted=False, demean=True, fft=False, nlag=h - 1))
    # gamma_0 of a loss differential that is constant up to rounding is ~ (eps*|d|)^2.
    if not np.isfinite(gam[0]) or gam[0] <= (1e-12 * float(np.max(np.abs(d)))) ** 2:
        out["note"] = "loss differential is constant; the DM statistic is undefined"
        return out
    lrv = float(gam[0] + 2.0 * np.sum(gam[1:]))
    if not np.isfinite(lrv) or lrv <= 0:
        out["note"] = "non-positive long-run variance estimate of the loss differential"
        return out
    dm = dbar / math.sqrt(lrv / n)
    stat = dm * math.sqrt(hln_num / n)
    df = n - 1
    out["statistic"] = float(stat)
    out["p_value"] = float(2.0 * stats.t.sf(abs(stat), df))
    out["p_value_less"] = float(stats.t.cdf(stat, df))
    return out


# --------------------------------------------------------------------------- Pesaran-Timmermann
def pesaran_timmermann(y_true: Any, y_pred: Any) -> dict:
    """Pesaran-Timmermann (1992) nonparametric test of directional accuracy.

    A bar is "up" when its value is strictly > 0 (zero counts as not up).
    With ``P`` the hit rate (share of bars where the predicted and realised
    directions agree), ``py`` / ``px`` the shares of up moves in ``y_true`` /
    ``y_pred``, ``P* = py*px + (1-py)(1-px)`` the hit rate expected if
    forecasts and outcomes were independent,
    ``V(P) = P*(1-P*)/n`` and
    ``V(P*) = (2py-1)^2 px(1-px)/n + (2px-1)^2 py(1-py)/n + 4 py px (1-py)(1-px)/n^2``,
    the statistic is ``(P - P*) / sqrt(V(P) - V(P*))``, asymptotically N(0, 1).

    **Null hypothesis** H0: the predicted and realised directions are
    independent (no directional skill). The p-value is one-sided, H1:
    ``P > P*`` (the forecasts have directional skill).

    Parameters
    ----------
    y_true : array-like
        Realised values (e.g. per-bar returns); only their signs are used.
    y_pred : array-like
        Forecasts (or signals) aligned with ``y_true``; only signs are used.

    Returns
    -------
    dict
        ``statistic`` (standard normal units), ``p_value`` (one-sided),
        ``hit_rate`` (P, a fraction in [0, 1]), ``expected_hit_rate`` (P*),
        ``n``; plus ``note`` when the test is undefined (e.g. every realised
        or every predicted direction is the same).

    References
    ----------
    Pesaran, M. H. & Timmermann, A. (1992). A simple nonparametric test of
    predictive performance. JBES 10(4), 461-465.
    """
    y, x = _paired(y_true, y_pred, "y_true", "y_pred")
    n = int(y.size)
    out: dict[str, Any] = {
        "statistic": _NAN,
        "p_value": _NAN,
        "hit_rate": _NAN,
        "expected_hit_rate": _NAN,
        "n": n,
    }
    if n == 0:
        out["note"] = "no finite observation pairs"
        return out
    up_y = y > 0
    up_x = x > 0
    p_hat = float(np.mean(up_y == up_x))
    py = float(np.mean(up_y))
    px = float(np.mean(up_x))
    p_star = py * px + (1.0 - py) * (1.0 - px)
    out["hit_rate"] = p_hat
    out["expected_hit_rate"] = p_star
    if n < 3:
        out["note"] = f"too few observations (n={n})"
        return out
    v_p = p_star * (1.0 - p_star) / n
    v_pstar = (
        (2 * py - 1) ** 2 * px * (1 - px) / n
        + (2 * px - 1) ** 2 * py * (1 - py) / n
        + 4 * py * px * (1 - py) * (1 - px) / n**2
    )
    var = v_p - v_pstar
    if py in (0.0, 1.0) or px in (0.0, 1.0) or not var > 0:
        out["note"] = (
            "realised or predicted directions are all the same; "
            "the PT statistic is undefined"
        )
        return out
    s = (p_hat - p_star) / math.sqrt(var)
    out["statistic"] = float(s)
    out["p_value"] = float(stats.norm.sf(s))
    return out


# --------------------------------------------------------------------------- Sharpe ratios
def sharpe_ratio(returns: Any, periods_per_year: float) -> float:
    """Annualised Sharpe ratio ``mean / std(ddof=1) * sqrt(periods_per_year)``.

    ``returns`` are per-bar simple returns (fractions, e.g. 0.01 = 1 %), taken
    as excess returns (no risk-free rate is subtracted). ``periods_per_year``
    is the number of bars in a year (365 for daily crypto bars, 8760 hourly).
    Returns nan for fewer than 2 finite returns or a constant series. This is
    a point estimate, not a test (see :func:`probabilistic_sharpe_ratio`).

    Reference: Sharpe, W. F. (1994). The Sharpe ratio. JPM 21(1), 49-58;
    Lo, A. W. (2002). The statistics of Sharpe ratios. FAJ 58(4), 36-52.
    """
    if not (periods_per_year > 0):
        raise ConfigError(f"sharpe_ratio: periods_per_year must be > 0, got {periods_per_year!r}")
    sr = _per_bar_sharpe(_finite(returns, "returns"))
    return float(sr * math.sqrt(periods_per_year)) if np.isfinite(sr) else _NAN


def _sharpe_diff_stat(rs: np.ndarray, rb: np.ndarray) -> np.ndarray:
    return np.array([_per_bar_sharpe(rs) - _per_bar_sharpe(rb)])


def _default_block(rs: np.ndarray, rb: np.ndarray) -> float:
    """Politis-White (2004) optimal stationary-bootstrap block length (via
    :func:`arch.bootstrap.optimal_block_length`), the larger of the two series'
    estimates, clipped to [1, n/2]; ``n ** (1/3)`` when it cannot be estimated."""
    n = rs.size
    fallback = float(max(1.0, n ** (1.0 / 3.0)))
    try:
        from arch.bootstrap import optimal_block_length

        with np.errstate(all="ignore"):
            est = optimal_block_length(np.column_stack([rs, rb]))["stationary"].to_numpy(float)
        est = est[np.isfinite(est)]
        if est.size == 0:
            return fallback
        block = float(np.max(est))
    except Exception:  # degenerate input inside arch (e.g. constant series)
        return fallback
    return float(min(max(block, 1.0), max(1.0, n / 2.0)))


def bootstrap_sharpe_diff(
    r_strategy: Any,
    r_benchmark: Any,
    *,
    periods_per_year: float,
    n_boot: int = 2000,
    block: float | None = None,
    seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Stationary-bootstrap inference on the difference of two Sharpe ratios.

    The paired per-bar returns ``(r_strategy_t, r_benchmark_t)`` are resampled
    *jointly* with the stationary bootstrap of Politis & Romano (1994)
    (:class:`arch.bootstrap.StationaryBootstrap`: blocks of geometric length
    with mean ``block``), which keeps the time alignment and the cross- and
    auto-correlation of the two series. On each resample the annualised
    Sharpe difference is recomputed.

    **Null hypothesis** H0: ``SR_strategy <= SR_benchmark``. ``p_value`` is the
    share of bootstrap differences ``<= 0`` (the percentile-bootstrap p-value
    of the one-sided test, H1: the strategy has the higher Sharpe ratio); the
    confidence interval is the equal-tailed percentile interval.

    Parameters
    ----------
    r_strategy, r_benchmark : array-like
        Per-bar simple returns (fractions), aligned in time (same length).
    periods_per_year : float
        Bars per year, for annualisation (``sqrt(periods_per_year)``).
    n_boot : int
        Bootstrap replications.
    block : float or None
        Expected block length in bars; ``None``: the Politis & White (2004)
        estimate from :func:`arch.bootstrap.optimal_block_length` (falling back
        to ``n ** (1/3)``).
    seed : int
        Seed of the numpy Generator; the result is deterministic given it.
    ci : float
        Confidence level of the interval, in (0, 1).

    Returns
    -------
    dict
        ``sharpe_diff`` (annualised strategy minus benchmark Sharpe),
        ``ci_low``, ``ci_high`` (annualised), ``p_value`` (one-sided, H1: strategy
        better), ``p_value_worse`` (one-sided, H1: strategy worse: share of
        differences ``>= 0``), ``p_value_two_sided`` (2 x the smaller of the
        two, capped at 1), ``n_boot`` (finite
        replications used), ``block`` (expected block length, bars),
        ``sharpe_strategy``, ``sharpe_benchmark`` (annualised), ``n``;
        plus ``note`` where undefined.

    References
    ----------
    Politis, D. N. & Romano, J. P. (1994). The stationary bootstrap. JASA
    89(428), 1303-1313. Politis, D. N. & White, H. (2004). Automatic
    block-length selection for the dependent bootstrap. Econometric Reviews
    23(1), 53-70. Ledoit, O. & Wolf, M. (2008). Robust performance hypothesis
    testing with the Sharpe ratio. J. Empirical Finance 15(5), 850-859.
    """
    if not (periods_per_year > 0):
        raise ConfigError(
            f"bootstrap_sharpe_diff: periods_per_year must be > 0, got {periods_per_year!r}"
        )
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"bootstrap_sharpe_diff: n_boot must be an integer >= 1, got {n_boot!r}")
    if not (0.0 < ci < 1.0):
        raise ConfigError(f"bootstrap_sharpe_diff: ci must lie in (0, 1), got {ci!r}")
    if block is not None and not (block >= 1):
        raise ConfigError(f"bootstrap_sharpe_diff: block must be >= 1, got {block!r}")
    rs, rb = _paired(r_strategy, r_benchmark, "r_strategy", "r_benchmark")
    n = int(rs.size)
    ann = math.sqrt(periods_per_year)
    sr_s = _per_bar_sharpe(rs)
    sr_b = _per_bar_sharpe(rb)
    out: dict[str, Any] = {
        "sharpe_diff": _f((sr_s - sr_b) * ann),
        "ci_low": _NAN,
        "ci_high": _NAN,
        "p_value": _NAN,
        "p_value_worse": _NAN,
        "p_value_two_sided": _NAN,
        "n_boot": 0,
        "block": _NAN,
        "sharpe_strategy": _f(sr_s * ann),
        "sharpe_benchmark": _f(sr_b * ann),
        "n": n,
    }
    if n < 3:
        out["note"] = f"too few observations (n={n})"
        return out
    if not (np.isfinite(sr_s) and np.isfinite(sr_b)):
        out["note"] = "a return series is constant; its Sharpe ratio is undefined"
        return out
    blk = float(block) if block is not None else _default_block(rs, rb)
    out["block"] = blk
    from arch.bootstrap import StationaryBootstrap

    bs = StationaryBootstrap(blk, rs, rb, seed=np.random.default_rng(seed))
    with np.errstate(all="ignore"):
        diffs = bs.apply(_sharpe_diff_stat, reps=int(n_boot))[:, 0] * ann
    diffs = diffs[np.isfinite(diffs)]
    out["n_boot"] = int(diffs.size)
    if diffs.size == 0:
        out["note"] = "no bootstrap replication had a defined Sharpe difference"
        return out
    if diffs.size < n_boot:
        out["note"] = (
            f"{n_boot - diffs.size} bootstrap replications with a constant resample were dropped"
        )
    alpha = 1.0 - ci
    lo, hi = np.quantile(diffs, [alpha / 2.0, 1.0 - alpha / 2.0])
    out["ci_low"] = float(lo)
    out["ci_high"] = float(hi)
    out["p_value"] = float(np.mean(diffs <= 0.0))
    out["p_value_worse"] = float(np.mean(diffs >= 0.0))
    out["p_value_two_sided"] = float(min(1.0, 2.0 * min(out["p_value"], out["p_value_worse"])))
    return out


# --------------------------------------------------------------------------- PSR / DSR
def probabilistic_sharpe_ratio(
    sharpe: float,
    *,
    n_obs: int,
    skew: float,
    kurtosis: float,
    sr_benchmark: float = 0.0,
) -> float:
    """Probabilistic Sharpe Ratio: ``P[true SR > sr_benchmark]``.

    ``PSR = Phi((SR - SR*) * sqrt(n_obs - 1) / sqrt(1 - skew*SR + (kurtosis-1)/4 * SR^2))``
    with ``SR`` and ``SR*`` **per-bar** (not annualised) Sharpe ratios,
    ``skew`` the skewness and ``kurtosis`` the *non-excess* kurtosis (3 for
    normal returns) of the per-bar returns.

    **Null hypothesis** H0: true SR <= ``sr_benchmark``; ``1 - PSR`` is the
    one-sided p-value. Returns a probability in [0, 1], nan when undefined
    (``n_obs < 2``, non-finite input, or a non-positive variance term).

    Reference: Bailey, D. H. & López de Prado, M. (2012). The Sharpe ratio
    efficient frontier. Journal of Risk 15(2), 3-44 (eq. for PSR); the
    variance term is from Mertens (2002).
    """
    z = _psr_z(sharpe, n_obs=n_obs, skew=skew, kurtosis=kurtosis, sr_benchmark=sr_benchmark)
    return float(stats.norm.cdf(z)) if np.isfinite(z) else _NAN


def _psr_z(sharpe, *, n_obs, skew, kurtosis, sr_benchmark) -> float:
    vals = [_f(sharpe), _f(n_obs), _f(skew), _f(kurtosis), _f(sr_benchmark)]
    if not all(np.isfinite(vals)) or vals[1] < 2:
        return _NAN
    sr, t, g3, g4, sr_star = vals
    var_term = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr**2
    if not var_term > 0:
        return _NAN
    return (sr - sr_star) * math.sqrt(t - 1.0) / math.sqrt(var_term)


def expected_max_sharpe(n_trials: float, sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe estimates whose
    true value is 0 and variance ``sharpe_variance`` (Bailey & López de Prado
    2014, eq. for SR0; Euler-Mascheroni approximation):
    ``sqrt(V) * ((1-g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))``.

    Same units as the Sharpe ratios whose variance is given (per bar in this
    module). ``n_trials == 1`` gives 0 (no selection); invalid input gives nan.
    """
    n = _f(n_trials)
    v = _f(sharpe_variance)
    if not np.isfinite(n) or n < 1:
        return _NAN
    if n == 1:
        return 0.0
    if not np.isfinite(v) or v < 0:
        return _NAN
    g = EULER_MASCHERONI
    z = (1.0 - g) * stats.norm.ppf(1.0 - 1.0 / n) + g * stats.norm.ppf(1.0 - 1.0 / (n * math.e))
    return float(math.sqrt(v) * z)


def deflated_sharpe_ratio(
    sharpe: float,
    *,
    n_obs: int,
    n_trials: int,
    sharpe_variance: float,
    skew: float,
    kurtosis: float,
) -> dict:
    """Deflated Sharpe Ratio (Bailey & López de Prado 2014).

    DSR is the PSR of the selected strategy with the benchmark set to
    ``SR0``, the expected maximum Sharpe ratio among ``n_trials`` independent
    trials of zero true Sharpe ratio whose estimates have variance
    ``sharpe_variance`` (see :func:`expected_max_sharpe`).

    **Null hypothesis** H0: the selected strategy's true Sharpe ratio is no
    better than the best of ``n_trials`` skill-less trials (true SR <= SR0).
    ``p_value = 1 - dsr``; DSR > 0.95 rejects at 5 %.

    Parameters (all Sharpe ratios **per bar**, NOT annualised)
    ----------
    sharpe : float
        Per-bar Sharpe ratio of the selected strategy.
    n_obs : int
        Number of per-bar returns behind ``sharpe``.
    n_trials : int
        Number of (independent) strategy configurations tried, the selected
        one included.
    sharpe_variance : float
        Variance across the trials of their per-bar Sharpe ratios.
    skew, kurtosis : float
        Skewness and non-excess kurtosis (normal = 3) of the selected returns.

    Returns
    -------
    dict
        ``dsr`` (probability), ``sr0`` (expected maximum per-bar Sharpe under
        H0), ``psr`` (PSR against 0, i.e. without deflation), ``statistic``
        (the z-score inside the DSR), ``p_value`` (1 - dsr), ``sharpe``,
        ``n_obs``, ``n_trials``; plus ``note`` where undefined.

    Reference: Bailey, D. H. & López de Prado, M. (2014). The deflated Sharpe
    ratio: correcting for selection bias, backtest overfitting and
    non-normality. Journal of Portfolio Management 40(5), 94-107.
    """
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    z = _psr_z(sharpe, n_obs=n_obs, skew=skew, kurtosis=kurtosis, sr_benchmark=sr0)
    dsr = float(stats.norm.cdf(z)) if np.isfinite(z) else _NAN
    out: dict[str, Any] = {
        "dsr": dsr,
        "sr0": _f(sr0),
        "psr": probabilistic_sharpe_ratio(
            sharpe, n_obs=n_obs, skew=skew, kurtosis=kurtosis, sr_benchmark=0.0
        ),
        "statistic": _f(z),
        "p_value": _f(1.0 - dsr),
        "sharpe": _f(sharpe),
        "n_obs": int(n_obs) if np.isfinite(_f(n_obs)) else n_obs,
        "n_trials": int(n_trials) if np.isfinite(_f(n_trials)) else n_trials,
    }
    if not np.isfinite(dsr):
        reasons = []
        if not np.isfinite(sr0):
            reasons.append("SR0 undefined: too few trials with a defined Sharpe ratio to estimate their variance "
                           "(needs at least 2; the variance measures how much selecting the best inflates it)")
        if not np.isfinite(_f(sharpe)):
            reasons.append("the selected portfolio's Sharpe ratio is undefined (constant returns: it never trades, "
                           "or too few bars)")
        if not (_f(n_obs) >= 2):
            reasons.append(f"too few observations ({n_obs} bars; needs at least 2)")
        out["note"] = "; ".join(reasons) or "PSR variance term is not positive"
    return out


def deflated_sharpe_from_returns(returns_by_trial: pd.DataFrame, selected: Hashable) -> dict:
    """DSR of ``selected`` among all the strategies tried, from their returns.

    ``returns_by_trial`` holds per-bar simple returns, one column per trial
    (every configuration tried, the selected one included). The per-bar Sharpe
    ratio (``ddof=1``) of each column is computed on its finite values; their
    variance (``ddof=1``) across trials with a defined Sharpe ratio is
    ``sharpe_variance``; ``n_trials`` is the number of columns; skewness and
    non-excess kurtosis of the selected column are the plug-in sample moments
    (:func:`scipy.stats.skew`, :func:`scipy.stats.kurtosis` with
    ``fisher=False``). Then :func:`deflated_sharpe_ratio` is applied.

    **Null hypothesis** as in :func:`deflated_sharpe_ratio`. Treats the trials
    as independent; correlated trials overstate the effective ``n_trials``
    (conservative). Returns the :func:`deflated_sharpe_ratio` dict plus
    ``selected``, ``skew``, ``kurtosis`` and ``sharpe_variance``.

    Reference: Bailey & López de Prado (2014), JPM 40(5), 94-107.
    """
    if not isinstance(returns_by_trial, pd.DataFrame):
        returns_by_trial = pd.DataFrame(returns_by_trial)
    if selected not in returns_by_trial.columns:
        raise ConfigError(
            f"deflated_sharpe_from_returns: selected column {selected!r} is not among the trials"
        )
    sharpes = np.array(
        [_per_bar_sharpe(_finite(returns_by_trial[c].to_numpy(), str(c)))
         for c in returns_by_trial.columns],
        dtype=float,
    )
    n_trials = int(returns_by_trial.shape[1])
    finite_sr = sharpes[np.isfinite(sharpes)]
    var = float(np.var(finite_sr, ddof=1)) if finite_sr.size >= 2 else _NAN
    x = _finite(returns_by_trial[selected].to_numpy(), str(selected))
    sr = _per_bar_sharpe(x)
    if x.size >= 3 and np.isfinite(sr):
        g3 = float(stats.skew(x, bias=True))
        g4 = float(stats.kurtosis(x, fisher=False, bias=True))
    else:
        g3 = g4 = _NAN
    res = deflated_sharpe_ratio(
        sr,
        n_obs=int(x.size),
        n_trials=n_trials,
        sharpe_variance=0.0 if n_trials == 1 else var,
        skew=g3,
        kurtosis=g4,
    )
    notes = [res.pop("note")] if "note" in res else []
    if finite_sr.size < n_trials:
        notes.append(f"{n_trials - finite_sr.size} trial(s) with an undefined Sharpe ratio")
    if not np.isfinite(g3) and np.isfinite(sr):
        notes.append("too few observations for skewness / kurtosis")
    res.update(
        {
            "selected": selected if isinstance(selected, (str, int, float)) else str(selected),
            "skew": g3,
            "kurtosis": g4,
            "sharpe_variance": var,
        }
    )
    if notes:
        res["note"] = "; ".join(notes)
    return res


#: Multiple-testing corrections applied over the symbols of a run (statsmodels ``multipletests`` method names).
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh"}


def adjust_pvalues(p_values: list[float | None]) -> dict[str, list[float]]:
    """Holm (family-wise error) and Benjamini-Hochberg (false discovery rate) adjusted p-values of one family,
    with statsmodels ``multipletests``; an undefined p (None, NaN) counts as 1."""
    from statsmodels.stats.multitest import multipletests

    p = np.array([1.0 if v is None or not np.isfinite(_f(v)) else float(v) for v in p_values], dtype=float)
    if p.size == 0:
        return {k: [] for k in CORRECTIONS}
    return {k: [float(x) for x in multipletests(p, alpha=0.05, method=m)[1]] for k, m in CORRECTIONS.items()}
