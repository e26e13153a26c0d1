"""A fresh model's initial weights, in the single Keras model's ``get_weights()`` order (from Keras'
own initializers: glorot_uniform kernels, orthogonal recurrent kernels, zero biases, LSTM forget bias 1)."""
from __future__ import annotations

import numpy as np

from models.grouped.layers import LayerSpec


def _init_value(init: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """One model's initial value of a weight, from Keras' own initializers (same distributions as the
    single Keras layer)."""
    import keras

    if init == "zeros":
        return np.zeros(shape, "float32")
    if init == "lstm_bias":
        u = shape[0] // 4
        out = np.zeros(shape, "float32")
        out[u:2 * u] = 1.0
        return out
    cls = {"glorot_uniform": keras.initializers.GlorotUniform, "orthogonal": keras.initializers.Orthogonal}[init]
    return np.asarray(cls(seed=seed)(shape), dtype="float32")


def weight_inits(specs: list[LayerSpec], lookback: int, n_inputs: int) -> list[tuple[str, tuple[int, ...]]]:
    """(initializer, shape) of every weight of one model, in the single Keras model's ``get_weights()`` order."""
    T, feat, out = lookback, n_inputs, []
    for s in specs:
        if s.kind in ("lstm", "bilstm", "gru"):
            gates, u = (3 if s.kind == "gru" else 4), s.units
            bias = ("zeros", (2, gates * u)) if s.kind == "gru" else ("lstm_bias", (gates * u,))
            for _ in range(2 if s.kind == "bilstm" else 1):
                out += [("glorot_uniform", (feat, gates * u)), ("orthogonal", (u, gates * u)), bias]
            feat = u * (2 if s.kind == "bilstm" else 1)
            T = T if s.return_sequences else 1
        elif s.kind == "conv1d":
            out += [("glorot_uniform", (s.kernel_size, feat, s.units)), ("zeros", (s.units,))]
            T, feat = -(-T // s.strides), s.units
        elif s.kind == "flatten":
            feat, T = feat * T, 1
        elif s.kind == "dense":
            out += [("glorot_uniform", (feat, s.units)), ("zeros", (s.units,))]
            feat = s.units
    return out


def initial_weights(specs: list[LayerSpec], lookback: int, n_inputs: int, seed: int) -> list[np.ndarray]:
    """A fresh model's weights for ``seed``, in the single Keras model's ``get_weights()`` order."""
    return [_init_value(init, shape, (seed * 7919 + j) % (2**31 - 1))
            for j, (init, shape) in enumerate(weight_inits(specs, lookback, n_inputs))]


__all__ = ["initial_weights", "weight_inits"]
