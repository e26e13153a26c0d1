"""Units of work: how a plan's fold tasks are bundled for an executor, and in which order they are handed out.

A unit is what one worker computes at a time (:func:`backtest.folds.compute.run_unit`):

* ``group``: cold-start trainings of one architecture (folds, seeds, symbols, pooled folds alike) trained
  together as one vectorised computation with a leading model axis (:mod:`models.grouped`), each model
  with its own rows, seed, optimizer state, epochs and early stopping;
* ``chain``: the folds of one (symbol, model, seed) in order -- a warm-start chain (fold ``k`` starts from
  fold ``k-1``'s weights), a baseline's closed-form folds, or a network trained fold by fold
  (``walkforward.training = "per_fold"``, or a model the grouped trainer does not cover).

Units are a function of the plan and the config alone (never of the executor, the number of workers or
what is already done): a group is trained whole if any of its folds is missing and only the missing ones
are written, so a resumed run trains each model in the same company as an uninterrupted one and gives the
same floats (batched kernels round by shape).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtest.config import FeaturesConfig, ModelConfig, WalkForwardConfig
from backtest.errors import ConfigError

#: A grouped unit holds up to this many times its slots of folds: the slots are refilled from the rest as
#: models finish (one compiled shape, no idle slots while folds wait); a bound on the prepared data one
#: unit holds and on what a resume retrains.
QUEUE_SLOTS = 8
#: Grouped units per architecture, at least (when it has that many folds): work for two workers from the
#: first architecture on, whatever the executor. A constant, so that units -- and so results -- never
#: depend on the number of workers.
MIN_UNITS = 2


@dataclass
class Unit:
    """One unit of work: ``kind`` ``"group"`` or ``"chain"``, its tasks (a chain: in fold order), the weights
    a warm-started first task starts from (read back from the store on resume), and which of its tasks
    are missing from the store (only those are written; a group recomputes its finished folds for company)."""

    kind: str
    tasks: list[Any]  # FoldTask
    warm_weights: list[np.ndarray] | None = None
    missing: list[bool] = field(default_factory=list)


def model_params(cfg: ModelConfig, features: FeaturesConfig, seed: int) -> dict[str, Any]:
    """Hyper-parameters for the forecaster constructor: every validated key of the type's schema
    (:mod:`models.params`, defaults included). A key the forecaster does not take is an error, never dropped."""
    from models import get_forecaster_class

    klass = get_forecaster_class(cfg.type)
    params = cfg.model_dump(exclude={"type"}, exclude_none=True)
    unused = [k for k in params if k not in klass.param_names]
    if unused:
        raise ConfigError(f"models: {', '.join(unused)} is not a parameter of type {cfg.type!r}; "
                          f"allowed: {', '.join(klass.param_names)}")
    params.update(seed=seed, horizon=features.horizon)
    if "deterministic" in klass.param_names:
        params["deterministic"] = True
    return params


def group_key(task: Any) -> tuple | None:
    """What lets fold tasks train in one group: the forecaster's ``group_signature()`` (type, layer shapes,
    optimizer type: what must be equal), the same inputs and pooling. Batch size, learning rate, epochs,
    patience, dropout rates and L1/L2 coefficients may differ: each member trains with its own
    (``train_settings()``). A function of the task's config alone (never of the executor or workers).
    ``None``: the task trains in a chain (baselines, warm-started folds, per-fold training)."""
    from models import get_forecaster_class

    if not task.grouped:
        return None
    klass = get_forecaster_class(task.model_cfg.type)
    if task.warm or not hasattr(klass, "group_signature"):
        return None
    model = klass(**model_params(task.model_cfg, task.features, 0))
    return (model.group_signature(), task.features.model_dump_json(), task.deterministic,
            task.pooled, len(task.universe) if task.pooled else 0)


def group_cap(model_cfg: ModelConfig, features: FeaturesConfig, wf: WalkForwardConfig, n_inputs: int | None = None) -> int:
    """Models of this architecture training at once on the grouped path (the slots of a unit):
    ``group_size``, fewer where their estimated step activations (``batch_size`` rows each, of the group
    architecture: dropout layers counted whatever this config's rate) would pass ``group_memory_mib``
    (:func:`models.grouped.models_per_group`); 1 for models without a grouped form. ``n_inputs``: input
    channels per time step (default: ``features.inputs``; pooled one-hot adds one per symbol).

    Models of different configurations that share a group train through the smallest of their caps
    (:func:`make_units`, ``train_group``). The bytes per row are the same for all of them (one group
    architecture and inputs), so that smallest cap is the cap at the largest member batch size: the rows
    per slot a group step carries (:func:`models.grouped.trainer.step_rows`)."""
    from models import get_forecaster_class, make_forecaster
    from models.grouped import models_per_group

    if not hasattr(get_forecaster_class(model_cfg.type), "full_architecture"):
        return 1
    fc = make_forecaster(model_cfg.type, **model_params(model_cfg, features, 0))
    specs = fc.group_architecture(features.horizon)
    fit = models_per_group(specs, features.lookback, n_inputs or len(features.inputs), int(fc.p("batch_size")),
                           wf.group_memory_mib)
    return min(wf.group_size, fit)


def groups(tasks: list[Any], size: int, at_least: int = 1) -> list[list[Any]]:
    """Tasks of one key in units of at most ``size`` (and at least ``at_least`` units, a multiple of it),
    dealt out in turn from the tasks sorted by training rows: each unit holds small and large folds alike
    (units of about equal cost, so workers end together); a unit's folds take its slots in that order
    (see :func:`models.grouped.fit_group`)."""
    ordered = sorted(tasks, key=lambda t: (t.train_rows, t.k, t.seed, t.model_name))
    n = max(-(-len(ordered) // size), at_least)
    n = min(-(-n // at_least) * at_least, len(ordered))
    return [ordered[j::n] for j in range(n)]


def make_units(tasks: list[Any], complete: Any, weights_of: Any) -> list[Unit]:
    """The units of ``tasks`` (plan order) that still have work: groups of cold-start network folds, and
    chains of everything else per (symbol, model, seed) from its first missing fold on.

    ``complete(task) -> bool``: the fold is in the store. ``weights_of(folder) -> list[ndarray]``: the model
    weights of a stored fold folder (where a warm-start chain's first missing fold starts from).
    """
    buckets: dict[tuple, list[Any]] = {}
    chains: dict[str, list[Any]] = {}
    for t in tasks:
        key = group_key(t)
        if key is not None:
            buckets.setdefault(key, []).append(t)
        else:
            chains.setdefault(t.chain, []).append(t)
    units: list[Unit] = []
    for chain in chains.values():
        done = [complete(t) for t in chain]
        if all(done):
            continue
        j = done.index(False)
        warm = weights_of(chain[j].warm_from) if chain[j].warm else None
        units.append(Unit("chain", chain[j:], warm, [not d for d in done[j:]]))
    for bucket in buckets.values():
        for g in groups(bucket, QUEUE_SLOTS * min(t.group_slots for t in bucket), MIN_UNITS):
            missing = [not complete(t) for t in g]
            if any(missing):
                units.append(Unit("group", g, None, missing))
    return units


def needs_tensorflow(tasks: Iterable[Any]) -> bool:
    """Whether training these tasks imports TensorFlow (any network; the baselines fit in closed form)."""
    from models import BASELINE_TYPES

    return any(t.model_cfg.type not in BASELINE_TYPES for t in tasks)


def unit_cost(unit: Unit) -> float:
    """Relative CPU cost of a unit, for ordering the work (longest first): training rows x epochs x a per-row
    weight of the network (its recurrent loops, which dominate small networks' steps, plus its forward
    MFLOP per row); a fold trained alone costs about 4x its share of a group; baselines fit in closed form
    and cost next to nothing. A heuristic for scheduling only: results never depend on it."""
    from models import BASELINE_TYPES, make_forecaster
    from models.grouped import step_flops

    weights: dict[str, float] = {}

    def weight(t: Any) -> float:
        if t.model_cfg.type in BASELINE_TYPES:
            return 0.001
        if t.model_name not in weights:
            fc = make_forecaster(t.model_cfg.type, **model_params(t.model_cfg, t.features, 0))
            specs = fc.full_architecture(t.features.horizon)
            loops = sum((2 if s.kind == "bilstm" else 1) for s in specs if s.kind in ("lstm", "gru", "bilstm"))
            n_in = len(t.features.inputs)
            weights[t.model_name] = (loops + step_flops(specs, t.features.lookback, n_in) / 3e6) * int(fc.p("epochs"))
        return weights[t.model_name]

    return float(sum(t.train_rows * weight(t) * (1 if unit.kind == "group" else 4) for t in unit.tasks))


def work_order(units: list[Unit]) -> list[Unit]:
    """Units in the order the workers take them (each to the next free worker): network by network, the
    costliest network first, and within a network its costliest unit first. A worker that finishes early
    takes more work instead of idling while another trains a costly network, the cheap units fill the
    tail, and a worker moves on to a new architecture only once the one before is handed out (its compiled
    trainers are then dropped: ``models.grouped``), so one architecture's graphs are resident at a time."""
    cost = [unit_cost(u) for u in units]
    per_model: dict[str, float] = {}
    for u, c in zip(units, cost, strict=True):
        per_model[u.tasks[0].model_name] = per_model.get(u.tasks[0].model_name, 0.0) + c
    order = sorted(range(len(units)), key=lambda i: (-per_model[units[i].tasks[0].model_name],
                                                     units[i].tasks[0].model_name, -cost[i]))
    return [units[i] for i in order]


__all__ = ["MIN_UNITS", "QUEUE_SLOTS", "Unit", "group_cap", "group_key", "groups", "make_units", "model_params",
           "needs_tensorflow", "unit_cost", "work_order"]
