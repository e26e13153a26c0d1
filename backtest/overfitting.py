"""Overfitting diagnostics over a sweep's grid: PBO by CSCV, Hansen's SPA, White's reality check, the MCS.

Every function takes out-of-sample per-bar series of the grid's candidates (rows: test bars, decision bar
``t``; columns: candidates) and returns plain data.

* :func:`pbo_cscv` -- the probability of backtest overfitting by combinatorially symmetric cross-validation
  (Bailey, Borwein, López de Prado and Zhu, 2015, "The probability of backtest overfitting", J. Comput.
  Finance). No maintained Python implementation is on the package index this project installs from, so it
  is written here (vectorised over the C(S, S/2) splits) and tested on the paper's two known cases: every
  candidate pure noise gives PBO near 0.5, one candidate with a real edge gives PBO near 0.
* :func:`spa_reality_check` -- Hansen's (2005) superior predictive ability test and White's (2000) reality
  check of the candidates against a benchmark, from :mod:`arch.bootstrap` (``SPA``, ``RealityCheck``;
  stationary bootstrap).
* :func:`model_confidence_set` -- Hansen, Lunde and Nason's (2011) model confidence set of the candidates on
  forecast losses, from :class:`arch.bootstrap.MCS`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from backtest.errors import ConfigError


@dataclass
class PBOResult:
    """CSCV over ``n_splits`` = C(S, S/2) splits of ``n_blocks`` = S row blocks of ``n_obs`` rows.

    ``pbo``: share of splits (those where some candidate has a defined in-sample Sharpe) whose in-sample best candidate ranks at or below the median out of sample
    (logit <= 0). ``logits``: ln(w / (1 - w)) per split, w = the in-sample best's out-of-sample rank / (N + 1).
    ``is_perf`` / ``oos_perf``: that candidate's in-sample and out-of-sample performance per split (per-bar
    Sharpe ratio, mean / std, not annualised; None where undefined, e.g. a portfolio flat all half long). ``slope``: least-squares slope of oos on is (degradation);
    ``prob_oos_loss``: share of splits where the in-sample best has a negative out-of-sample performance."""

    pbo: float | None
    n_blocks: int
    n_splits: int
    n_candidates: int
    n_obs: int
    logits: list[float | None] = field(default_factory=list)
    is_perf: list[float | None] = field(default_factory=list)
    oos_perf: list[float | None] = field(default_factory=list)
    slope: float | None = None
    prob_oos_loss: float | None = None
    note: str | None = None


def _sharpe_from_moments(s: np.ndarray, ss: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Per-bar Sharpe ratios (mean / sample std) from sums, sums of squares and counts; NaN where undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = (ss - n * mean ** 2) / (n - 1)
        sd = np.sqrt(np.where(var > 1e-300, var, np.nan))
        return mean / sd


def pbo_cscv(returns: pd.DataFrame | np.ndarray, n_blocks: int = 16, max_splits: int | None = None,
             seed: int = 0) -> PBOResult:
    """PBO of choosing the best of ``returns``' columns by in-sample Sharpe ratio (see :class:`PBOResult`).

    ``returns``: T x N per-bar out-of-sample returns (rows in time order; non-finite values count as 0, a
    bar without a position). The first ``T mod S`` rows are dropped so that the ``S = n_blocks`` blocks are
    equal. ``max_splits``: evaluate a random subset of that many splits (``seed``) when C(S, S/2) is larger
    (None: all of them; S = 16 gives 12,870). An even ``n_blocks`` >= 2 is required (ConfigError otherwise).
    """
    m = np.asarray(returns, dtype=float)
    if n_blocks < 2 or n_blocks % 2:
        raise ConfigError(f"pbo blocks = {n_blocks}: needs an even number >= 2")
    T, N = m.shape
    if N < 2 or T < 2 * n_blocks:
        return PBOResult(None, n_blocks, 0, N, T, note=f"needs >= 2 candidates and >= {2 * n_blocks} bars "
                                                       f"(has {N} and {T})")
    m = np.where(np.isfinite(m), m, 0.0)[T % n_blocks:]
    blocks = m.reshape(n_blocks, -1, N)
    s, ss = blocks.sum(axis=1), (blocks ** 2).sum(axis=1)  # S x N
    n = float(blocks.shape[1])
    combos = list(itertools.combinations(range(n_blocks), n_blocks // 2))
    if max_splits is not None and len(combos) > max_splits:
        pick = np.random.default_rng(seed).choice(len(combos), size=max_splits, replace=False)
        combos = [combos[i] for i in sorted(pick)]
    mask = np.zeros((len(combos), n_blocks), dtype=bool)
    for i, c in enumerate(combos):
        mask[i, list(c)] = True
    half = n * (n_blocks // 2)
    is_sr = _sharpe_from_moments(mask @ s, mask @ ss, np.full((len(combos), 1), half))
    oos_sr = _sharpe_from_moments((~mask) @ s, (~mask) @ ss, np.full((len(combos), 1), half))
    is_fill = np.where(np.isfinite(is_sr), is_sr, -np.inf)
    best = np.argmax(is_fill, axis=1)  # first of ties
    oos_fill = np.where(np.isfinite(oos_sr), oos_sr, -np.inf)
    ranks = np.array([rankdata(row)[b] for row, b in zip(oos_fill, best)])  # 1 = worst, N = best (ties: average)
    w = ranks / (N + 1)
    logits = np.log(w / (1 - w))
    rows = np.arange(len(combos))
    x, y = is_sr[rows, best], oos_sr[rows, best]
    ok = np.isfinite(x) & np.isfinite(y)
    slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() > 2 and np.ptp(x[ok]) > 0 else None
    chosen = np.isfinite(x)  # a split where no candidate has a defined in-sample Sharpe chooses nothing
    note = None if chosen.all() else (f"{int((~chosen).sum())} of {len(combos)} splits left out: no candidate has a "
                                      "defined in-sample Sharpe ratio there (flat or constant returns)")

    def opt(v: np.ndarray) -> list[float | None]:
        return [float(a) if np.isfinite(a) else None for a in v]

    return PBOResult(
        pbo=float(np.mean(logits[chosen] <= 0)) if chosen.any() else None, n_blocks=n_blocks, n_splits=len(combos),
        n_candidates=N, n_obs=int(m.shape[0]), logits=opt(np.where(chosen, logits, np.nan)), is_perf=opt(x),
        oos_perf=opt(y), slope=slope, prob_oos_loss=float(np.mean(y[ok] < 0)) if ok.any() else None, note=note)


@dataclass
class SPAResult:
    """Hansen's SPA and White's reality check of ``n_candidates`` against one benchmark on per-bar losses
    (lower is better). The null: no candidate has a lower expected loss than the benchmark; a small p-value
    says some candidate beats it. ``spa_p_*``: SPA's lower / consistent (Hansen's recommended) / upper
    p-values; ``rc_p``: the reality check's p-value (White's, non-studentised, not recentred)."""

    benchmark: str
    loss: str
    n_candidates: int
    n_obs: int
    spa_p_lower: float | None = None
    spa_p_consistent: float | None = None
    spa_p_upper: float | None = None
    rc_p: float | None = None
    best: str | None = None
    reps: int = 0
    block_size: float | None = None
    note: str | None = None


def _clean_losses(*frames: Any) -> list[np.ndarray]:
    arrays = [np.asarray(f, dtype=float) for f in frames]
    arrays = [a if a.ndim == 2 else a[:, None] for a in arrays]
    ok = np.all(np.isfinite(np.hstack(arrays)), axis=1)
    return [a[ok] for a in arrays]


def spa_reality_check(benchmark_loss: pd.Series, losses: pd.DataFrame, *, benchmark: str, loss: str,
                      reps: int = 1000, block_size: float | None = None, seed: int = 0) -> SPAResult:
    """SPA and RC p-values of ``losses`` (bars x candidates) against ``benchmark_loss`` (bars).

    Bars where any series is not finite are dropped. ``block_size``: mean block length of the stationary
    bootstrap (bars; default: arch's, the square root of the number of bars)."""
    from arch.bootstrap import SPA, RealityCheck

    b, m = _clean_losses(benchmark_loss, losses)
    res = SPAResult(benchmark=benchmark, loss=loss, n_candidates=m.shape[1], n_obs=len(b), reps=reps)
    if len(b) < 10 or m.shape[1] < 1:
        res.note = f"needs >= 10 bars with every loss finite (has {len(b)})"
        return res
    bs = int(round(block_size)) if block_size else None
    spa = SPA(b[:, 0], m, block_size=bs, reps=reps, seed=seed)
    spa.compute()
    rc = RealityCheck(b[:, 0], m, block_size=bs, reps=reps, seed=seed)
    rc.compute()
    p, q = spa.pvalues, rc.pvalues
    res.spa_p_lower, res.spa_p_consistent, res.spa_p_upper = (float(p["lower"]), float(p["consistent"]),
                                                              float(p["upper"]))
    res.rc_p = float(q["upper"])
    res.block_size = float(spa.block_size)
    res.best = str(losses.columns[int(np.argmin(m.mean(axis=0)))])
    return res


@dataclass
class MCSResult:
    """The model confidence set at ``size`` (e.g. 0.1: the set holds the best candidates with probability
    0.9) on per-bar losses: its ``members`` and every candidate's MCS p-value (``pvalues``)."""

    size: float
    loss: str
    members: list[str] = field(default_factory=list)
    pvalues: dict[str, float] = field(default_factory=dict)
    n_obs: int = 0
    reps: int = 0
    note: str | None = None


def model_confidence_set(losses: pd.DataFrame, *, size: float = 0.1, loss: str = "squared error",
                         reps: int = 1000, block_size: float | None = None, seed: int = 0) -> MCSResult:
    """The MCS of ``losses``' columns (bars x candidates), range statistic, stationary bootstrap."""
    from arch.bootstrap import MCS

    (m,) = _clean_losses(losses)
    res = MCSResult(size=size, loss=loss, n_obs=len(m), reps=reps)
    if losses.shape[1] < 2 or len(m) < 10:
        res.members = [str(c) for c in losses.columns]
        res.note = "fewer than 2 candidates or 10 bars: every candidate is in the set"
        return res
    frame = pd.DataFrame(m, columns=[str(c) for c in losses.columns])
    mcs = MCS(frame, size=size, reps=reps, block_size=int(round(block_size)) if block_size else None,
              method="R", seed=seed)
    mcs.compute()
    pv = mcs.pvalues.iloc[:, 0]
    res.pvalues = {str(k): float(v) for k, v in pv.items()}
    res.members = [str(c) for c in frame.columns if c in set(map(str, mcs.included))]
    return res


__all__ = ["MCSResult", "PBOResult", "SPAResult", "model_confidence_set", "pbo_cscv", "spa_reality_check"]
