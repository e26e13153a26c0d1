"""Vectorised multi-model training: G independent networks of one architecture trained as one computation.

Walk-forward research is retraining: the cold-start folds of a (model, seed), the seeds of a run and the
grid points of a sweep that share a shape are independent trainings of the same architecture. Here they
run as *one* compiled Keras training step over a leading model axis ``G``: inputs ``(G, B, T, F)``,
weights ``(G, in, out)``, kernels applied as batched ``keras.ops.matmul`` ``(G, B, in) x (G, in, out)``. Each model keeps

* its own weights and optimizer slots (Adam/RMSprop/SGD are elementwise, so a stacked optimizer equals
  per-model optimizers; a per-model ``active`` mask freezes weights *and* slots of a model that is idle
  this step or finished, and its own step counter drives Adam's bias correction);
* its own data rows, per-epoch permutation (``numpy.random.default_rng(seed)``), batch size, masked last
  partial batch, epoch count, dropout stream (stateless, seeded by the model's seed and its own step) and
  Keras ``EarlyStopping(monitor="val_loss", patience, restore_best_weights=True)`` semantics.

The loss of the group is the sum of each model's own batch MSE over its valid rows; the weights are
disjoint, so each model gets exactly the gradient it would get alone. Each model keeps its own epoch clock:
it starts its next epoch the step after its last batch, and its validation pass and early-stopping check run
at its own epoch ends; a finished model's slot takes the next waiting training (see :func:`fit_group`).
A group of at most ``_STATIC_SLOTS`` slots feeds every slot at every step (a slot without rows computes
and does not move), so its trainer is traced for one shape. A larger group feeds only the slots whose
models still train: it is given their slot indices, gathers their weights inside the compiled step and
scatters their counters back, so at the end of a unit the finished slots cost nothing, for one more trace
(TensorFlow relaxes the leading dimension at the second shape it sees; measured here about 5 MiB for an
LSTM(32), about 90 MiB and one more trace time for the 3-layer BiLSTM(8), whose groups are small).

Why grouped layers in ``keras.ops`` rather than JAX's stateless step mapped over weights: TensorFlow is
the declared backend; grouped layers run in its graph mode (XLA was measured slower for a grouped LSTM
step on this 2-core CPU, in issue 9, so ``jit_compile=False``) and, being plain ``keras.ops`` with Keras'
own trainer (``train_on_batch`` with an overridden ``compute_loss``), need no backend-specific code. Only
the TensorFlow backend (CPU) was run here; JAX, PyTorch and GPUs were not.

The architecture is described once (:class:`LayerSpec` lists, from ``models.networks``); the grouped
model has the weight layout of the single Keras model (Keras LSTM gate order i, f, c, o; GRU
``reset_after=True`` with a ``(2, 3u)`` bias, gates z, r, h; Bidirectional = forward then backward), so a
model's slice of the group weights loads into the single model unchanged.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import math
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a network body. ``kind``: lstm | gru | bilstm | conv1d | leaky_relu | dropout | flatten | dense.

    ``units``: recurrent units, conv filters or dense width; ``rate``: dropout rate or LeakyReLU slope;
    ``kernel_size``/``strides`` in bars (conv1d, 'same' padding).
    """

    kind: str
    units: int = 0
    return_sequences: bool = False
    activation: str | None = None
    kernel_size: int = 1
    strides: int = 1
    rate: float = 0.0


_UNROLL = 1  # scan steps per loop iteration: 1 measured fastest here (19.6 ms vs 22.4 ms at 5 for 13 LSTM(64) models)
#: Groups of at most this many slots feed every slot at every step (a slot with no rows computes and does
#: not move), so their trainer keeps one traced shape; larger groups feed only their live slots (the tail of
#: a unit costs only its live models, for one more, shape-relaxed trace: ~5 MiB for an LSTM(32), ~90 MiB for
#: the 3-layer bidirectional LSTM, whose memory-bound groups are small).
_STATIC_SLOTS = 8
_CACHE_MAX = 4  # compiled group trainers a cache keeps (least recently used dropped): each holds 35-70 MiB of graphs (not all returned once dropped)


def _keras():
    import keras

    return keras


# --- grouped layers --------------------------------------------------------------------------------
@functools.cache
def _make_layers() -> dict[str, type]:
    """Grouped layer classes (defined lazily so importing this module does not import Keras)."""
    keras = _keras()
    ops = keras.ops

    class GroupLayer(keras.layers.Layer):
        """Base: ``n_models`` copies of one layer; weights carry a leading model axis."""

        def __init__(self, n_models: int, spec: LayerSpec, index: int, **kw: Any) -> None:
            super().__init__(**kw)
            self.n_models, self.spec, self.index = n_models, spec, index
            self.inits: list[tuple[str, tuple[int, ...]]] = []  # (initializer, per-model shape) per weight

        def _w(self, name: str, shape: tuple[int, ...], init: str) -> Any:
            self.inits.append((init, shape))
            return self.add_weight(name=name, shape=(self.n_models, *shape), initializer="zeros")

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
        k = layer._w(f"{prefix}kernel", (n_in, gates * units), "glorot_uniform")
        r = layer._w(f"{prefix}recurrent_kernel", (units, gates * units), "orthogonal")
        b = layer._w(f"{prefix}bias", (2, gates * units) if gru else (gates * units,), "zeros" if gru else "lstm_bias")
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

    def _lstm(x: Any, kernel: Any, rec: Any, bias: Any, units: int, act: Any, seqs: bool) -> Any:
        h0 = ops.zeros((ops.shape(x)[0], ops.shape(x)[1], units), dtype=x.dtype)
        b = bias[:, None, :]

        def cell(carry: tuple, x_t: Any) -> tuple:
            h, c = carry
            z = ops.matmul(x_t, kernel) + ops.matmul(h, rec) + b
            zi, zf, zc, zo = ops.split(z, 4, axis=-1)
            c = ops.sigmoid(zf) * c + ops.sigmoid(zi) * act(zc)
            h = ops.sigmoid(zo) * act(c)
            return (h, c), (h, c)  # Keras' TensorFlow scan wants ys shaped like the carry

        return _scan(cell, x, (h0, h0), seqs)

    class GroupLSTM(GroupLayer):
        def build(self, input_shape: tuple) -> None:
            u, f = self.spec.units, int(input_shape[-1])
            dirs = ("forward_", "backward_") if self.spec.kind == "bilstm" else ("",)
            self.ws = [_rnn_weights(self, d, f, u, 4, gru=False) for d in dirs]
            self.act = keras.activations.get(self.spec.activation or "tanh")

        def call(self, x: Any, live: Any = None) -> Any:
            s = self.spec
            if len(self.ws) == 1:
                return _lstm(x, *self.pick(live, *self.ws[0]), s.units, self.act, seqs=s.return_sequences)
            # Bidirectional: both directions in one scan, as 2G models (the backward one reads the bars
            # reversed), so the loop runs once per layer, not twice.
            (kf, rf, bf), (kb, rb, bb) = self.pick(live, *self.ws[0]), self.pick(live, *self.ws[1])
            both = _lstm(ops.concatenate([x, ops.flip(x, axis=2)], axis=0), ops.concatenate([kf, kb], axis=0),
                         ops.concatenate([rf, rb], axis=0), ops.concatenate([bf, bb], axis=0), s.units, self.act,
                         seqs=s.return_sequences)
            fwd, bwd = ops.split(both, 2, axis=0)
            if s.return_sequences:
                bwd = ops.flip(bwd, axis=2)  # back in time order, as keras.layers.Bidirectional returns them
            return ops.concatenate([fwd, bwd], axis=-1)

    class GroupGRU(GroupLayer):
        def build(self, input_shape: tuple) -> None:
            self.kernel, self.rec, self.bias = _rnn_weights(self, "", int(input_shape[-1]), self.spec.units, 3, gru=True)
            self.act = keras.activations.get(self.spec.activation or "tanh")

        def call(self, x: Any, live: Any = None) -> Any:
            u = self.spec.units
            h0 = ops.zeros((ops.shape(x)[0], ops.shape(x)[1], u), dtype=x.dtype)
            kernel, rec, bias = self.pick(live, self.kernel, self.rec, self.bias)
            b_in, b_rec = bias[:, None, 0, :], bias[:, None, 1, :]

            def cell(carry: tuple, x_t: Any) -> tuple:
                (h,) = carry
                xz, xr, xh = ops.split(ops.matmul(x_t, kernel) + b_in, 3, axis=-1)
                rz, rr, rh = ops.split(ops.matmul(h, rec) + b_rec, 3, axis=-1)
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
            self.kernel = self._w("kernel", (s.kernel_size, int(input_shape[-1]), s.units), "glorot_uniform")
            self.bias = self._w("bias", (s.units,), "zeros")
            self.act = keras.activations.get(s.activation or "linear")

        def call(self, x: Any, live: Any = None) -> Any:
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
            self.kernel = self._w("kernel", (int(input_shape[-1]), self.spec.units), "glorot_uniform")
            self.bias = self._w("bias", (self.spec.units,), "zeros")

        def call(self, x: Any, live: Any = None) -> Any:
            kernel, bias = self.pick(live, self.kernel, self.bias)
            return ops.matmul(x, kernel) + bias[:, None, :]

    def _lsr(h: Any, k: int) -> Any:
        """Logical right shift of int32 ``h`` by ``k`` bits (``right_shift`` is arithmetic on signed ints)."""
        return ops.bitwise_and(ops.right_shift(h, k), (1 << (32 - k)) - 1)

    def _keep_mask(x: Any, seeds: Any, index: int, rate: float) -> Any:
        """Dropout keep-mask of ``x`` ``(G, ...)``: element e of model g is kept when a counter-based hash
        (``lowbias32``, int32 wrap-around arithmetic) of (g's seed, g's own step, layer ``index``, e) is at
        least ``rate`` of its 24-bit range. One vectorised computation for the whole group, and model g's
        mask depends on nothing but its own seed, step and rows: the same alone as in any group."""
        shape = ops.shape(x)
        pos = ops.reshape(ops.arange(ops.size(x[0]), dtype="int32"), (1, *shape[1:]))
        key = seeds[:, 0] * -1640531535 + (seeds[:, 1] * 64 + index) * -2048144777  # golden-ratio constants
        h = pos * 668265263 + ops.reshape(key, (-1,) + (1,) * (len(x.shape) - 1))
        h = ops.bitwise_xor(h, _lsr(h, 16)) * 2146121005
        h = ops.bitwise_xor(h, _lsr(h, 15)) * -2073254261
        h = ops.bitwise_xor(h, _lsr(h, 16))
        return _lsr(h, 8) >= int(round(rate * (1 << 24)))

    class GroupDropout(GroupLayer):
        """Per-model inverted dropout (Keras' rule: kept values scaled by 1 / (1 - rate)); model g's mask
        comes from (its seed, its own step count, this layer), see :func:`_keep_mask`. (One stateless
        random draw per model was a third of a bidirectional LSTM step at 13 models.)"""

        def call(self, x: Any, training: bool = False, seeds: Any = None) -> Any:
            if not training or self.spec.rate <= 0 or seeds is None:
                return x
            keep = _keep_mask(x, seeds, self.index, self.spec.rate)
            return ops.where(keep, x / (1.0 - self.spec.rate), ops.zeros_like(x))

    class GroupActivation(GroupLayer):
        def call(self, x: Any, live: Any = None) -> Any:
            if self.spec.kind == "leaky_relu":
                return ops.leaky_relu(x, negative_slope=self.spec.rate)
            return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], -1))  # flatten, row-major as keras Flatten

    return {"lstm": GroupLSTM, "bilstm": GroupLSTM, "gru": GroupGRU, "conv1d": GroupConv1D, "dense": GroupDense,
            "dropout": GroupDropout, "leaky_relu": GroupActivation, "flatten": GroupActivation}


@functools.cache
def _make_classes() -> tuple[type, type]:
    keras = _keras()
    ops = keras.ops
    layer_classes = _make_layers()

    class GroupNet(keras.Model):
        """``n_models`` networks of one architecture: ``(G, B, T, F) -> (G, B, horizon)``, or, called with
        ``(x, live)``, only the slots ``live`` (int32 ``(n,)``): ``x`` ``(n, B, T, F) -> (n, B, horizon)`` with
        those slots' weights (gathered in the step, so the gradients of the others are zero and a group
        whose models have finished costs only its live ones; used by groups of more than ``_STATIC_SLOTS``).

        Non-trainable state, set by the trainer once per round (not per step: a variable assign from
        Python costs about as much as 5% of a step): ``model_seeds`` ``(G,)`` int32 and ``steps`` ``(G,)``,
        each model's own optimizer steps so far. Inside the compiled step, :meth:`compute_loss` sets
        ``active`` ``(G,)`` (1 where the model has rows in this batch), adds it to ``steps`` (so Adam's bias
        correction sees the model's own count) and adds to ``loss_sums`` ``(G,)`` (per-model sum of batch
        MSE x batch rows); dropout is seeded by (model seed, the model's step).
        """

        def __init__(self, specs: list[LayerSpec], n_models: int, **kw: Any) -> None:
            super().__init__(**kw)
            self.n_models = n_models
            self.glayers = [layer_classes[s.kind](n_models, s, i, name=f"g{i}_{s.kind}") for i, s in enumerate(specs)]
            self.model_seeds = keras.Variable(np.zeros(n_models, "int32"), trainable=False, dtype="int32", name="model_seeds")
            self.steps = keras.Variable(np.zeros(n_models, "float32"), trainable=False, name="model_steps")
            self.active = keras.Variable(np.zeros(n_models, "float32"), trainable=False, name="active")
            self.loss_sums = keras.Variable(np.zeros(n_models, "float32"), trainable=False, name="loss_sums")

        def call(self, x: Any, training: bool = False) -> Any:
            x, live = x if isinstance(x, (tuple, list)) else (x, None)
            seeds = None
            if training:  # this step's number of each model (its count before the step, plus one)
                seeds = ops.stack([self.model_seeds.value, ops.cast(self.steps.value, "int32") + 1], axis=1)
                seeds = seeds if live is None else ops.take(seeds, live, axis=0)
            for layer in self.glayers:
                if layer.spec.kind == "dropout":
                    x = layer(x, training=training, seeds=seeds)
                else:
                    x = layer(x, live=live)
            return x

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                         training: bool = True) -> Any:
            """Sum over models of each model's mean squared error over its valid rows of the batch (the
            rows of the slots in ``x``'s ``live``, when given; per-slot counters are scattered back)."""
            se = ops.mean(ops.square(y_pred - y), axis=-1)  # (n, B)
            rows = ops.sum(sample_weight, axis=1)
            per_model = ops.sum(se * sample_weight, axis=1) / ops.maximum(rows, 1.0)
            if training:
                active, sums = ops.cast(rows > 0, "float32"), per_model * rows
                if isinstance(x, (tuple, list)):
                    at = ops.expand_dims(x[1], 1)
                    active = ops.scatter(at, active, (self.n_models,))
                    sums = ops.scatter(at, sums, (self.n_models,))
                self.active.assign(active)
                self.steps.assign(self.steps + active)
                self.loss_sums.assign(self.loss_sums + sums)
            return ops.sum(per_model)

    class MaskedOptimizer(keras.optimizers.Optimizer):
        """Adam, RMSprop or SGD (Keras' formulas and defaults) over stacked weights with a per-model
        ``active`` mask (an inactive model's weights and slots do not move) and per-model step counts
        ``steps`` (Adam's bias correction uses the model's own step, not the group's); both are the
        GroupNet's variables, updated in its compiled step before the optimizer runs."""

        def __init__(self, kind: str, learning_rate: float, n_models: int, net: Any, **kw: Any) -> None:
            super().__init__(learning_rate=learning_rate, name=f"masked_{kind}", **kw)
            self.kind, self.n_models = kind, n_models
            self._net = [net]  # a list: the net's variables stay the net's (not tracked as optimizer state)
            self.beta_1, self.beta_2, self.rho, self.eps = 0.9, 0.999, 0.9, 1e-7

        def build(self, var_list: list[Any]) -> None:
            if self.built:
                return
            super().build(var_list)
            self.m = [self.add_variable_from_reference(v, "m") for v in var_list] if self.kind == "adam" else []
            self.v = [self.add_variable_from_reference(v, "v") for v in var_list] if self.kind in ("adam", "rmsprop") else []

        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
            shape = (self.n_models,) + (1,) * (len(variable.shape) - 1)
            net = self._net[0]
            a = ops.reshape(net.active, shape) > 0
            lr = ops.cast(learning_rate, variable.dtype)
            g = ops.cast(ops.convert_to_tensor(gradient), variable.dtype)  # dense (a gather's is sparse)
            i = self._get_variable_index(variable)
            if self.kind == "adam":
                t = ops.reshape(ops.maximum(net.steps, 1.0), shape)
                m, v = self.m[i], self.v[i]
                m_new = m + (g - m) * (1 - self.beta_1)
                v_new = v + (ops.square(g) - v) * (1 - self.beta_2)
                alpha = lr * ops.sqrt(1 - ops.power(self.beta_2, t)) / (1 - ops.power(self.beta_1, t))
                self.assign(m, ops.where(a, m_new, m))
                self.assign(v, ops.where(a, v_new, v))
                new = variable - (m_new * alpha) / (ops.sqrt(v_new) + self.eps)
            elif self.kind == "rmsprop":
                v = self.v[i]
                v_new = self.rho * v + (1 - self.rho) * ops.square(g)
                self.assign(v, ops.where(a, v_new, v))
                new = variable - lr * g / (ops.sqrt(v_new) + self.eps)
            else:
                new = variable - lr * g
            self.assign(variable, ops.where(a, new, variable))

    return GroupNet, MaskedOptimizer


# --- initial weights -----------------------------------------------------------------------------
def _init_value(init: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """One model's initial value of a weight, from Keras' own initializers (same distributions as the
    single Keras layer: glorot_uniform kernels, orthogonal recurrent kernels, zero biases, LSTM forget
    bias 1)."""
    keras = _keras()
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


# --- the trainer ---------------------------------------------------------------------------------
@dataclass
class Member:
    """One training of the group: rows ``X`` ``(n, T, F)`` float32, targets ``y`` ``(n, H)``, optional
    validation rows, the model's seed (shuffling, dropout, initial weights) and optionally given initial
    weights (single-model layout) and per-epoch batch orders (for equivalence tests)."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    seed: int = 0
    weights: list[np.ndarray] | None = None
    orders: list[np.ndarray] | None = None


@dataclass
class Fitted:
    """What one member's training produced: final weights (single-model layout) and per-epoch history."""

    weights: list[np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)
    model_steps: int = 0


@dataclass(frozen=True)
class TrainSettings:
    """Training rule shared by the group: ``epochs``; ``batch_size`` rows per step per model;
    ``patience`` epochs without a lower validation loss before stopping (0 = none; needs validation rows);
    ``optimizer`` adam | rmsprop | sgd with ``learning_rate``."""

    epochs: int = 50
    batch_size: int = 64
    patience: int = 5
    optimizer: str = "adam"
    learning_rate: float = 1e-3


@dataclass
class GroupStats:
    """Work counters of one :func:`fit_group` call: group steps, model-steps that trained (active) and
    slot-steps with no model training (empty or finished slots: not computed, only counted)."""

    steps: int = 0
    active_model_steps: int = 0
    idle_model_steps: int = 0


def fit_group(specs: list[LayerSpec], members: list[Member], settings: TrainSettings,
              stats: GroupStats | None = None, cache: dict[tuple, Any] | None = None,
              slots: int | None = None) -> list[Fitted]:
    """Train every member as if alone, all in one compiled computation; returns one :class:`Fitted` each.

    Each member: its own rows, epoch-wise permutation from ``numpy.random.default_rng(seed)`` (or the given
    ``orders``), last partial batch masked, Keras' training loss per epoch (batch MSE averaged with batch-row
    weights), validation MSE at each epoch end, ``EarlyStopping`` semantics (``patience``, best weights
    restored at the end). Shapes: all members share ``(T, F)`` and ``H``.

    ``slots``: how many members train at once (default: all). Members take the slots in the given order; at
    each epoch end a finished member's slot is refilled with the next waiting one (its own fresh weights,
    zeroed optimizer slots and step count), so no slot idles while members wait. A group of at most
    ``_STATIC_SLOTS`` slots feeds all of them at every step (one traced shape); a larger one feeds only the
    slots whose models still train (their weights gathered inside the step), so when none wait the
    finished ones cost nothing. ``cache`` (optional, owned by the caller) keeps
    compiled group trainers by slot count across calls to skip graph tracing; each is reset before use, so
    results do not depend on it.
    """
    keras = _keras()
    stats = stats if stats is not None else GroupStats()
    T, F = members[0].X.shape[1:]
    B = int(settings.batch_size)
    states = [_MemberState(m, specs, T, F, B) for m in members]
    G = min(len(members), slots or len(members))
    queue = list(range(G, len(members)))  # members waiting for a slot, in order
    slot: list[int | None] = list(range(G))  # member index per slot (None: empty)
    _train_rounds(states, slot, queue, specs, settings, stats, keras, cache)
    return [s.result() for s in states]


class _MemberState:
    """Bookkeeping of one member: its rows, shuffles, steps, epochs, history and early-stopping state."""

    def __init__(self, m: Member, specs: list[LayerSpec], T: int, F: int, B: int) -> None:
        self.m, self.n = m, len(m.X)
        self.nb = math.ceil(self.n / B)
        self.rng = np.random.default_rng(m.seed)
        self.weights = m.weights if m.weights is not None else initial_weights(specs, T, F, m.seed)
        self.step = 0  # own optimizer steps so far
        self.epoch = 0
        self.done = False
        self.history: list[dict[str, float]] = []
        self.best = math.inf
        self.best_weights: list[np.ndarray] | None = None
        self.wait = 0
        self.epoch_order: np.ndarray | None = None  # this epoch's row permutation, and the rows done of it
        self.pos = 0
        self.loss_mark = 0.0  # the slot's running loss sum when this epoch began

    def order(self, epoch: int) -> np.ndarray:
        if self.m.orders is not None:
            return np.asarray(self.m.orders[epoch])
        return self.rng.permutation(self.n)

    def result(self) -> Fitted:
        w = self.best_weights if self.best_weights is not None else self.weights
        return Fitted([np.array(a) for a in w], self.history, self.step)


def _trainer(specs: list[LayerSpec], G: int, T: int, F: int, st: TrainSettings, cache: dict | None) -> tuple[Any, Any]:
    """A compiled (GroupNet, MaskedOptimizer) for G models, from ``cache`` when one of this shape exists."""
    key = ("group", tuple(specs), G, T, F, st.optimizer, st.learning_rate)
    if cache is not None and key in cache:
        net, opt = cache[key] = cache.pop(key)  # most recently used last
        return net, opt
    if cache is not None:
        # bound memory: each compiled trainer holds its traced graphs. A new architecture's trainer drops
        # the others' (the work units of an architecture run one after another), then at most _CACHE_MAX.
        for other in [k for k in cache if k[0] == "group" and k[1] != key[1]]:
            del cache[other]
        while len(cache) >= _CACHE_MAX:
            cache.pop(next(iter(cache)))
        _release_memory()
    GroupNet, MaskedOptimizer = _make_classes()
    net = GroupNet(specs, G)
    net(np.zeros((G, 1, T, F), "float32"))
    opt = MaskedOptimizer(st.optimizer, st.learning_rate, G, net)
    net.compile(optimizer=opt, jit_compile=False)  # XLA was measured slower for this step on CPU (issue 9)
    opt.build(net.trainable_variables)
    if cache is not None:
        cache[key] = (net, opt)
    return net, opt


def _release_memory() -> None:
    """Collect dropped trainers and hand freed heap pages back to the system (glibc ``malloc_trim``; a
    no-op elsewhere), so that one architecture's graphs do not stay resident while the next one trains."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _load_slots(net: Any, opt: Any, states: list[_MemberState | None], which: list[int]) -> None:
    """Put fresh members into slots ``which``: their initial weights, zeroed optimizer slots, step counts
    (0) and seeds; empty slots get zeros. One read and one assign per variable."""
    keras = _keras()
    for j, var in enumerate(net.trainable_variables):
        a = np.array(keras.ops.convert_to_numpy(var))
        for g in which:
            a[g] = states[g].weights[j] if states[g] is not None else 0.0
        var.assign(a)
    for var in opt.m + opt.v:
        a = np.array(keras.ops.convert_to_numpy(var))
        a[which] = 0.0
        var.assign(a)
    seeds = np.array(keras.ops.convert_to_numpy(net.model_seeds))
    steps = np.array(keras.ops.convert_to_numpy(net.steps))
    for g in which:
        s = states[g]
        seeds[g] = s.m.seed % (2**31 - 1) if s is not None else 0
        steps[g] = s.step if s is not None else 0
    net.model_seeds.assign(seeds)
    net.steps.assign(steps)


def _train_rounds(states: list[_MemberState], slot: list[int | None], queue: list[int], specs: list[LayerSpec],
                  st: TrainSettings, stats: GroupStats, keras: Any, cache: dict | None = None) -> None:
    """Train the members in ``slot`` (indices into ``states``) as one group, each on its own epoch clock: a
    model starts its next epoch (a new permutation) the step after its last batch, its validation pass and
    early-stopping check run at its own epoch ends, and a finished model's slot is refilled from ``queue``
    (consumed). Each step feeds only the slots still training (``(x, live)``, see ``GroupNet``); runs until
    all are done."""
    G, B = len(slot), int(st.batch_size)
    T, F = states[0].m.X.shape[1:]
    H = states[0].m.y.shape[1]
    net, opt = _trainer(specs, G, T, F, st, cache)
    n_max = max(states[i].n for i in [*slot, *queue] if i is not None)
    Xp = np.zeros((G, n_max, T, F), "float32")
    yp = np.zeros((G, n_max, H), "float32")
    cur: list[_MemberState | None] = [None] * G  # the member state in each slot
    net.loss_sums.assign(np.zeros(G, "float32"))  # the slots' running loss sums

    def seat(g: int, i: int | None, mark: float = 0.0) -> None:
        slot[g] = i
        cur[g] = s = states[i] if i is not None else None
        if s is not None:
            Xp[g, :s.n], yp[g, :s.n] = s.m.X, s.m.y
            s.epoch_order, s.pos, s.loss_mark = s.order(s.epoch), 0, mark

    for g, i in enumerate(list(slot)):
        seat(g, i)
    static = G <= _STATIC_SLOTS  # every slot fed at every step: one traced shape
    _load_slots(net, opt, cur, list(range(G)))
    while True:
        live = [g for g, s in enumerate(cur) if s is not None and not s.done]
        if not live:
            return
        fed = list(range(G)) if static else live  # the slots this step's inputs carry
        idx = np.zeros((len(fed), B), "int64")
        w = np.zeros((len(fed), B), "float32")  # a fed slot that is not live has no rows: it does not move
        for j, g in enumerate(fed):
            s = cur[g]
            if s is None or s.done:
                continue
            rows = s.epoch_order[s.pos:s.pos + B]
            idx[j, :len(rows)] = rows
            w[j, :len(rows)] = 1.0
            s.pos += len(rows)
            s.step += 1
        at = np.asarray(fed, "int32")
        x = Xp[at[:, None], idx]
        net.train_on_batch(x if static else (x, at), yp[at[:, None], idx], sample_weight=w)
        stats.steps += 1
        stats.active_model_steps += len(live)
        stats.idle_model_steps += G - len(live)
        ended = [g for g in live if cur[g].pos >= cur[g].n]
        if ended:
            _end_epochs(net, cur, ended, st, B, keras, queue, seat, opt)


def _end_epochs(net: Any, cur: list[_MemberState | None], ended: list[int], st: TrainSettings, B: int, keras: Any,
                queue: list[int], seat: Callable[[int, int | None, float], None], opt: Any) -> None:
    """Epoch ends of the members in slots ``ended``: history (Keras' epoch loss: batch MSE weighted by batch
    rows, over the epoch's rows), validation loss, ``EarlyStopping`` (best weights kept), then either the
    member's next epoch or, finished, its slot refilled with the next waiting member."""
    sums = np.asarray(keras.ops.convert_to_numpy(net.loss_sums))
    has_val = {g: cur[g].m.X_val is not None and len(cur[g].m.X_val) > 0 for g in ended}
    val = _val_losses(net, cur, [g for g in ended if has_val[g]], B) if any(has_val.values()) else {}
    current = None
    finished: list[int] = []
    for g in ended:
        s = cur[g]
        vl = val.get(g, float("nan"))
        loss = (float(sums[g]) - s.loss_mark) / s.n
        s.history.append({"epoch": s.epoch, "loss": float(loss), "val_loss": vl})
        s.epoch += 1
        stop = s.epoch >= st.epochs
        if has_val[g] and st.patience > 0:
            current = current if current is not None else _get_group_weights(net)
            mine = [a[g].copy() for a in current]
            if s.best_weights is None:
                s.best_weights = mine
            s.wait += 1
            if vl < s.best or s.best == math.inf:
                s.best, s.wait, s.best_weights = vl, 0, mine
            elif s.wait >= st.patience and s.epoch - 1 > 0:
                stop = True
        if stop:
            s.done = True
            s.weights = [a[g].copy() for a in (current if current is not None else _get_group_weights(net))]
            if not (has_val[g] and st.patience > 0):
                s.best_weights = None
            finished.append(g)
        else:
            s.epoch_order, s.pos, s.loss_mark = s.order(s.epoch), 0, float(sums[g])
    refill = finished[:len(queue)]  # finished members leave; the next waiting ones start fresh in their slots
    for g in refill:
        seat(g, queue.pop(0), float(sums[g]))
    if refill:
        _load_slots(net, opt, cur, refill)


def _get_group_weights(net: Any) -> list[np.ndarray]:
    keras = _keras()
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in net.trainable_variables]


def _val_losses(net: Any, states: list[_MemberState | None], which: list[int], B: int) -> dict[int, float]:
    """Validation MSE (mean over rows and outputs, as Keras' ``val_loss``) of the members in slots
    ``which`` (only those slots computed, in groups of more than ``_STATIC_SLOTS``; a smaller group computes
    all of its slots, its one traced shape)."""
    T, F = states[which[0]].m.X.shape[1:]
    G = len(states)
    static = G <= _STATIC_SLOTS  # as in training
    fed = list(range(G)) if static else which
    sizes = {g: len(states[g].m.X_val) for g in which}
    chunk = max(B, 256)
    at = np.asarray(fed, "int32")
    sq = dict.fromkeys(which, 0.0)
    for start in range(0, max(sizes.values()), chunk):
        xb = np.zeros((len(fed), chunk, T, F), "float32")
        for j, g in enumerate(fed):
            if g in sizes:
                part = states[g].m.X_val[start:start + chunk]
                xb[j, :len(part)] = part
        pred = np.asarray(net.predict_on_batch(xb if static else (xb, at)))
        for j, g in enumerate(fed):
            if sizes.get(g, 0) > start:
                yv = states[g].m.y_val[start:start + chunk]
                sq[g] += float(np.sum(np.mean((pred[j, :len(yv)] - yv) ** 2, axis=-1)))
    return {g: sq[g] / sizes[g] for g in which}


def activation_bytes_per_row(specs: list[LayerSpec], lookback: int, n_inputs: int) -> float:
    """Estimated bytes that one training row of one model holds during a grouped training step (the
    tensors the backward pass keeps), for sizing groups: 40 B per time step x unit of a recurrent layer,
    64 B per time step x unit x direction of a bidirectional one (its reversed copies and concatenations),
    32 B per output step x filter of a Conv1D plus its im2col columns, 16 B per unit of a dense layer.
    Calibrated on TensorFlow CPU peak RSS (LSTM(64), lookback 30: about 64 KiB per row measured, 75 KiB
    estimated); an estimate, not a bound."""
    T, feat, total = lookback, n_inputs, 0.0
    for s in specs:
        if s.kind in ("lstm", "gru", "bilstm"):
            dirs = 2 if s.kind == "bilstm" else 1
            total += (64 if dirs == 2 else 40) * T * s.units * dirs
            feat = s.units * dirs
            T = T if s.return_sequences else 1
        elif s.kind == "conv1d":
            L = -(-T // s.strides)
            total += 32 * L * s.units + 4 * L * s.kernel_size * feat
            T, feat = L, s.units
        elif s.kind == "flatten":
            feat, T = feat * T, 1
        elif s.kind == "dense":
            total += 16 * s.units * T
            feat = s.units
        elif s.kind == "dropout":
            total += 8 * T * feat
    return total


def models_per_group(specs: list[LayerSpec], lookback: int, n_inputs: int, batch_size: int,
                     memory_mib: float) -> int:
    """The most models whose estimated step activations (``batch_size`` rows each, see
    :func:`activation_bytes_per_row`) fit in ``memory_mib`` MiB; at least 1."""
    per_model = batch_size * activation_bytes_per_row(specs, lookback, n_inputs)
    return max(1, int(memory_mib * 2**20 // max(per_model, 1.0)))


def step_flops(specs: list[LayerSpec], lookback: int, n_inputs: int) -> float:
    """Multiply-add FLOPs of one training row through the network, forward + backward (~3x forward).

    Forward, counting 2 FLOPs per multiply-add of the matmuls only: LSTM ``2*T*(F+u)*4u`` per direction,
    GRU ``2*T*(F+u)*3u``, Conv1D ``2*L*k*C*filters``, Dense ``2*in*out``.
    """
    T, F, fwd = lookback, n_inputs, 0.0
    feat = F
    for s in specs:
        if s.kind in ("lstm", "bilstm", "gru"):
            gates = 3 if s.kind == "gru" else 4
            dirs = 2 if s.kind == "bilstm" else 1
            fwd += dirs * 2 * T * (feat + s.units) * gates * s.units
            feat = s.units * dirs
            T = T if s.return_sequences else 1
        elif s.kind == "conv1d":
            L = -(-T // s.strides)
            fwd += 2 * L * s.kernel_size * feat * s.units
            T, feat = L, s.units
        elif s.kind == "flatten":
            feat, T = feat * T, 1
        elif s.kind == "dense":
            fwd += 2 * feat * s.units
            feat = s.units
    return 3.0 * fwd
