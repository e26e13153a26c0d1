"""Agreement check for the sweep study (issue 21): one fold, several seeds, the engine's grouped trainer beside
plain Keras on the same prepared rows.

The study's 1-seed arms (``bench/sweep_study.py`` (a) and (b)) start from different random draws (Keras' own
stream in the plain loop, the engine's seeded per-member initialisation and batch orders), so their MSE ratios
differ by a seed-to-seed difference as well as by any difference of method. This script shows the size of the
first: fold ``K`` of ``bench/sweep_study.toml`` (its rows, scaling and targets prepared once by the engine),
trained with seeds 0..N-1 by the grouped trainer (all seeds in one group) and by a plain ``keras.Sequential``
(``keras.utils.set_random_seed(seed)``, ``fit`` with ``shuffle=True`` and ``EarlyStopping(patience=4,
restore_best_weights=True)``). Printed per seed: epochs trained, best epoch, the test block's forecast sd and
mean (log-return units) and MSE / persistence MSE on the test block (r[t+1], decided at the close of t).

    python bench/fold_agreement.py [--fold 12] [--seeds 5] [--bias-l1 0.0] [--keras-init]

``--check-shuffle``: the row order Keras' ``fit(shuffle=True)`` visits each epoch, with and without
``keras.utils.set_random_seed`` (Keras 3.15 / TensorFlow 2.21 here: the same order every epoch with it).

``--keras-init``: the engine's members start from the plain arm's initial weights (the weights Keras gives a
fresh model after ``keras.utils.set_random_seed(seed)``), so only the batch orders' draws differ: which of
the two draws a difference between the arms comes from.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _orders(seeded: bool) -> None:
    """Print the rows a 12-row ``fit(shuffle=True, batch_size=4)`` visits in each of 3 epochs (recorded by an
    identity layer, eagerly)."""
    import keras
    import numpy as np

    seen: list[list[int]] = []

    class Record(keras.layers.Layer):
        def call(self, x):  # type: ignore[no-untyped-def]
            seen.append(np.asarray(x)[:, 0].astype(int).tolist())
            return x

    if seeded:
        keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), Record(), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", run_eagerly=True)
    X = np.arange(12, dtype="float32")[:, None]
    model.fit(X, X, epochs=3, batch_size=4, shuffle=True, verbose=0)
    epochs = [sum(seen[3 * e:3 * e + 3], []) for e in range(3)]
    print(f"{'with' if seeded else 'without'} keras.utils.set_random_seed: rows per epoch {epochs}")


def main() -> None:
    if sys.argv[1:2] == ["--_orders"]:
        _orders(sys.argv[2] == "1")
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fold", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--bias-l1", type=float, default=0.0)
    ap.add_argument("--same-draws", type=int, default=0, metavar="N",
                    help="also train N seeds from the same initial weights and the same batch orders in both "
                         "(Keras: one fit per epoch, shuffle=False, on the rows in that order; no early stopping): "
                         "the largest forecast difference is the difference of method")
    ap.add_argument("--check-shuffle", action="store_true",
                    help="only print the row order Keras' fit(shuffle=True) visits in each of 3 epochs, with and "
                         "without keras.utils.set_random_seed (each in its own process)")
    ap.add_argument("--keras-init", action="store_true",
                    help="the engine's members start from the weights Keras gives a fresh model after "
                         "keras.utils.set_random_seed(seed) (the plain arm's), not from the engine's own draws")
    a = ap.parse_args()
    if a.check_shuffle:
        import subprocess

        for seeded in (False, True):
            subprocess.run([sys.executable, __file__, "--_orders", "1" if seeded else "0"], check=True)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(HERE.parent))
    import numpy as np

    from backtest.config import apply_overrides, parse_config, read_toml
    from backtest.data.universe import load_universe
    from backtest.folds.compute import prepare
    from backtest.folds.plan import plan_run
    from models.grouped import Member, fit_group

    sets = [f"models.lstm.bias_l1={a.bias_l1}", f"run.seeds=[{', '.join(map(str, range(a.seeds)))}]"]
    cfg = parse_config(apply_overrides(read_toml(HERE / "sweep_study.toml"), sets), "sweep_study.toml")
    data = load_universe(cfg.data)
    plan = plan_run(cfg, data.bars)
    preps = [prepare(t, data.bars) for t in plan.tasks if t.k == a.fold and t.model_cfg.type == "lstm"]
    p0, m0 = preps[0], preps[0].members[0]
    close = data.bars[data.symbols[0]]["close"].to_numpy()  # the fold's own copy stops at its test block
    r_next = np.log(close[m0.test_rows + 1] / close[m0.test_rows])  # r[t+1] of each test row t
    ys = m0.transform.y_scale

    def line(who: str, seed: int, val_losses: list[float], z: np.ndarray) -> str:
        ratio = float(np.mean((z - r_next) ** 2) / np.mean(r_next ** 2))
        return (f"{who:<7} seed {seed}: epochs {len(val_losses):>2}, best {int(np.argmin(val_losses))}, forecast sd "
                f"{z.std():.2e} mean {z.mean():+.2e}, MSE/persistence {ratio:.4f}")

    import keras

    def plain_model(seed: int):  # noqa: ANN202
        keras.utils.set_random_seed(seed)
        reg = keras.regularizers.L1L2(l1=a.bias_l1, l2=0.0)
        return keras.Sequential([keras.Input(p0.X_fit.shape[1:]), keras.layers.LSTM(32, bias_regularizer=reg),
                                 keras.layers.Dense(1)])

    f32 = lambda x: np.asarray(x, "float32")  # noqa: E731
    members = [Member(f32(p.X_fit), f32(p.y_fit).reshape(-1, 1), f32(p.X_val), f32(p.y_val).reshape(-1, 1),
                      seed=p.model.seed, settings=p.model.train_settings(),
                      weights=plain_model(s).get_weights() if a.keras_init else None)
               for s, p in enumerate(preps)]
    fits = fit_group(p0.model.group_architecture(1), members, slots=len(members))
    for s, (p, fit) in enumerate(zip(preps, fits, strict=True)):
        p.model.horizon = 1
        p.model.adopt(fit.weights, fit.history, *p.X_fit.shape[1:], {})
        print(line("engine", s, [h["val_loss"] for h in fit.history], p.model.predict(m0.X_test)[:, 0] * ys))
    for s in range(a.seeds):
        model = plain_model(s)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        h = model.fit(p0.X_fit, p0.y_fit, validation_data=(p0.X_val, p0.y_val), epochs=30, batch_size=64,
                      shuffle=True, verbose=0,
                      callbacks=[keras.callbacks.EarlyStopping(patience=4, restore_best_weights=True)])
        print(line("keras", s, h.history["val_loss"], model.predict(m0.X_test, verbose=0)[:, 0] * ys))

    for s in range(a.same_draws):
        model = plain_model(s)
        w0 = model.get_weights()
        X, y = f32(p0.X_fit), f32(p0.y_fit).reshape(-1, 1)
        rng = np.random.default_rng(100 + s)
        orders = [rng.permutation(len(X)) for _ in range(30)]
        st = replace(p0.model.train_settings(), patience=0)
        fit = fit_group(p0.model.group_architecture(1), [Member(X, y, seed=s, weights=w0, orders=orders, settings=st)])[0]
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        for order in orders:
            model.fit(X[order], y[order], epochs=1, batch_size=64, shuffle=False, verbose=0)
        zk = model.predict(m0.X_test, verbose=0)[:, 0] * ys
        model.set_weights(fit.weights)
        ze = model.predict(m0.X_test, verbose=0)[:, 0] * ys
        print(f"same draws seed {s}: 30 epochs, forecast sd {zk.std():.2e} (keras) {ze.std():.2e} (engine), "
              f"largest |difference| {np.abs(zk - ze).max():.1e} (log-return units)")


if __name__ == "__main__":
    main()
