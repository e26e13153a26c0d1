"""Overfitting diagnostics (backtest/overfitting.py) on cases with known answers."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from backtest.errors import ConfigError
from backtest.overfitting import model_confidence_set, pbo_cscv, spa_reality_check


def _noise(T: int = 1200, N: int = 10, seed: int = 1) -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(seed).normal(0, 0.01, (T, N)), columns=[f"c{i}" for i in range(N)])


def test_pbo_pure_noise_is_near_one_half() -> None:
    pbos = [pbo_cscv(_noise(seed=s), n_blocks=10).pbo for s in range(5)]
    assert 0.35 < float(np.mean(pbos)) < 0.65
    r = pbo_cscv(_noise(), n_blocks=10)
    assert r.n_splits == 252 and len(r.logits) == 252 and r.n_candidates == 10


def test_pbo_one_real_edge_is_near_zero() -> None:
    m = _noise()
    m["c3"] += 0.004  # Sharpe per bar 0.4: always best in and out of sample
    r = pbo_cscv(m, n_blocks=10)
    assert r.pbo is not None and r.pbo < 0.05
    assert r.prob_oos_loss == 0.0


def test_pbo_degenerate_inputs() -> None:
    assert pbo_cscv(_noise(T=10), n_blocks=8).pbo is None
    with pytest.raises(ConfigError, match="even"):
        pbo_cscv(_noise(), n_blocks=7)
    r = pbo_cscv(_noise(T=400), n_blocks=16, max_splits=200)
    assert r.n_splits == 200


def test_spa_and_rc_find_a_real_edge_and_not_noise() -> None:
    rejected = 0
    for s in range(10):  # under the null the p-values are uniform: few rejections at 5 %
        rng = np.random.default_rng(s)
        bench = pd.Series(rng.normal(0, 1, 600))
        noise = pd.DataFrame(rng.normal(0, 1, (600, 5)))
        r = spa_reality_check(bench, noise, benchmark="b", loss="l", reps=300)
        rejected += r.spa_p_consistent < 0.05
        assert r.rc_p >= r.spa_p_consistent - 1e-9  # RC is the conservative one
    assert rejected <= 2
    edge = noise.copy()
    edge[2] -= 0.5  # lower loss
    r = spa_reality_check(bench, edge, benchmark="b", loss="l", reps=300)
    assert r.spa_p_consistent < 0.01 and r.rc_p < 0.01 and r.best == "2"
    assert spa_reality_check(bench[:5], noise[:5], benchmark="b", loss="l").note


def test_mcs_keeps_the_best_and_drops_the_clearly_worse() -> None:
    rng = np.random.default_rng(4)
    losses = pd.DataFrame(rng.normal(1, 0.5, (500, 4)) ** 2, columns=list("abcd"))
    losses["d"] += 2.0
    r = model_confidence_set(losses, size=0.1, reps=300)
    assert "d" not in r.members and set(r.members) <= {"a", "b", "c"} and r.members
    assert set(r.pvalues) == set("abcd")


def test_pbo_with_flat_candidates_leaves_undefined_splits_out_and_round_trips() -> None:
    from backtest.overfitting import PBOResult
    from backtest.schema import build

    m = _noise(T=400, N=3)
    m.iloc[:200, :] = 0.0  # every candidate flat in the first half: splits with that half in sample choose nothing
    r = pbo_cscv(m, n_blocks=4)
    assert r.note and "left out" in r.note and None in r.is_perf and r.pbo is not None
    assert build(PBOResult, dataclasses.asdict(r)) == r  # the sweep's metrics.json reads it back
