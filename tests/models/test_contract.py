"""One contract every registered forecaster keeps (scikit-learn's estimator checks, in small)."""
from __future__ import annotations

import numpy as np
import pytest

from models import BASELINE_TYPES, MODEL_TYPES, make_forecaster
from models.base import Forecaster, NotFittedError

TINY = {"units": 4, "epochs": 2, "patience": 1, "batch_size": 32}
TINY_CNN = {"filters": 4, "epochs": 2, "patience": 1, "batch_size": 32}  # cnn has no units; recurrent nets no filters


def params(t: str, horizon: int) -> dict:
    p = {} if t in BASELINE_TYPES else dict(TINY_CNN if t == "cnn" else TINY)
    return {**p, "horizon": horizon, "seed": 3}


@pytest.mark.parametrize("horizon", [1, 3])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_forecaster_contract(model_type: str, horizon: int, tmp_path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8, 2)).astype("float32")
    y = rng.normal(size=(120, horizon)).astype("float32")
    m = make_forecaster(model_type, **params(model_type, horizon))
    with pytest.raises(NotFittedError):
        m.predict(X[:5])
    assert not hasattr(m, "fitted_")
    assert m.fit(X[:90], y[:90], X[90:100], y[90:100]) is m
    pred = m.predict(X[100:])
    assert pred.shape == (20, horizon) and np.isfinite(pred).all()
    m.save(tmp_path / "m")
    loaded = Forecaster.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(X[100:]), pred, rtol=1e-6, atol=1e-7)
    if model_type == "persistence":
        assert (pred == 0).all()
    if model_type == "mean":
        np.testing.assert_allclose(pred[0], y[:90].astype("float64").mean(axis=0), rtol=1e-6, atol=1e-7)


def test_unknown_parameter_is_rejected() -> None:
    with pytest.raises(TypeError, match="unknown parameter"):
        make_forecaster("linear", units=3)
    with pytest.raises(ValueError, match="unknown model type 'lstn'"):
        make_forecaster("lstn")
    with pytest.raises(TypeError, match="unknown parameter.*'filters'"):
        make_forecaster("lstm", filters=4)  # a key the type does not use is refused, not ignored
    with pytest.raises(ValueError, match="cnn: layers: Input should be less than or equal to 3"):
        make_forecaster("cnn", layers=4)  # was clamped to 3 without a word


def test_defaults_come_from_the_schema_only() -> None:
    """The network reads the validated values: the schema's defaults, no second copy in the class."""
    from models.params import PARAMS_BY_TYPE

    for t in MODEL_TYPES:
        m = make_forecaster(t)
        schema = PARAMS_BY_TYPE[t]
        assert m.hparams == schema(type=t)
        assert set(schema.parameter_names()) <= set(type(m).param_names)
    assert make_forecaster("bilstm").hparams.dropout == 0.2 and make_forecaster("lstm").hparams.dropout == 0.0


def test_networks_have_history_and_regularisers() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 6, 1)).astype("float32")
    y = rng.normal(size=(80, 1)).astype("float32")
    m = make_forecaster("lstm", **TINY, kernel_l2=0.01, recurrent_l1=0.001, activity_l2=0.01, dropout=0.2)
    m.fit(X[:60], y[:60], X[60:], y[60:])
    assert [h["epoch"] for h in m.history_] == [0, 1] and all(np.isfinite(h["val_loss"]) for h in m.history_)
    layer = m.model_.layers[1]
    assert layer.kernel_regularizer is not None and layer.recurrent_regularizer is not None
    cnn = make_forecaster("cnn", **TINY_CNN, activation="leaky_relu", leaky_alpha=0.1, layers=3).fit(X[:60], y[:60])
    assert any(type(lay).__name__ == "LeakyReLU" for lay in cnn.model_.layers)
    assert sum(type(lay).__name__ == "Conv1D" for lay in cnn.model_.layers) == 3
    bi = make_forecaster("bilstm", **TINY)
    bi.fit(X[:60], y[:60])
    widths = [lay.forward_layer.units for lay in bi.model_.layers if type(lay).__name__ == "Bidirectional"]
    assert widths == [4, 8, 4] and sum(type(lay).__name__ == "Dropout" for lay in bi.model_.layers) == 3
