"""The fit of a group: members through slots, each on its own epoch clock, with its own early stopping.

Each member keeps its own data rows, per-epoch permutation (``numpy.random.default_rng(seed)``), masked
last partial batch, weights and optimizer slots, learning rate, epoch count, dropout stream and rates,
regularisation penalties, batch size and Keras ``EarlyStopping(monitor="val_loss", patience,
restore_best_weights=True)`` semantics; the group shares the architecture and the optimizer type
(:mod:`models.grouped.settings`). A step feeds ``B`` = the largest member batch size rows per slot; a member
with batch ``b`` fills its first ``b`` of them (the rest carry weight 0), so its epoch is ``ceil(n / b)`` of
its own steps and its batch loss is the mean over its own rows, as alone. Each model starts its next epoch
the step after its last batch, and its validation pass and early-stopping check run at its own epoch ends;
a finished model's slot takes the next waiting training (see :func:`fit_group`).

A group of at most ``_STATIC_SLOTS`` slots feeds every slot at every step (a slot without rows computes
and does not move), so its trainer is traced for one shape. A larger group feeds only the slots whose
models still train: it is given their slot indices, gathers their weights inside the compiled step and
scatters their counters back, so at the end of a unit the finished slots cost nothing, for one more trace
(TensorFlow relaxes the leading dimension at the second shape it sees; measured here about 5 MiB for an
LSTM(32), about 90 MiB and one more trace time for the 3-layer BiLSTM(8), whose groups are small).
"""
from __future__ import annotations

import ctypes
import gc
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.grouped.layers import RECURRENT, LayerSpec, keep_scale, keep_threshold
from models.grouped.network import make_network
from models.grouped.settings import SHARED_KEYS, GroupUses, TrainSettings
from models.grouped.weights import initial_weights

#: Groups of at most this many slots feed every slot at every step (a slot with no rows computes and does
#: not move), so their trainer keeps one traced shape; larger groups feed only their live slots (the tail of
#: a unit costs only its live models, for one more, shape-relaxed trace: ~5 MiB for an LSTM(32), ~90 MiB for
#: the 3-layer bidirectional LSTM, whose memory-bound groups are small).
_STATIC_SLOTS = 8
_CACHE_MAX = 4  # compiled group trainers a cache keeps (least recently used dropped): each holds 35-70 MiB of graphs (not all returned once dropped)


def _keras() -> Any:
    import keras

    return keras


@dataclass
class Member:
    """One training of the group: rows ``X`` ``(n, T, F)`` float32, targets ``y`` ``(n, H)``, optional
    validation rows, the model's seed (shuffling, dropout, initial weights), its own training settings
    (``None``: the group's default given to :func:`fit_group`), and optionally given initial weights
    (single-model layout) and per-epoch batch orders (for equivalence tests)."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    seed: int = 0
    weights: list[np.ndarray] | None = None
    orders: list[np.ndarray] | None = None
    settings: TrainSettings | None = None


@dataclass
class Fitted:
    """What one member's training produced: final weights (single-model layout) and per-epoch history."""

    weights: list[np.ndarray]
    history: list[dict[str, float]] = field(default_factory=list)
    model_steps: int = 0


@dataclass
class GroupStats:
    """Work counters of one :func:`fit_group` call: group steps, model-steps that trained (active) and
    slot-steps with no model training (empty or finished slots: not computed, only counted)."""

    steps: int = 0
    active_model_steps: int = 0
    idle_model_steps: int = 0


def member_rates(specs: list[LayerSpec], st: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """A member's dropout and recurrent-dropout rate per layer of ``specs`` (0 where the layer has none):
    its own ``st.dropout`` / ``st.recurrent_dropout``, or, where those are ``None``, the specs' rates."""
    drop = np.array([(s.rate if st.dropout is None else st.dropout) if s.kind == "dropout" else 0.0 for s in specs])
    rec = np.array([(s.recurrent_dropout if st.recurrent_dropout is None else st.recurrent_dropout)
                    if s.kind in RECURRENT else 0.0 for s in specs])
    return drop, rec


def fit_group(specs: list[LayerSpec], members: list[Member], settings: TrainSettings = TrainSettings(),
              stats: GroupStats | None = None, cache: dict[tuple, Any] | None = None,
              slots: int | None = None) -> list[Fitted]:
    """Train every member as if alone, all in one compiled computation; returns one :class:`Fitted` each.

    Each member: its own rows, epoch-wise permutation from ``numpy.random.default_rng(seed)`` (or the given
    ``orders``), last partial batch masked, its own settings (``member.settings`` or ``settings``: epochs,
    patience, learning rate, dropout rates, regularisers), Keras' training loss per epoch (batch loss --
    MSE plus the member's penalties -- averaged with batch-row weights), validation loss at each epoch end
    (Keras' ``val_loss``: MSE plus penalties), ``EarlyStopping`` semantics (``patience``, best weights
    restored at the end). Shapes: all members share ``(T, F)`` and ``H``; all share ``optimizer`` (a
    ``ValueError`` otherwise). Batch sizes may differ: each step feeds ``B = max(batch sizes)`` rows per
    slot, a member with batch ``b`` filling its first ``b`` (the rest masked, weight 0), so it takes
    ``ceil(n / b)`` steps an epoch, its Adam count advancing once per own batch; a member with a smaller
    batch still computes ``B`` rows a step.

    ``slots``: how many members train at once (default: all). Members take the slots in the given order; at
    each epoch end a finished member's slot is refilled with the next waiting one (its own fresh weights,
    zeroed optimizer slots and step count), so no slot idles while members wait. A group of at most
    ``_STATIC_SLOTS`` slots feeds all of them at every step (one traced shape); a larger one feeds only the
    slots whose models still train (their weights gathered inside the step), so when none wait the
    finished ones cost nothing. ``cache`` (optional, owned by the caller) keeps
    compiled group trainers by slot count across calls to skip graph tracing; each is reset before use, so
    results do not depend on it.
    """
    own = [m.settings if m.settings is not None else settings for m in members]
    for key in SHARED_KEYS:
        values = {getattr(s, key) for s in own}
        if len(values) > 1:
            raise ValueError(f"a group shares its {key}; its members have {sorted(values, key=str)}")
    stats = stats if stats is not None else GroupStats()
    rates = [member_rates(specs, s) for s in own]
    uses = GroupUses.of([(float(d.max(initial=0)), float(r.max(initial=0))) for d, r in rates], own)
    build = specs if uses.dropout else [s for s in specs if s.kind != "dropout"]
    T, F = members[0].X.shape[1:]
    B = step_rows(own)
    states = [_MemberState(m, st, specs, build, T, F) for m, st in zip(members, own, strict=True)]
    G = min(len(members), slots or len(members))
    queue = list(range(G, len(members)))  # members waiting for a slot, in order
    slot: list[int | None] = list(range(G))  # member index per slot (None: empty)
    _train_rounds(states, slot, queue, build, own[0].optimizer, uses, B, stats, cache)
    return [s.result() for s in states]


def step_rows(settings: list[TrainSettings]) -> int:
    """Rows per slot of one group step: the largest of the members' batch sizes (each member fills only its
    own batch size of them)."""
    return max(int(s.batch_size) for s in settings)


class _MemberState:
    """Bookkeeping of one member: its settings, rows, own batch size ``b`` (rows per own step), shuffles,
    steps, epochs, history and early-stopping state, and its per-layer dropout rates in the built
    architecture ``build``."""

    def __init__(self, m: Member, st: TrainSettings, specs: list[LayerSpec], build: list[LayerSpec],
                 T: int, F: int) -> None:
        self.m, self.st, self.n = m, st, len(m.X)
        self.b = int(st.batch_size)
        self.rng = np.random.default_rng(m.seed)
        self.weights = m.weights if m.weights is not None else initial_weights(specs, T, F, m.seed)
        self.drop, self.rec = member_rates(build, st)
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


def _trainer(specs: list[LayerSpec], G: int, T: int, F: int, optimizer: str, cache: dict | None,
             uses: GroupUses = GroupUses()) -> tuple[Any, Any]:
    """A compiled (GroupNet, MaskedOptimizer) for G models, from ``cache`` when one of this shape exists."""
    key = ("group", tuple(specs), G, T, F, optimizer, uses)
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
    GroupNet, MaskedOptimizer = make_network()
    net = GroupNet(specs, G, uses)
    net(np.zeros((G, 1, T, F), "float32"))
    opt = MaskedOptimizer(optimizer, G, net)
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
    (0), seeds, learning rates, dropout rates and penalty coefficients; empty slots get zeros. One read and
    one assign per variable."""
    keras = _keras()

    def put(var: Any, value: Callable[[_MemberState], Any], empty: Any = 0) -> None:
        a = np.array(keras.ops.convert_to_numpy(var))
        for g in which:
            a[g] = value(states[g]) if states[g] is not None else empty
        var.assign(a)

    for j, var in enumerate(net.trainable_variables):
        put(var, lambda s, j=j: s.weights[j], 0.0)
    for var in opt.m + opt.v:
        a = np.array(keras.ops.convert_to_numpy(var))
        a[which] = 0.0
        var.assign(a)
    put(net.model_seeds, lambda s: s.m.seed % (2**31 - 1))
    put(net.steps, lambda s: s.step)
    put(net.learning_rates, lambda s: np.float32(s.st.learning_rate))
    if net.uses.dropout:
        put(net.drop_threshold, lambda s: [keep_threshold(r) for r in s.drop])
        put(net.drop_scale, lambda s: [keep_scale(r) for r in s.drop], 1.0)
    if net.uses.recurrent_dropout:
        put(net.rec_threshold, lambda s: [keep_threshold(r) for r in s.rec])
        put(net.rec_scale, lambda s: [keep_scale(r) for r in s.rec], 1.0)
    if net.uses.penalties:
        put(net.coefs, lambda s: np.asarray(s.st.penalties(), "float32"), 0.0)


def _train_rounds(states: list[_MemberState], slot: list[int | None], queue: list[int], specs: list[LayerSpec],
                  optimizer: str, uses: GroupUses, B: int, stats: GroupStats, cache: dict | None = None) -> None:
    """Train the members in ``slot`` (indices into ``states``) as one group, each on its own epoch clock: a
    model starts its next epoch (a new permutation) the step after its last batch, its validation pass and
    early-stopping check run at its own epoch ends, and a finished model's slot is refilled from ``queue``
    (consumed). Each step feeds ``B`` rows per slot (the largest member batch size); a member fills its own
    batch size of them, the rest weight 0. Groups of more than ``_STATIC_SLOTS`` slots feed only the slots
    still training (``(x, live)``, see ``GroupNet``); runs until all are done."""
    keras = _keras()
    G = len(slot)
    T, F = states[0].m.X.shape[1:]
    H = states[0].m.y.shape[1]
    net, opt = _trainer(specs, G, T, F, optimizer, cache, uses)
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
            rows = s.epoch_order[s.pos:s.pos + s.b]  # its own batch: at most B rows
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
            _end_epochs(net, cur, ended, B, keras, queue, seat, opt)


def _end_epochs(net: Any, cur: list[_MemberState | None], ended: list[int], B: int, keras: Any,
                queue: list[int], seat: Callable[[int, int | None, float], None], opt: Any) -> None:
    """Epoch ends of the members in slots ``ended``: history (Keras' epoch loss: batch loss weighted by
    batch rows, over the epoch's rows), validation loss, ``EarlyStopping`` with the member's own patience
    (best weights kept), then either the member's next epoch (up to its own epochs) or, finished, its slot
    refilled with the next waiting member."""
    sums = np.asarray(keras.ops.convert_to_numpy(net.loss_sums))
    has_val = {g: cur[g].m.X_val is not None and len(cur[g].m.X_val) > 0 for g in ended}
    val = _val_losses(net, cur, [g for g in ended if has_val[g]], B) if any(has_val.values()) else {}
    current = None
    finished: list[int] = []
    for g in ended:
        s = cur[g]
        st = s.st
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
    """Validation loss, as Keras' ``val_loss``, of the members in slots ``which``: MSE (mean over rows and
    outputs) plus, where the group regularises, the member's weight penalty at its current weights and its
    activity penalty per row averaged over the rows (Keras averages each batch's loss weighted by its rows).
    Only those slots are computed in groups of more than ``_STATIC_SLOTS``; a smaller group computes all of
    its slots, its one traced shape."""
    keras = _keras()
    T, F = states[which[0]].m.X.shape[1:]
    G = len(states)
    static = G <= _STATIC_SLOTS  # as in training
    fed = list(range(G)) if static else which
    sizes = {g: len(states[g].m.X_val) for g in which}
    chunk = max(B, 256)
    at = np.asarray(fed, "int32")
    sq = dict.fromkeys(which, 0.0)
    act = dict.fromkeys(which, 0.0)
    for start in range(0, max(sizes.values()), chunk):
        xb = np.zeros((len(fed), chunk, T, F), "float32")
        for j, g in enumerate(fed):
            if g in sizes:
                part = states[g].m.X_val[start:start + chunk]
                xb[j, :len(part)] = part
        pred, pen = net.split_output(np.asarray(net.predict_on_batch(xb if static else (xb, at))))
        for j, g in enumerate(fed):
            if sizes.get(g, 0) > start:
                yv = states[g].m.y_val[start:start + chunk]
                sq[g] += float(np.sum(np.mean((pred[j, :len(yv)] - yv) ** 2, axis=-1)))
                if pen is not None:
                    act[g] += float(np.sum(pen[j, :len(yv)]))
    out = {g: sq[g] / sizes[g] for g in which}
    if net.activity:
        out = {g: out[g] + act[g] / sizes[g] for g in which}
    if any(r != "activity" for r in net.uses.penalties):
        wpen = np.asarray(keras.ops.convert_to_numpy(net.weight_penalty()))
        out = {g: out[g] + float(wpen[g]) for g in which}
    return out


__all__ = ["Fitted", "GroupStats", "Member", "fit_group", "member_rates", "step_rows"]
