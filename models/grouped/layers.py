"""Grouped (wide) layers: ``G`` copies of one Keras layer as one layer whose weights carry a leading model axis.

Inputs ``(G, B, T, F)``, weights ``(G, in, out)``, kernels applied as batched ``keras.ops.matmul``
``(G, B, in) x (G, in, out)``. Each layer has the weight layout of the single Keras layer (LSTM gate order
i, f, c, o; GRU ``reset_after=True`` with a ``(2, 3u)`` bias, gates z, r, h; Bidirectional = forward then
backward), so a model's slice of the group weights loads into the single Keras model unchanged.

Per-model values a layer reads at each step (given by :mod:`models.grouped.network` as ``(n,)`` or
``(n, L)`` tensors, ``n`` the fed slots): the dropout keep-threshold and scale of each model (so
models of one group may drop at different rates; rate 0 keeps every value unchanged, exactly), and the
recurrent-dropout ones. A model's masks depend only on its seed, its own step count, the layer and the
element: the same alone as in any group.

The layer classes are defined lazily (:func:`make_layers`) so importing this module does not import Keras.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a network body. ``kind``: lstm | gru | bilstm | conv1d | leaky_relu | dropout | flatten | dense.

    ``units``: recurrent units, conv filters or dense width; ``rate``: dropout rate (fraction dropped, 0.2 =
    20%) or LeakyReLU slope; ``kernel_size``/``strides`` in bars (conv1d, 'same' padding);
    ``recurrent_dropout``: fraction of the recurrent state dropped for each gate (lstm, gru, bilstm).
    In a group's architecture the dropout rates are placeholders: each member's rates are its own
    (:class:`models.grouped.settings.TrainSettings`).
    """

    kind: str
    units: int = 0
    return_sequences: bool = False
    activation: str | None = None
    kernel_size: int = 1
    strides: int = 1
    rate: float = 0.0
    recurrent_dropout: float = 0.0


#: Layer kinds that carry Keras' kernel/bias (and, recurrent ones, recurrent) regularisers and an activity
#: regulariser on their output (as ``models.networks`` builds them; the dense output layer has none).
REGULARISED = ("lstm", "gru", "bilstm", "conv1d")
RECURRENT = ("lstm", "gru", "bilstm")
#: Mask-stream index offset of a recurrent layer's recurrent-dropout masks (dropout layers use their
#: layer index, below it); indices stay below 64, the step multiplier of the mask key.
REC_MASK_INDEX = 32

_UNROLL = 1  # scan steps per loop iteration: 1 measured fastest here (19.6 ms vs 22.4 ms at 5 for 13 LSTM(64) models)


def _keras() -> Any:
    import keras

    return keras


def keep_threshold(rate: float) -> int:
    """The 24-bit threshold of a dropout ``rate``: a value is kept when its hash is at least this."""
    return int(round(rate * (1 << 24)))


def keep_scale(rate: float) -> np.float32:
    """Inverted-dropout scale of kept values, ``1 / (1 - rate)``, as float32 arithmetic on the float32
    ``1 - rate`` (0.2 -> 1.25)."""
    return np.float32(1.0) / np.float32(1.0 - rate)


@functools.cache
def make_layers() -> dict[str, type]:
    """Grouped layer classes by :attr:`LayerSpec.kind` (defined lazily: importing this module does not import Keras)."""
    keras = _keras()
    ops = keras.ops

    class GroupLayer(keras.layers.Layer):
        """Base: ``n_models`` copies of one layer; weights carry a leading model axis. ``regularised``:
        the weights Keras' regularisers apply to, with their role (kernel | recurrent | bias)."""

        def __init__(self, n_models: int, spec: LayerSpec, index: int, **kw: Any) -> None:
            super().__init__(**kw)
            self.n_models, self.spec, self.index = n_models, spec, index
            self.inits: list[tuple[str, tuple[int, ...]]] = []  # (initializer, per-model shape) per weight
            self.regularised: list[tuple[Any, str]] = []  # (weight, role) of the weights Keras regularises

        def _w(self, name: str, shape: tuple[int, ...], init: str, role: str) -> Any:
            self.inits.append((init, shape))
            w = self.add_weight(name=name, shape=(self.n_models, *shape), initializer="zeros")
            if self.spec.kind in REGULARISED:
                self.regularised.append((w, role))
            return w

        @staticmethod
        def pick(live: Any, *weights: Any) -> list[Any]:
            """The live slots' rows of each weight (``live``: slot indices, int32), or all of them."""
            return list(weights) if live is None else [ops.take(w, live, axis=0) for w in weights]

    def _project(x: Any, kernel: Any) -> Any:
        """``(G, B, T, F) x (G, F, O) -> (G, B, T, O)`` as one batched matmul over ``(G, B*T, F)``
        (``einsum`` lowered to a slower contraction on this CPU: about 20% of a grouped LSTM step)."""
        g, b, t, f = ops.shape(x)[0], ops.shape(x)[1], x.shape[2], x.shape[3]
        y = ops.matmul(ops.reshape(x, (g, b * t, f)), kernel)
        return ops.reshape(y, (g, b, t, ops.shape(kernel)[-1]))

    def _rnn_weights(layer: GroupLayer, prefix: str, n_in: int, units: int, gates: int, gru: bool) -> list[Any]:
        k = layer._w(f"{prefix}kernel", (n_in, gates * units), "glorot_uniform", "kernel")
        r = layer._w(f"{prefix}recurrent_kernel", (units, gates * units), "orthogonal", "recurrent")
        b = layer._w(f"{prefix}bias", (2, gates * units) if gru else (gates * units,), "zeros" if gru else "lstm_bias",
                     "bias")
        return [k, r, b]

    def _scan(cell: Any, x: Any, carry: tuple, seqs: bool) -> Any:
        """Run ``cell(carry, x_t) -> (carry, h_t)`` over the time axis of ``x`` ``(G, B, T, F)`` with
        ``keras.ops.scan`` (a loop, not T unrolled copies: the traced graph and its memory stay small, and a
        new group shape traces in a fraction of the time). Returns the last
        ``h`` ``(G, B, u)`` or, with ``seqs``, every ``h`` ``(G, B, T, u)``; ``cell``'s outputs are its carry
        (``h`` first)."""
        xt = ops.transpose(x, (2, 0, 1, 3))  # time-major (T, G, B, F)
        last, hs = ops.scan(cell, carry, xt, unroll=_UNROLL)
        if not seqs:
            return last[0]
        return ops.transpose(hs[0], (1, 2, 0, 3))

    def _rec_term(h: Any, rec: Any, rmask: Any, gates: int) -> Any:
        """``h @ rec`` ``(G, B, gates*u)``; with recurrent-dropout masks ``rmask`` ``(G, B, gates, u)`` each
        gate reads its own masked state (Keras' ``h_tm1 * rec_dp_mask[k]`` per gate)."""
        if rmask is None:
            return ops.matmul(h, rec)
        recs = ops.split(rec, gates, axis=-1)
        return ops.concatenate([ops.matmul(h * rmask[:, :, k, :], recs[k]) for k in range(gates)], axis=-1)

    def _lstm(x: Any, kernel: Any, rec: Any, bias: Any, units: int, act: Any, seqs: bool, rmask: Any = None) -> Any:
        h0 = ops.zeros((ops.shape(x)[0], ops.shape(x)[1], units), dtype=x.dtype)
        b = bias[:, None, :]

        def cell(carry: tuple, x_t: Any) -> tuple:
            h, c = carry
            if rmask is None:
                z = ops.matmul(x_t, kernel) + ops.matmul(h, rec) + b
            else:
                z = ops.matmul(x_t, kernel) + b + _rec_term(h, rec, rmask, 4)
            zi, zf, zc, zo = ops.split(z, 4, axis=-1)
            c = ops.sigmoid(zf) * c + ops.sigmoid(zi) * act(zc)
            h = ops.sigmoid(zo) * act(c)
            return (h, c), (h, c)  # Keras' TensorFlow scan wants ys shaped like the carry

        return _scan(cell, x, (h0, h0), seqs)

    def _lsr(h: Any, k: int) -> Any:
        """Logical right shift of int32 ``h`` by ``k`` bits (``right_shift`` is arithmetic on signed ints)."""
        return ops.bitwise_and(ops.right_shift(h, k), (1 << (32 - k)) - 1)

    def _keep_mask(x: Any, seeds: Any, index: int, threshold: Any) -> Any:
        """Dropout keep-mask of ``x`` ``(G, ...)``: element e of model g is kept when a counter-based hash
        (``lowbias32``, int32 wrap-around arithmetic) of (g's seed, g's own step, mask stream ``index``, e)
        is at least ``threshold[g]`` (int32 ``(G,)``, :func:`keep_threshold` of g's rate) of its 24-bit
        range. One vectorised computation for the whole group, and model g's mask depends on nothing but its
        own seed, step, rate and rows: the same alone as in any group."""
        shape = ops.shape(x)
        lead = (-1,) + (1,) * (len(x.shape) - 1)
        pos = ops.reshape(ops.arange(ops.size(x[0]), dtype="int32"), (1, *shape[1:]))
        key = seeds[:, 0] * -1640531535 + (seeds[:, 1] * 64 + index) * -2048144777  # golden-ratio constants
        h = pos * 668265263 + ops.reshape(key, lead)
        h = ops.bitwise_xor(h, _lsr(h, 16)) * 2146121005
        h = ops.bitwise_xor(h, _lsr(h, 15)) * -2073254261
        h = ops.bitwise_xor(h, _lsr(h, 16))
        return _lsr(h, 8) >= ops.reshape(threshold, lead)

    def _rec_masks(layer: GroupLayer, h_shape: tuple, dirs: int, gates: int, noise: dict | None) -> Any:
        """Recurrent-dropout multipliers ``(dirs*G, B, gates, u)`` for one batch (Keras draws one mask per
        gate per batch, reused at every time step): kept entries ``1 / (1 - rate)``, dropped ones 0; ``None``
        when the group has no recurrent dropout or outside training."""
        if noise is None or "rec_threshold" not in noise:
            return None
        g, b, u = h_shape
        thr = noise["rec_threshold"][:, layer.index]
        scale = noise["rec_scale"][:, layer.index]
        ones = ops.ones((g, b, dirs, gates, u), dtype="float32")
        keep = _keep_mask(ones, noise["seeds"], REC_MASK_INDEX + layer.index, thr)
        m = ops.where(keep, ones * ops.reshape(scale, (-1, 1, 1, 1, 1)), ops.zeros_like(ones))
        parts = ops.split(m, dirs, axis=2)  # per direction, (G, B, 1, gates, u)
        return ops.concatenate([ops.squeeze(p, axis=2) for p in parts], axis=0)

    class GroupLSTM(GroupLayer):
        def build(self, input_shape: tuple) -> None:
            u, f = self.spec.units, int(input_shape[-1])
            dirs = ("forward_", "backward_") if self.spec.kind == "bilstm" else ("",)
            self.ws = [_rnn_weights(self, d, f, u, 4, gru=False) for d in dirs]
            self.act = keras.activations.get(self.spec.activation or "tanh")

        def call(self, x: Any, live: Any = None, noise: dict | None = None) -> Any:
            s = self.spec
            n, b = ops.shape(x)[0], ops.shape(x)[1]
            rmask = _rec_masks(self, (n, b, s.units), len(self.ws), 4, noise)
            if len(self.ws) == 1:
                return _lstm(x, *self.pick(live, *self.ws[0]), s.units, self.act, s.return_sequences, rmask)
            # Bidirectional: both directions in one scan, as 2G models (the backward one reads the bars
            # reversed), so the loop runs once per layer, not twice.
            (kf, rf, bf), (kb, rb, bb) = self.pick(live, *self.ws[0]), self.pick(live, *self.ws[1])
            both = _lstm(ops.concatenate([x, ops.flip(x, axis=2)], axis=0), ops.concatenate([kf, kb], axis=0),
                         ops.concatenate([rf, rb], axis=0), ops.concatenate([bf, bb], axis=0), s.units, self.act,
                         s.return_sequences, rmask)
            fwd, bwd = ops.split(both, 2, axis=0)
            if s.return_sequences:
                bwd = ops.flip(bwd, axis=2)  # back in time order, as keras.layers.Bidirectional returns them
            return ops.concatenate([fwd, bwd], axis=-1)

    class GroupGRU(GroupLayer):
        def build(self, input_shape: tuple) -> None:
            self.kernel, self.rec, self.bias = _rnn_weights(self, "", int(input_shape[-1]), self.spec.units, 3, gru=True)
            self.act = keras.activations.get(self.spec.activation or "tanh")

        def call(self, x: Any, live: Any = None, noise: dict | None = None) -> Any:
            u = self.spec.units
            h0 = ops.zeros((ops.shape(x)[0], ops.shape(x)[1], u), dtype=x.dtype)
            kernel, rec, bias = self.pick(live, self.kernel, self.rec, self.bias)
            b_in, b_rec = bias[:, None, 0, :], bias[:, None, 1, :]
            rmask = _rec_masks(self, (ops.shape(x)[0], ops.shape(x)[1], u), 1, 3, noise)

            def cell(carry: tuple, x_t: Any) -> tuple:
                (h,) = carry
                xz, xr, xh = ops.split(ops.matmul(x_t, kernel) + b_in, 3, axis=-1)
                rz, rr, rh = ops.split(_rec_term(h, rec, rmask, 3) + b_rec, 3, axis=-1)
                z = ops.sigmoid(xz + rz)
                r = ops.sigmoid(xr + rr)
                h = z * h + (1 - z) * self.act(xh + r * rh)
                return (h,), (h,)

            return _scan(cell, x, (h0,), self.spec.return_sequences)

    class GroupConv1D(GroupLayer):
        """Conv1D with 'same' padding (TensorFlow's convention: the extra pad bar goes right) and strides,
        as im2col by one gather plus one batched matmul."""

        def build(self, input_shape: tuple) -> None:
            s = self.spec
            self.kernel = self._w("kernel", (s.kernel_size, int(input_shape[-1]), s.units), "glorot_uniform", "kernel")
            self.bias = self._w("bias", (s.units,), "zeros", "bias")
            self.act = keras.activations.get(s.activation or "linear")

        def call(self, x: Any, live: Any = None, noise: dict | None = None) -> Any:
            s = self.spec
            kernel, bias = self.pick(live, self.kernel, self.bias)
            t = x.shape[2]
            out_len = -(-t // s.strides)
            pad = max((out_len - 1) * s.strides + s.kernel_size - t, 0)
            xp = ops.pad(x, [[0, 0], [0, 0], [pad // 2, pad - pad // 2], [0, 0]])
            k, c = s.kernel_size, int(x.shape[-1])
            # im2col as one gather of bars (window j of output step l reads bar l*strides + j): its gradient
            # is a segment sum, about 5x faster here than that of k strided slices (the old formulation)
            idx = (np.arange(out_len)[:, None] * s.strides + np.arange(k)[None, :]).reshape(-1)
            cols = ops.take(xp, idx, axis=2)  # (G, B, L*k, C), row-major as (G, B, L, k, C)
            y = _project(ops.reshape(cols, (ops.shape(x)[0], ops.shape(x)[1], out_len, k * c)),
                         ops.reshape(kernel, (-1, k * c, s.units))) + bias[:, None, None, :]
            return self.act(y)

    class GroupDense(GroupLayer):
        def build(self, input_shape: tuple) -> None:
            self.kernel = self._w("kernel", (int(input_shape[-1]), self.spec.units), "glorot_uniform", "kernel")
            self.bias = self._w("bias", (self.spec.units,), "zeros", "bias")

        def call(self, x: Any, live: Any = None, noise: dict | None = None) -> Any:
            kernel, bias = self.pick(live, self.kernel, self.bias)
            return ops.matmul(x, kernel) + bias[:, None, :]

    class GroupDropout(GroupLayer):
        """Per-model inverted dropout (Keras' rule: kept values scaled by 1 / (1 - rate)) at each model's own
        rate; model g's mask comes from (its seed, its own step count, this layer), see :func:`_keep_mask`.
        (One stateless random draw per model was a third of a bidirectional LSTM step at 13 models.) The
        scale is a multiply by the float32 reciprocal :func:`keep_scale` (what TensorFlow's graph optimizer
        made of a division by a constant rate, so a group at one rate gives the floats it gave before rates
        were per model). A model at rate 0 keeps every value, times 1.0: unchanged."""

        def call(self, x: Any, live: Any = None, noise: dict | None = None) -> Any:
            if noise is None or "drop_threshold" not in noise:
                return x
            keep = _keep_mask(x, noise["seeds"], self.index, noise["drop_threshold"][:, self.index])
            scale = ops.reshape(noise["drop_scale"][:, self.index], (-1,) + (1,) * (len(x.shape) - 1))
            return ops.where(keep, x * scale, ops.zeros_like(x))

    class GroupActivation(GroupLayer):
        def call(self, x: Any, live: Any = None, noise: dict | None = None) -> Any:
            if self.spec.kind == "leaky_relu":
                return ops.leaky_relu(x, negative_slope=self.spec.rate)
            return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], -1))  # flatten, row-major as keras Flatten

    return {"lstm": GroupLSTM, "bilstm": GroupLSTM, "gru": GroupGRU, "conv1d": GroupConv1D, "dense": GroupDense,
            "dropout": GroupDropout, "leaky_relu": GroupActivation, "flatten": GroupActivation}


__all__ = ["LayerSpec", "RECURRENT", "REGULARISED", "keep_scale", "keep_threshold", "make_layers"]
