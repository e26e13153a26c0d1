"""Warm start has an effect: fold k starts from fold k-1's saved weights (and, when off, it does not).

Data: the first 260 bundled BTC/USDT daily bars (2017-08-17 on); a tiny LSTM (4 units, 2 epochs, 1 warm
epoch), two folds of 30 test bars after 200 bars of history.
"""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from backtest.config import parse_config
from backtest.data.load import LoadedData, frame_sha256
from backtest.data.validate import ValidationReport
from backtest.run import run_forecasts


def _cfg(warm: bool):  # type: ignore[no-untyped-def]
    return parse_config({
        "features": {"lookback": 8},
        "walkforward": {"initial_train": 200, "step": 30, "max_folds": 2, "val_fraction": 0.1, "executor": "sequential",
                        "warm_start": warm, "warm_start_epochs": 1},
        "models": {"lstm": {"type": "lstm", "units": 4, "epochs": 2, "patience": 0, "batch_size": 64}},
        "strategies": {}, "run": {"name": "warm" if warm else "cold"},
    })


def _perturb_saved_weights(folder) -> None:  # type: ignore[no-untyped-def]
    """Overwrite the fold's saved Keras model with different weights (same architecture)."""
    import keras

    path = folder / "model" / "model.keras"
    model = keras.saving.load_model(path, compile=False, safe_mode=False)
    model.set_weights([w + 0.5 for w in model.get_weights()])
    model.save(path)


def _fold1(preds: pd.DataFrame) -> np.ndarray:
    return preds[(preds["model"] == "lstm") & (preds["fold"] == 1)]["y_pred"].to_numpy()


@pytest.mark.parametrize("warm", [True, False])
def test_fold_1_depends_on_fold_0_weights_only_with_warm_start(btc: pd.DataFrame, tmp_path, warm: bool) -> None:
    bars = btc.iloc[:260]
    data = LoadedData(bars, "1d", "test slice", ValidationReport("test slice", len(bars)), frame_sha256(bars))
    cfg = _cfg(warm)
    first = run_forecasts(cfg, tmp_path, data=data)
    before = _fold1(first.predictions)
    assert len(before) == 29  # test rows 230..258 (bar 259 has no next close)
    _perturb_saved_weights(first.run_dir / "folds" / "lstm" / "0" / "seed-0")
    shutil.rmtree(first.run_dir / "folds" / "lstm" / "1" / "seed-0")  # fold 1 is recomputed on resume; fold 0 is read back
    again = run_forecasts(cfg, tmp_path, data=data)
    assert again.resumed
    after = _fold1(again.predictions)
    if warm:
        assert not np.allclose(after, before, rtol=0, atol=1e-6)  # fold 1 started from fold 0's (changed) weights
    else:
        np.testing.assert_array_equal(after, before)  # a cold fold 1 never reads fold 0's weights
