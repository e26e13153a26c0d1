"""The grouped trainer gives each model the training it would get alone (models/grouped/).

Reference: a standard single Keras model of the same architecture (``KerasForecaster.build``), given the
same initial weights, trained with Keras' own Adam by ``train_on_batch`` on the same batch order (last
partial batch included), with Keras' EarlyStopping rule applied by hand.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models import make_forecaster
from models.grouped import Member, TrainSettings, fit_group, initial_weights

def tiny(model_type: str) -> dict:
    """Each type takes only its own keys (per-type schemas): 4 filters for the cnn, 4 units otherwise."""
    return {"filters": 4} if model_type == "cnn" else {"units": 4}
NETWORKS = ("lstm", "stacked_lstm", "bilstm", "gru", "cnn")


def data(n: int, seed: int, T: int = 3, F: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, F)).astype("float32")
    y = (X[:, -1, :1] * 0.5 + rng.normal(scale=0.1, size=(n, 1))).astype("float32")
    return X, y


def keras_reference(fc, X, y, weights, orders, batch, epochs, X_val=None, y_val=None, patience=0, cache=None,
                    lr=1e-2, keras_val=False):
    """Train one standard Keras model on the given batch order; returns (weights, per-epoch losses).
    ``cache`` reuses one compiled model (weights set, Adam slots and step counter zeroed: a fresh start).
    ``fc`` builds the model (its regularisers included); ``keras_val``: the validation loss is Keras' own
    (``test_on_batch``: MSE plus the regularisation penalties, as ``fit``'s ``val_loss``). The model runs
    eagerly (``run_eagerly``: Keras' same train step, untraced): these references take a few steps each,
    and tracing a step took 4 to 6 s for the BiLSTM, most of this file's time."""
    import keras

    model = (cache or {}).get("model")
    if model is None:
        model = fc.build(X.shape[1], X.shape[2], compile=False)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse", jit_compile=False, run_eagerly=True)
        if cache is not None:
            cache["model"] = model
    elif model.optimizer.built:
        for v in model.optimizer.variables:
            if not v.path.endswith("learning_rate"):
                v.assign(np.zeros(v.shape, v.dtype))
    model.set_weights(weights)
    best, best_w, wait, losses = np.inf, None, 0, []
    for e in range(epochs):
        total = 0.0
        for j in range(0, len(X), batch):
            rows = orders[e][j:j + batch]
            total += float(model.train_on_batch(X[rows], y[rows])) * len(rows)
        losses.append(total / len(X))
        if X_val is not None and patience:
            vl = (float(model.test_on_batch(X_val, y_val)) if keras_val
                  else float(np.mean((np.asarray(model(X_val)) - y_val) ** 2)))
            if best_w is None:
                best_w = model.get_weights()
            wait += 1
            if vl < best:
                best, best_w, wait = vl, model.get_weights(), 0
            elif wait >= patience and e > 0:
                break
    return (best_w if best_w is not None else model.get_weights()), losses


@pytest.mark.parametrize("model_type", NETWORKS)
def test_group_of_k_equals_k_separate_keras_trainings(model_type: str) -> None:
    fc = make_forecaster(model_type, **tiny(model_type), seed=0, horizon=1, dropout=0.0)
    specs = fc.full_architecture(1)
    sizes, batch, epochs = (37, 50, 23), 16, 2  # different sizes: different batches per epoch, partial last batches
    members, refs, cache = [], [], {}
    for g, n in enumerate(sizes):
        X, y = data(n, g)
        w0 = initial_weights(specs, X.shape[1], X.shape[2], seed=g)
        rng = np.random.default_rng(100 + g)
        orders = [rng.permutation(n) for _ in range(epochs)]
        members.append(Member(X, y, seed=g, weights=w0, orders=orders))
        refs.append(keras_reference(fc, X, y, w0, orders, batch, epochs, cache=cache))
    fits = fit_group(specs, members, TrainSettings(epochs=epochs, batch_size=batch, patience=0, learning_rate=1e-2))
    for fit, member, (w_ref, loss_ref) in zip(fits, members, refs):
        assert [w.shape for w in fit.weights] == [w.shape for w in w_ref]
        assert not np.allclose(fit.weights[0], member.weights[0])  # it trained
        for a, b in zip(fit.weights, w_ref):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose([h["loss"] for h in fit.history], loss_ref, rtol=1e-4)
    if model_type == "lstm":  # a group of one equals its slot in the group of three
        single = fit_group(specs, members[1:2], TrainSettings(epochs=epochs, batch_size=batch, patience=0, learning_rate=1e-2))
        for a, b in zip(single[0].weights, fits[1].weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_early_stopping_per_model_matches_keras_rule() -> None:
    fc = make_forecaster("lstm", **tiny("lstm"), seed=0, horizon=1)
    specs = fc.full_architecture(1)
    members, refs, cache = [], [], {}
    epochs, batch, patience = 6, 16, 1
    for g, n in enumerate((40, 64)):
        X, y = data(n, g)
        Xv, yv = data(12, 50 + g)
        if g == 0:
            yv = -yv  # validation that gets worse as the model fits: stops early
        w0 = initial_weights(specs, 3, 2, seed=g)
        rng = np.random.default_rng(g)
        orders = [rng.permutation(n) for _ in range(epochs)]
        members.append(Member(X, y, Xv, yv, seed=g, weights=w0, orders=orders))
        refs.append(keras_reference(fc, X, y, w0, orders, batch, epochs, Xv, yv, patience, cache=cache))
    fits = fit_group(specs, members, TrainSettings(epochs=epochs, batch_size=batch, patience=patience, learning_rate=1e-2))
    assert len(fits[0].history) < epochs  # model 0 stopped early, model 1 did not have to stop with it
    for fit, (w_ref, loss_ref) in zip(fits, refs):
        assert len(fit.history) == len(loss_ref)
        for a, b in zip(fit.weights, w_ref):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_dropout_model_trains_the_same_alone_as_in_a_group() -> None:
    """A model's dropout masks come from its own seed and step count only: trained in a group of three, it
    ends where it ends trained alone (company, and its slot in the group, do not change its masks)."""
    fc = make_forecaster("stacked_lstm", units=4, seed=0, horizon=1, dropout=0.3)
    specs = fc.full_architecture(1)
    assert any(s.kind == "dropout" for s in specs)
    members = []
    for g, n in enumerate((30, 41, 25)):
        X, y = data(n, g)
        members.append(Member(X, y, seed=10 + g))
    st = TrainSettings(epochs=2, batch_size=8, patience=0, learning_rate=1e-2)
    group = fit_group(specs, members, st)
    cache: dict = {}  # both one-model trainings below share one traced trainer (reset before each)
    alone = fit_group(specs, members[2:3], st, cache=cache)
    for a, b in zip(alone[0].weights, group[2].weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    other = Member(members[2].X, members[2].y, seed=99, weights=initial_weights(specs, 3, 2, 12))
    other_seed = fit_group(specs, [other], st, cache=cache)
    assert not np.allclose(other_seed[0].weights[0], alone[0].weights[0])  # the seed does drive the masks


def test_dropout_keep_mask_rate_and_scaling() -> None:
    """Inverted dropout: about (1 - rate) of the values kept, each scaled by 1 / (1 - rate); the masks of
    two models (two seeds), and of two steps of one model, differ."""
    import keras

    from models.grouped import LayerSpec
    from models.grouped.layers import keep_scale, keep_threshold, make_layers

    layer = make_layers()["dropout"](2, LayerSpec("dropout", rate=0.25), 1)
    x = np.ones((2, 64, 10, 8), "float32")
    seeds = np.array([[3, 1], [4, 1]], "int32")
    rates = {"drop_threshold": np.full((2, 2), keep_threshold(0.25), "int32"), "drop_scale": np.full((2, 2), keep_scale(0.25), "float32")}
    y = np.asarray(keras.ops.convert_to_numpy(layer(x, noise={"seeds": seeds, **rates})))
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    kept = (y > 0).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(kept, 0.75, atol=0.02)
    assert (y[0] != y[1]).mean() > 0.2
    y2 = np.asarray(keras.ops.convert_to_numpy(layer(x, noise={"seeds": np.array([[3, 2], [4, 1]], "int32"), **rates})))
    assert (y2[0] != y[0]).mean() > 0.2 and np.array_equal(y2[1], y[1])
    np.testing.assert_array_equal(np.asarray(keras.ops.convert_to_numpy(layer(x, noise=None))), x)  # not training


@pytest.mark.parametrize("static_slots", [8, 0], ids=["one-shape", "live-slots"])
def test_refilled_slots_train_each_model_as_alone(static_slots: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five models through two slots (a finished model's slot is refilled with the next, fresh): each ends
    where it ends trained alone, early stopping at its own epoch included, and no slot idles while
    models wait; both when every slot is fed at every step (small groups) and when only the live ones are."""
    from models.grouped import GroupStats, trainer

    monkeypatch.setattr(trainer, "_STATIC_SLOTS", static_slots)

    fc = make_forecaster("gru", units=4, seed=0, horizon=1, dropout=0.0)
    specs = fc.full_architecture(1)
    members = []
    for g, n in enumerate((33, 40, 26, 47, 30)):
        X, y = data(n, g)
        Xv, yv = data(10, 70 + g)
        members.append(Member(X, y, Xv, -yv if g % 2 else yv, seed=20 + g))
    st = TrainSettings(epochs=5, batch_size=8, patience=1, learning_rate=1e-2)
    stats = GroupStats()
    queued = fit_group(specs, members, st, stats=stats, slots=2)
    crowd = fit_group(specs, members, TrainSettings(epochs=1, batch_size=8, patience=0), slots=4)
    assert all(len(f.history) == 1 for f in crowd)  # four finish at once, one waits: one slot refilled
    assert len({len(f.history) for f in queued}) > 1  # they stopped at different epochs
    cache: dict = {}  # the five alone trainings share one traced trainer (reset before each)
    for m, fit in zip(members, queued):
        alone = fit_group(specs, [m], st, cache=cache)[0]
        assert [h["epoch"] for h in fit.history] == [h["epoch"] for h in alone.history]
        np.testing.assert_allclose([h["val_loss"] for h in fit.history], [h["val_loss"] for h in alone.history], rtol=1e-4)
        for a, b in zip(fit.weights, alone.weights):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    busy = stats.active_model_steps / (stats.active_model_steps + stats.idle_model_steps)
    assert busy > 0.7, busy


def test_live_slots_compute_only_their_models() -> None:
    """Called with ``(x, live)`` the group computes only the slots ``live`` (their weights gathered), and
    each such model's output equals its output in the full group."""
    import keras

    from models.grouped.trainer import _trainer

    fc = make_forecaster("bilstm", units=4, seed=0, horizon=1, dropout=0.0)
    specs = fc.full_architecture(1)
    net, _ = _trainer(specs, 4, 3, 2, "adam", None)
    rng = np.random.default_rng(5)
    for v in net.trainable_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
    x = rng.normal(size=(4, 6, 3, 2)).astype("float32")
    full = np.asarray(keras.ops.convert_to_numpy(net(x)))
    live = np.array([3, 1], "int32")
    part = np.asarray(keras.ops.convert_to_numpy(net((x[live], live))))
    assert part.shape == (2, 6, 1)
    np.testing.assert_allclose(part, full[live], rtol=1e-5, atol=1e-6)


def test_a_new_architecture_drops_the_other_trainers() -> None:
    """A worker's trainer cache keeps one architecture's compiled trainers at a time (bounded memory);
    trainers of the same architecture are reused."""
    from models.grouped.trainer import _trainer

    cache: dict = {}
    lstm = make_forecaster("lstm", units=4, seed=0, horizon=1).full_architecture(1)
    gru = make_forecaster("gru", units=4, seed=0, horizon=1).full_architecture(1)
    cache[("lstm", 3, 2)] = "a single-model trainer"  # not a group trainer: left alone
    a, _ = _trainer(lstm, 2, 3, 2, "adam", cache)
    _trainer(lstm, 3, 3, 2, "adam", cache)
    assert _trainer(lstm, 2, 3, 2, "adam", cache)[0] is a
    assert len([k for k in cache if k[0] == "group"]) == 2
    _trainer(gru, 2, 3, 2, "adam", cache)
    groups = [k for k in cache if k[0] == "group"]
    assert len(groups) == 1 and groups[0][1] == tuple(gru)
    assert ("lstm", 3, 2) in cache


def test_small_groups_feed_one_shape_large_groups_their_live_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of at most ``_STATIC_SLOTS`` slots feeds every slot at every step (one input shape); a larger
    one feeds only its live slots once models finish at different epochs."""
    from models.grouped import trainer as grouped

    monkeypatch.setattr(grouped, "_STATIC_SLOTS", 2)
    specs = make_forecaster("lstm", units=4, seed=0, horizon=1).full_architecture(1)
    members = []
    for g, n in enumerate((20, 44, 28, 36)):
        X, y = data(n, g)
        Xv, yv = data(8, 90 + g)
        members.append(Member(X, y, Xv, -yv if g % 2 else yv, seed=g))
    st = TrainSettings(epochs=4, batch_size=8, patience=1, learning_rate=1e-2)
    fed: dict[int, list[int]] = {}
    for slots in (2, 3):
        cache: dict = {}
        net, _ = grouped._trainer(specs, slots, 3, 2, st.optimizer, cache)
        train = net.train_on_batch

        def spy(x, *a, _slots=slots, _train=train, **k):
            fed.setdefault(_slots, []).append(len(x[0] if isinstance(x, tuple) else x))
            return _train(x, *a, **k)

        net.train_on_batch = spy
        fits = grouped.fit_group(specs, members, st, cache=cache, slots=slots)
        assert len({len(f.history) for f in fits}) > 1  # the models finished at different epochs
    assert set(fed[2]) == {2}
    assert set(fed[3]) > {3} and min(fed[3]) < 3


# --- per-member values inside a group (issue 21 item 1) ----------------------------------------------------
#: (type, [per-member keyword overrides], each member's training rows) -- each group mixes members with and
#: without the key, so a member's penalty, rate, rule or batch size is checked not to reach the others.
PER_MEMBER = {
    "lr-epochs-patience": ("lstm", [dict(learning_rate=1e-2, epochs=4, patience=1),
                                    dict(learning_rate=3e-3, epochs=3, patience=0),
                                    dict(learning_rate=2e-2, epochs=4, patience=2)], (37, 50, 29)),
    "bias-l2": ("lstm", [dict(bias_l2=0.05), dict(), dict(bias_l1=0.02, kernel_l2=0.01)], (37, 50, 29)),
    "gru-kernel-recurrent": ("gru", [dict(kernel_l1=0.01), dict(recurrent_l2=0.05, learning_rate=5e-3), dict()],
                             (37, 50, 29)),
    "cnn-activity-bias": ("cnn", [dict(activity_l1=0.01), dict(bias_l1=0.05, activity_l2=0.02), dict()], (37, 50, 29)),
    # whole batches only: a partial batch costs the Keras reference a second trace of this deep model (the
    # masked partial batch is checked by the other cases)
    "bilstm-activity-kernel": ("bilstm", [dict(activity_l2=0.02, kernel_l1=0.005, epochs=2), dict(epochs=2)],
                               (32, 48)),
    # batches of 16, 64 and 32 rows in one group (the step carries 64 per slot): 3 own steps an epoch each,
    # the last one partial; a penalty rides on the batch-16 member, so a loss normalised by the step's rows
    # (64) instead of its own would move its weights, and every member's loss history
    "batch-size": ("lstm", [dict(batch_size=16, bias_l2=0.05), dict(batch_size=64, learning_rate=3e-3),
                            dict(batch_size=32)], (37, 150, 70)),
}


@pytest.mark.parametrize("case", list(PER_MEMBER))
def test_members_with_their_own_settings_equal_their_alone_keras_trainings(case: str) -> None:
    """Members of one group with different learning rates, epochs, patience, batch sizes and L1/L2
    coefficients (kernel, recurrent, bias, activity): each ends where a standard Keras model of its own
    configuration ends (its regularisers in the loss, its own batches, Keras' ``val_loss`` with penalties for
    early stopping), loss history included; a member without a penalty trains as if no other member had one."""
    model_type, overrides, sizes = PER_MEMBER[case]
    base = dict(tiny(model_type), seed=0, horizon=1, dropout=0.0, epochs=3, patience=1, learning_rate=1e-2,
                batch_size=16)
    members, refs = [], []
    for g, extra in enumerate(overrides):
        fc = make_forecaster(model_type, **{**base, **extra})
        st = fc.train_settings()
        specs = fc.group_architecture(1)
        n = sizes[g]
        X, y = data(n, g)
        Xv, yv = data(11, 60 + g)
        yv = -yv if g == 0 else yv  # member 0's validation worsens: it may stop early
        w0 = initial_weights(specs, 3, 2, seed=g)
        rng = np.random.default_rng(100 + g)
        orders = [rng.permutation(n) for _ in range(st.epochs)]
        members.append(Member(X, y, Xv, yv, seed=g, weights=w0, orders=orders, settings=st))
        refs.append(keras_reference(fc, X, y, w0, orders, st.batch_size, st.epochs, Xv, yv, st.patience,
                                    lr=st.learning_rate, keras_val=True))
    fits = fit_group(specs, members)
    for fit, (w_ref, loss_ref) in zip(fits, refs):
        assert len(fit.history) == len(loss_ref)
        np.testing.assert_allclose([h["loss"] for h in fit.history], loss_ref, rtol=1e-4)
        for a, b in zip(fit.weights, w_ref):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    if case == "lr-epochs-patience":
        assert sorted(len(f.history) for f in fits) != [4, 4, 4]  # the rules differed, and were each kept
    if case == "batch-size":  # each member took its own steps: ceil(n / b) an epoch
        assert [f.model_steps for f in fits] == [len(f.history) * -(-m.X.shape[0] // m.settings.batch_size)
                                                 for f, m in zip(fits, members)]
        assert sorted({m.settings.batch_size for m in members}) == [16, 32, 64]


@pytest.mark.parametrize("model_type", ["stacked_lstm", "gru", "bilstm"])
def test_dropout_and_recurrent_dropout_rates_per_member(model_type: str) -> None:
    """Members of one group with their own dropout and recurrent-dropout rates (0 included) and batch sizes
    each end where they end trained alone (alone: a step of their own batch size; in the group: 16 rows a
    slot, so the masks must not depend on the step's rows); a member at rate 0 in a group that drops ends
    where a standard Keras model without dropout ends (its masks keep everything); recurrent dropout changes
    the training (a fourth member, the third without it, ends elsewhere)."""
    rates = [(0.3, 0.2, 8), (0.0, 0.0, 16), (0.1, 0.4, 8), (0.1, 0.0, 8)]
    fcs = [make_forecaster(model_type, units=4, seed=0, horizon=1, dropout=d, recurrent_dropout=r, epochs=2,
                           patience=0, learning_rate=1e-2, batch_size=b) for d, r, b in rates]
    specs = fcs[0].group_architecture(1)
    assert all(fc.group_signature() == fcs[0].group_signature() for fc in fcs)  # one group
    members = []
    for g, fc in enumerate(fcs):
        X, y = data((30, 32, 25, 25)[g], min(g, 2))  # the rate-0 member: whole batches (one Keras trace)
        w0 = initial_weights(specs, 3, 2, seed=min(g, 2))
        rng = np.random.default_rng(min(g, 2))
        members.append(Member(X, y, seed=10 + min(g, 2), weights=w0,
                              orders=[rng.permutation(len(X)) for _ in range(2)], settings=fc.train_settings()))
    group = fit_group(specs, members)
    cache: dict = {}  # the two alone trainings below share one traced trainer (reset before each)
    for g in (0, 2):
        alone = fit_group(specs, [members[g]], cache=cache)[0]
        assert not np.allclose(alone.weights[0], members[g].weights[0])  # it trained
        for a, b in zip(alone.weights, group[g].weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    w_ref, _ = keras_reference(fcs[1], members[1].X, members[1].y, members[1].weights, members[1].orders, 16, 2)
    for a, b in zip(group[1].weights, w_ref):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert not np.allclose(group[3].weights[0], group[2].weights[0])


def test_group_shares_its_optimizer() -> None:
    """The optimizer type is the one training setting a group shares (batch sizes may differ)."""
    from models.grouped import TrainSettings as TS

    specs = make_forecaster("lstm", units=4, seed=0, horizon=1).full_architecture(1)
    X, y = data(20, 0)
    with pytest.raises(ValueError, match="shares its optimizer"):
        fit_group(specs, [Member(X, y, settings=TS(optimizer="adam")), Member(X, y, settings=TS(optimizer="sgd"))])


def _other_value(field, value):
    """A valid value of a schema field other than ``value`` (for the signature/settings contract)."""
    import typing

    choices = typing.get_args(field.annotation)
    if choices:
        return next(c for c in choices if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value + 0.1 if value < 0.5 else value / 2


@pytest.mark.parametrize("model_type", NETWORKS)
def test_every_hyper_parameter_is_in_the_group_signature_or_the_member_settings(model_type: str) -> None:
    """Each key of a network's schema either splits groups (``group_signature``) or is a member's own value
    (``train_settings``): none is silently dropped when trainings share a group. Per-member: learning rate,
    epochs, batch size, patience, dropout rates and L1/L2 coefficients; shared: shapes, activations,
    optimizer."""
    from models.params import PARAMS_BY_TYPE

    schema = PARAMS_BY_TYPE[model_type]
    active = {"activation": "leaky_relu"} if model_type == "cnn" else {}  # leaky_alpha is read only then
    base = make_forecaster(model_type, seed=0, horizon=1, **active)
    member_keys = {"learning_rate", "epochs", "batch_size", "patience", "dropout", "recurrent_dropout", "kernel_l1",
                   "kernel_l2", "recurrent_l1", "recurrent_l2", "bias_l1", "bias_l2", "activity_l1", "activity_l2"}
    for key in schema.parameter_names():
        other = make_forecaster(model_type, seed=0, horizon=1, **{
            **active, key: _other_value(schema.model_fields[key], getattr(base.hparams, key))})
        same_group = other.group_signature() == base.group_signature()
        assert same_group == (key in member_keys), key
        if same_group:
            assert other.train_settings() != base.train_settings(), key


def test_engine_groups_configs_that_differ_only_in_member_values(btc, tmp_path) -> None:
    """Through the engine (``group_key`` -> ``train_group``): configurations of one architecture that differ
    in batch size, learning rate, epochs, patience, dropout and L1/L2 share one group key (and train mixed
    in its units), a different optimizer does not; a mixed unit trains through the slots of its largest
    batch; and a regularised model with its own batch size trains its folds in that company as in a run of
    its own (same epochs, losses within float rounding: batched kernels round by shape)."""
    import pandas as pd

    import backtest.folds.units as units_mod
    from backtest.folds.plan import plan_run
    from backtest.run import run_forecasts
    from tests.test_walkforward import as_data, tiny_cfg

    bars = btc.iloc[:360]  # 4 folds of 40 bars from bar 200
    net = {"type": "lstm", "units": 4, "epochs": 3, "patience": 1, "batch_size": 32}
    models = {"plain": net, "reg": {**net, "learning_rate": 3e-3, "bias_l2": 0.05, "dropout": 0.2, "batch_size": 16},
              "reg2": {**net, "kernel_l1": 0.01, "activity_l2": 0.01, "epochs": 2, "patience": 2}}
    wf = {"training": "grouped", "workers": 1}
    rms = {"rms": {**net, "optimizer": "rmsprop"}}
    tasks = plan_run(tiny_cfg({**models, **rms}, walkforward=wf), {"BTC/USDT": bars}).tasks
    keys = {t.model_name: units_mod.group_key(t) for t in tasks}
    assert keys["plain"] == keys["reg"] == keys["reg2"] != keys["rms"]
    units = units_mod.make_units(tasks, lambda t: False, None)
    assert any({"plain", "reg", "reg2"} <= {t.model_name for t in u.tasks} for u in units if u.kind == "group")
    tight = tiny_cfg(models, walkforward={**wf, "group_size": 16, "group_memory_mib": 0.25})
    cap = {n: units_mod.group_cap(m, tight.features, tight.walkforward) for n, m in tight.models.items()}
    assert cap["reg"] > cap["plain"] == cap["reg2"]  # fewer slots fit at 32 rows a model than at 16
    mixed = [u for u in units_mod.make_units(plan_run(tight, {"BTC/USDT": bars}).tasks, lambda t: False, None)
             if u.kind == "group"]
    assert mixed and all(min(t.group_slots for t in u.tasks) == cap["plain"] for u in mixed)
    run_forecasts(tiny_cfg(models, walkforward=wf), tmp_path / "a", data=as_data(bars))
    run_forecasts(tiny_cfg({"reg": models["reg"]}, walkforward=wf), tmp_path / "b", data=as_data(bars))
    for k in range(4):
        together, alone = (pd.read_csv(tmp_path / d / "t" / "folds" / "reg" / str(k) / "seed-0" / "history.csv")
                           for d in ("a", "b"))
        assert list(together["epoch"]) == list(alone["epoch"])
        np.testing.assert_allclose(together[["loss", "val_loss"]], alone[["loss", "val_loss"]], rtol=1e-4)
