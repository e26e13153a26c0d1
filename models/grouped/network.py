"""The group's Keras model and optimizer: ``n_models`` networks of one architecture as one compiled
training step (defined lazily by :func:`make_network`, so importing this module does not import Keras).

The loss of the group is the sum of each model's own loss: its batch MSE over its valid rows (divided by
its own count of rows with weight 1 this step -- its batch size, or fewer in its last batch -- never by the
step's rows per slot, which is the largest member batch size), plus its own
regularisation penalties (weights: ``l1 * sum|w| + l2 * sum w^2`` over its slice of each regularised
weight; activity: the same over its regularised layers' outputs, per valid row, divided by its rows, as
Keras 3 divides by the batch size). The weights are disjoint, so each model gets exactly the gradient it
would get alone: no member's penalty reaches another member's weights. Adam, RMSprop and SGD are
elementwise, so a stacked optimizer with a per-model learning rate equals per-model optimizers.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from models.grouped.layers import REGULARISED, LayerSpec, make_layers
from models.grouped.settings import PENALTY_KEYS, GroupUses

_COEF = {k: i for i, k in enumerate(PENALTY_KEYS)}


@functools.cache
def make_network() -> tuple[type, type]:
    """``(GroupNet, MaskedOptimizer)`` classes."""
    import keras

    ops = keras.ops
    layer_classes = make_layers()

    class GroupNet(keras.Model):
        """``n_models`` networks of one architecture: ``(G, B, T, F) -> (G, B, horizon)``, or, called with
        ``(x, live)``, only the slots ``live`` (int32 ``(n,)``): ``x`` ``(n, B, T, F) -> (n, B, horizon)`` with
        those slots' weights (gathered in the step, so the gradients of the others are zero and a group
        whose models have finished costs only its live ones; used by groups of more than ``_STATIC_SLOTS``).
        With an activity regulariser in ``uses`` the output has one more channel: each row's activity penalty.

        Non-trainable state, set by the trainer once per round (not per step: a variable assign from
        Python costs about as much as 5% of a step): ``model_seeds`` ``(G,)`` int32, ``steps`` ``(G,)``
        (each model's own optimizer steps so far), ``learning_rates`` ``(G,)``, and, as ``uses`` asks, per
        model and layer dropout thresholds and scales and the regulariser coefficients ``(G, 8)``
        (:data:`PENALTY_KEYS` order). Inside the compiled step, :meth:`compute_loss` sets ``active``
        ``(G,)`` (1 where the model has rows in this batch), adds it to ``steps`` (so Adam's bias correction
        sees the model's own count) and adds to ``loss_sums`` ``(G,)`` (per-model sum of batch loss x batch
        rows); dropout is seeded by (model seed, the model's step).
        """

        def __init__(self, specs: list[LayerSpec], n_models: int, uses: GroupUses = GroupUses(), **kw: Any) -> None:
            super().__init__(**kw)
            self.n_models, self.uses = n_models, uses
            self.glayers = [layer_classes[s.kind](n_models, s, i, name=f"g{i}_{s.kind}") for i, s in enumerate(specs)]
            self.noisy = uses.recurrent_dropout or any(s.kind == "dropout" for s in specs)
            self.activity = "activity" in uses.penalties
            var = functools.partial(keras.Variable, trainable=False)
            self.model_seeds = var(np.zeros(n_models, "int32"), dtype="int32", name="model_seeds")
            self.steps = var(np.zeros(n_models, "float32"), name="model_steps")
            self.active = var(np.zeros(n_models, "float32"), name="active")
            self.loss_sums = var(np.zeros(n_models, "float32"), name="loss_sums")
            self.learning_rates = var(np.zeros(n_models, "float32"), name="learning_rates")
            L = len(specs)
            if uses.dropout:
                self.drop_threshold = var(np.zeros((n_models, L), "int32"), dtype="int32", name="drop_threshold")
                self.drop_scale = var(np.ones((n_models, L), "float32"), name="drop_scale")
            if uses.recurrent_dropout:
                self.rec_threshold = var(np.zeros((n_models, L), "int32"), dtype="int32", name="rec_threshold")
                self.rec_scale = var(np.ones((n_models, L), "float32"), name="rec_scale")
            if uses.penalties:
                self.coefs = var(np.zeros((n_models, len(PENALTY_KEYS)), "float32"), name="penalty_coefs")

        def _noise(self, live: Any) -> dict | None:
            """This step's per-model dropout inputs (the fed slots' rows): seeds (model seed, its step number:
            its count before the step, plus one) and rates."""
            pick = (lambda v: v.value) if live is None else (lambda v: ops.take(v.value, live, axis=0))
            seeds = ops.stack([self.model_seeds.value, ops.cast(self.steps.value, "int32") + 1], axis=1)
            noise = {"seeds": seeds if live is None else ops.take(seeds, live, axis=0)}
            if self.uses.dropout:
                noise.update(drop_threshold=pick(self.drop_threshold), drop_scale=pick(self.drop_scale))
            if self.uses.recurrent_dropout:
                noise.update(rec_threshold=pick(self.rec_threshold), rec_scale=pick(self.rec_scale))
            return noise

        def _coefs(self, live: Any, key: str) -> Any:
            c = self.coefs.value[:, _COEF[key]]
            return c if live is None else ops.take(c, live, axis=0)

        def call(self, x: Any, training: bool = False) -> Any:
            x, live = x if isinstance(x, (tuple, list)) else (x, None)
            noise = self._noise(live) if training and self.noisy else None
            pen = None
            if self.activity:
                a1, a2 = self._coefs(live, "activity_l1")[:, None], self._coefs(live, "activity_l2")[:, None]
            for layer in self.glayers:
                x = layer(x, live=live, noise=noise)
                if self.activity and layer.spec.kind in REGULARISED:
                    axes = tuple(range(2, len(x.shape)))
                    row = a1 * ops.sum(ops.abs(x), axis=axes) + a2 * ops.sum(ops.square(x), axis=axes)
                    pen = row if pen is None else pen + row
            if self.activity:  # each row's activity penalty rides along as one more output channel
                x = ops.concatenate([x, ops.expand_dims(pen, -1)], axis=-1)
            return x

        def weight_penalty(self, live: Any = None) -> Any:
            """Each model's weight-regularisation penalty ``(n,)``: ``l1 * sum|w| + l2 * sum w^2`` over its
            slice of every weight whose role the group regularises (Keras' ``L1L2``, per member)."""
            total = None
            for layer in self.glayers:
                for w, role in layer.regularised:
                    if role not in self.uses.penalties:
                        continue
                    w = w.value if live is None else ops.take(w.value, live, axis=0)
                    axes = tuple(range(1, len(w.shape)))
                    term = (self._coefs(live, f"{role}_l1") * ops.sum(ops.abs(w), axis=axes)
                            + self._coefs(live, f"{role}_l2") * ops.sum(ops.square(w), axis=axes))
                    total = term if total is None else total + term
            return total

        def split_output(self, y_pred: Any) -> tuple[Any, Any]:
            """``(forecasts, per-row activity penalty or None)`` of an output of :meth:`call`."""
            if not self.activity:
                return y_pred, None
            return y_pred[..., :-1], y_pred[..., -1]

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                         training: bool = True) -> Any:
            """Sum over models of each model's loss: mean squared error over its valid rows of the batch (the
            rows of the slots in ``x``'s ``live``, when given; per-slot counters are scattered back) plus its
            own penalties."""
            y_pred, pen = self.split_output(y_pred)
            se = ops.mean(ops.square(y_pred - y), axis=-1)  # (n, B)
            rows = ops.sum(sample_weight, axis=1)
            per_model = ops.sum(se * sample_weight, axis=1) / ops.maximum(rows, 1.0)
            if pen is not None:
                per_model = per_model + ops.sum(pen * sample_weight, axis=1) / ops.maximum(rows, 1.0)
            live = x[1] if isinstance(x, (tuple, list)) else None
            if any(r != "activity" for r in self.uses.penalties):
                per_model = per_model + self.weight_penalty(live)
            if training:
                active, sums = ops.cast(rows > 0, "float32"), per_model * rows
                if live is not None:
                    at = ops.expand_dims(live, 1)
                    active = ops.scatter(at, active, (self.n_models,))
                    sums = ops.scatter(at, sums, (self.n_models,))
                self.active.assign(active)
                self.steps.assign(self.steps + active)
                self.loss_sums.assign(self.loss_sums + sums)
            return ops.sum(per_model)

    class MaskedOptimizer(keras.optimizers.Optimizer):
        """Adam, RMSprop or SGD (Keras' formulas and defaults) over stacked weights with a per-model
        ``active`` mask (an inactive model's weights and slots do not move), per-model step counts ``steps``
        (Adam's bias correction uses the model's own step, not the group's) and per-model learning rates;
        all three are the GroupNet's variables (the first two updated in its compiled step before the
        optimizer runs)."""

        def __init__(self, kind: str, n_models: int, net: Any, **kw: Any) -> None:
            super().__init__(learning_rate=1.0, name=f"masked_{kind}", **kw)  # unused: each model has its own
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
            lr = ops.reshape(ops.cast(net.learning_rates, variable.dtype), shape)
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


__all__ = ["make_network"]
