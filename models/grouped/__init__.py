"""Vectorised multi-model training: G independent networks of one architecture trained as one computation.

Walk-forward research is retraining: the cold-start folds of a (model, seed), the seeds of a run and the
grid points of a sweep that share a shape are independent trainings of the same architecture. Here they
run as *one* compiled Keras training step over a leading model axis ``G``: inputs ``(G, B, T, F)``,
weights ``(G, in, out)``, kernels applied as batched ``keras.ops.matmul`` ``(G, B, in) x (G, in, out)``.

What the modules hold:

* :mod:`~models.grouped.layers`: :class:`LayerSpec` (an architecture, described once) and the grouped
  layers (LSTM, GRU, BiLSTM, Conv1D, Dense, dropout with per-model rates and masks);
* :mod:`~models.grouped.network`: the group's Keras model (per-model loss with each member's own
  regularisation penalties) and its masked optimizer (per-model steps and learning rates);
* :mod:`~models.grouped.settings`: :class:`TrainSettings` -- what a group shares (the optimizer type) and
  what each member sets (epochs, batch size, patience, learning rate, dropout rates, L1/L2 coefficients);
* :mod:`~models.grouped.trainer`: :func:`fit_group` -- members through slots, each on its own epoch clock
  with its own early stopping;
* :mod:`~models.grouped.weights`: a fresh model's initial weights; :mod:`~models.grouped.sizing`: memory
  and FLOP estimates (models per group, step FLOPs).

Each model keeps its own weights and optimizer slots (Adam/RMSprop/SGD are elementwise, so a stacked
optimizer equals per-model optimizers; a per-model ``active`` mask freezes weights *and* slots of a model
that is idle this step or finished, and its own step counter drives Adam's bias correction), its own data
rows, batch size, per-epoch permutation, masked last partial batch, learning rate, epoch count, dropout
stream (stateless, seeded by the model's seed and its own step) and rates, penalties and Keras
``EarlyStopping`` semantics. The loss of the group is the sum of each model's own loss over its valid rows
(its mean over its own rows of the step); the weights are disjoint, so each model gets exactly the gradient
it would get alone. A step carries the largest member batch size of rows per model: a member with a smaller
batch fills only its own rows (the rest masked), so it computes the step's rows but trains as alone.

Why grouped layers in ``keras.ops`` rather than JAX's stateless step mapped over weights: TensorFlow is
the declared backend; grouped layers run in its graph mode (XLA was measured slower for a grouped LSTM
step on this 2-core CPU, in issue 9, so ``jit_compile=False``) and, being plain ``keras.ops`` with Keras'
own trainer (``train_on_batch`` with an overridden ``compute_loss``), need no backend-specific code. Only
the TensorFlow backend (CPU) was run here; JAX, PyTorch and GPUs were not.

The grouped model has the weight layout of the single Keras model, so a model's slice of the group weights
loads into the single model unchanged. Importing this package does not import Keras.
"""
from __future__ import annotations

from models.grouped.layers import LayerSpec
from models.grouped.settings import GroupUses, TrainSettings
from models.grouped.sizing import activation_bytes_per_row, models_per_group, step_flops
from models.grouped.trainer import Fitted, GroupStats, Member, fit_group
from models.grouped.weights import initial_weights, weight_inits

__all__ = ["Fitted", "GroupStats", "GroupUses", "LayerSpec", "Member", "TrainSettings", "activation_bytes_per_row",
           "fit_group", "initial_weights", "models_per_group", "step_flops", "weight_inits"]
