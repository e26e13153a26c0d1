"""Walk-forward selection (backtest/selection.py): choices from earlier blocks only, stated rules, leakage."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.errors import ConfigError
from backtest.selection import Criterion, block_scores, choose, hindsight_best, parse_criterion, select, selected_rows


def _grid(n_blocks: int = 8, per_block: int = 10, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2020-01-01", periods=n_blocks * per_block, freq="D", tz="UTC")
    per_bar = pd.DataFrame(rng.normal(0, 1, (len(idx), 3)) ** 2, index=idx, columns=["a", "b", "c"])
    blocks = pd.Series(np.repeat(np.arange(n_blocks), per_block), index=idx)
    return per_bar, blocks


def test_choice_uses_only_earlier_blocks_and_stated_rules() -> None:
    per_bar, blocks = _grid()
    per_bar.loc[blocks.to_numpy() == 0, "b"] = 0.0  # b is best in block 0 only
    per_bar.loc[blocks.to_numpy() >= 1, "c"] = 0.0  # c is best from block 1 on
    crit = Criterion("mse", lookback=1, min_history=1)
    chosen = select(per_bar, blocks, crit)
    assert chosen[0] == "a"  # no history: the first grid point
    assert chosen[1] == "b"  # only block 0 known
    assert list(chosen[2:]) == ["c"] * 6  # last block: c
    # min_history 3: the first grid point for blocks 0..2
    assert list(select(per_bar, blocks, Criterion("mse", 1, 3))[:4]) == ["a", "a", "a", "c"]
    # lookback 0 = every earlier block: at block 2, b and c are both all zeros (a tie) -> b (earlier column)
    per_bar.loc[blocks.to_numpy() == 1, "b"] = 0.0
    per_bar.loc[blocks.to_numpy() == 0, "c"] = 0.0
    assert select(per_bar, blocks, Criterion("mse", 0, 1))[2] == "b"


def test_ties_and_undefined_scores() -> None:
    scores = pd.DataFrame({"a": [np.nan, 1.0, np.nan], "b": [np.nan, 1.0, np.nan], "c": [np.nan, np.nan, np.nan]})
    assert list(choose(scores, Criterion("mse"))) == ["a", "a", "a"]
    scores = pd.DataFrame({"a": [np.nan, np.nan], "b": [np.nan, 0.3]})
    assert list(choose(scores, Criterion("sharpe"))) == ["a", "b"]  # NaN ranks last, higher Sharpe wins


def test_leakage_garbage_after_block_k_changes_no_choice_at_or_before_k() -> None:
    per_bar, blocks = _grid(n_blocks=10)
    rets = per_bar - 1.0
    for crit, data in ((Criterion("mse", 0, 1), per_bar), (Criterion("mse", 2, 2), per_bar),
                       (Criterion("sharpe", 3, 1), rets)):
        base = select(data, blocks, crit)
        for k in range(10):
            junk = data.copy()
            after = blocks.to_numpy() > k
            rng = np.random.default_rng(k)
            junk.loc[after, :] = rng.choice([np.nan, np.inf, -1e9, 1e9], size=(int(after.sum()), 3))
            moved = select(junk, blocks, crit)
            assert list(moved[: k + 1]) == list(base[: k + 1]), (crit, k)
            # garbage in block k itself moves nothing at k either (its results are known only when it ends)
            junk.loc[blocks.to_numpy() == k, :] = 1e9
            assert select(junk, blocks, crit)[k] == base[k]
    # and the test can fail: garbage before block k does move choices
    base = select(per_bar, blocks, Criterion("mse", 0, 1))
    junk = per_bar.copy()
    junk.loc[blocks.to_numpy() == 0, base[1]] = 1e9
    assert select(junk, blocks, Criterion("mse", 0, 1))[1] != base[1]


def test_block_scores_window() -> None:
    per_bar, blocks = _grid(n_blocks=4, per_block=5)
    s = block_scores(per_bar, blocks, Criterion("mse", lookback=2))
    assert np.isnan(s.loc[0]).all()
    rows = (blocks >= 1) & (blocks < 3)
    assert s.loc[3, "b"] == pytest.approx(per_bar.loc[rows.to_numpy(), "b"].mean())


def test_selected_rows_take_the_chosen_candidate_per_block() -> None:
    per_bar, blocks = _grid(n_blocks=3, per_block=4)
    fc = {c: pd.DataFrame({"timestamp": per_bar.index, "y_pred": float(i)}) for i, c in enumerate("abc")}
    out = selected_rows(fc, blocks, pd.Series(["a", "c", "b"], index=[0, 1, 2]))
    assert list(out["y_pred"]) == [0.0] * 4 + [2.0] * 4 + [1.0] * 4
    assert list(out["chosen"].unique()) == ["a", "c", "b"]
    assert hindsight_best(per_bar, Criterion("mse")) in {"a", "b", "c"}


@pytest.mark.parametrize("text", ["mae", "mse:x", "mse:-1", "sharpe:2:0", "mse:1:2:3"])
def test_bad_criterion_is_one_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--select"):
        parse_criterion(text)


def test_parse_criterion_forms() -> None:
    assert parse_criterion("mse") == Criterion("mse", 0, 1)
    assert parse_criterion("Sharpe:6:3") == Criterion("sharpe", 6, 3)
