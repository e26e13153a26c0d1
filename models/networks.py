"""Keras 3 forecasters: LSTM, stacked LSTM, 3-layer bidirectional LSTM, GRU, 1-D CNN.

Written with ``keras.layers`` only, so they run on TensorFlow (the default
backend and the declared dependency) and unchanged on JAX or PyTorch
(``KERAS_BACKEND=jax``). Recurrent layers keep the cuDNN-eligible settings
(``tanh``/``sigmoid``, no recurrent dropout) unless the config asks otherwise.

Every network maps a window ``(lookback, n_inputs)`` of bars ``t-lookback+1 .. t``
to ``horizon`` outputs: the encoded targets of bars ``t+1 .. t+horizon``.
Training minimises MSE with early stopping on the validation rows (the
chronological tail of the fold's training rows) and keeps the best weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from models.base import Forecaster
from models.params import BiLSTMParams, CNNParams, GRUParams, LSTMParams, StackedLSTMParams
from models.grouped.layers import LayerSpec
from models.grouped.settings import PENALTY_KEYS, TrainSettings

#: Constructor keywords every network takes besides its schema's hyper-parameters (set by the engine).
ENGINE_PARAMS: tuple[str, ...] = ("deterministic",)


def _keras():  # imported lazily so the CLI and config validation stay fast
    import keras

    return keras


class KerasForecaster(Forecaster):
    """Shared training loop: compile, fit with EarlyStopping and CSVLogger, predict, save/load."""

    # --- hyper-parameters: the validated values of the type's schema (models.params) ------
    def p(self, name: str) -> Any:
        """The validated value of hyper-parameter ``name`` (the schema's default when unset)."""
        return getattr(self.hparams, name)

    def _regularizers(self, recurrent: bool) -> dict[str, Any]:
        keras = _keras()

        def reg(prefix: str) -> Any:
            l1, l2 = float(self.p(f"{prefix}_l1")), float(self.p(f"{prefix}_l2"))
            return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None

        out = {"kernel_regularizer": reg("kernel"), "bias_regularizer": reg("bias"), "activity_regularizer": reg("activity")}
        if recurrent:
            out["recurrent_regularizer"] = reg("recurrent")
        return out

    def _activation(self) -> str:
        """Recurrent activation by name (``leaky_relu`` here has Keras' fixed slope 0.2)."""
        return str(self.p("activation"))

    def _dropout(self) -> float:
        return float(self.p("dropout"))

    def _dropout_spec(self, group: bool = False) -> list[LayerSpec]:
        """The dropout layer after a body layer: none at rate 0; in the group's form (``group``) always
        one, a rate-0 placeholder (each member's rate is its own, :meth:`train_settings`)."""
        if group:
            return [LayerSpec("dropout")]
        return [LayerSpec("dropout", rate=self._dropout())] if self._dropout() else []

    def architecture(self, group: bool = False) -> list[LayerSpec]:
        """The network body, described once: both the single Keras model (:meth:`build`) and the grouped
        model (:mod:`models.grouped`) are built from it, with the same weight layout. ``group``: the form a
        group shares, whatever the dropout rates (a placeholder dropout layer wherever this type has one)."""
        raise NotImplementedError

    def full_architecture(self, horizon: int | None = None, group: bool = False) -> list[LayerSpec]:
        """:meth:`architecture` plus the dense output layer of ``horizon`` values."""
        return self.architecture(group) + [LayerSpec("dense", units=int(horizon or self.horizon))]

    # --- grouped training: what must be equal to share a group, and what each member sets -------
    def group_architecture(self, horizon: int | None = None) -> list[LayerSpec]:
        """The architecture a group of this model is built from (:func:`models.grouped.fit_group`): the
        layer shapes, with dropout layers as placeholders (rates are per member)."""
        return self.full_architecture(horizon, group=True)

    def group_signature(self) -> tuple:
        """What must be equal for trainings to share a group: the type, the group architecture (layer kinds,
        shapes, activations), the horizon and the optimizer type. Every other hyper-parameter, the batch
        size included, is a per-member value (:meth:`train_settings`)."""
        return (self.type_name, tuple(self.group_architecture()), str(self.p("optimizer")))

    def train_settings(self) -> TrainSettings:
        """This model's training rule as a member of a group: the shared key (optimizer) and its own epochs,
        batch size, patience, learning rate, dropout and recurrent-dropout rates and L1/L2 coefficients
        (0 for keys this type does not have)."""
        names = type(self.hparams).model_fields  # the type's own keys (a cnn has no recurrent ones)
        own = {k: float(self.p(k)) for k in (*PENALTY_KEYS, "recurrent_dropout") if k in names}
        return TrainSettings(epochs=int(self.p("epochs")), batch_size=int(self.p("batch_size")),
                             patience=int(self.p("patience")), optimizer=str(self.p("optimizer")),
                             learning_rate=float(self.p("learning_rate")), dropout=self._dropout(),
                             **{"recurrent_dropout": 0.0, **own})

    def _keras_layer(self, spec: LayerSpec) -> Any:
        """The standard Keras layer of one spec (regularisers and recurrent dropout from the params)."""
        keras = _keras()
        if spec.kind in ("lstm", "gru"):
            return getattr(keras.layers, spec.kind.upper())(
                spec.units, activation=spec.activation, recurrent_dropout=float(self.p("recurrent_dropout")),
                return_sequences=spec.return_sequences, **self._regularizers(recurrent=True),
            )
        if spec.kind == "bilstm":
            return keras.layers.Bidirectional(self._keras_layer(LayerSpec(
                "lstm", units=spec.units, return_sequences=spec.return_sequences, activation=spec.activation)))
        if spec.kind == "conv1d":
            return keras.layers.Conv1D(spec.units, spec.kernel_size, strides=spec.strides, padding="same",
                                       activation=spec.activation, **self._regularizers(recurrent=False))
        if spec.kind == "leaky_relu":
            return keras.layers.LeakyReLU(negative_slope=spec.rate)
        if spec.kind == "dropout":
            return keras.layers.Dropout(spec.rate)
        if spec.kind == "flatten":
            return keras.layers.Flatten()
        raise ValueError(f"unknown layer kind {spec.kind!r}")

    def build(self, lookback: int, n_inputs: int, *, compile: bool = True) -> Any:
        """A fresh ``keras.Model`` for windows of shape ``(lookback, n_inputs)`` (compiled unless asked not to)."""
        keras = _keras()
        inputs = keras.Input(shape=(lookback, n_inputs), name="window")
        x = inputs
        for spec in self.architecture():
            x = self._keras_layer(spec)(x)
        outputs = keras.layers.Dense(self.horizon, name="forecast")(x)
        model = keras.Model(inputs, outputs, name=self.type_name)
        if compile:
            self._compile(model)
        return model

    def _compile(self, model: Any) -> None:
        keras = _keras()
        opt = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "sgd": keras.optimizers.SGD}[
            self.p("optimizer")
        ](learning_rate=float(self.p("learning_rate")))
        model.compile(optimizer=opt, loss="mse")

    def _cache_key(self, lookback: int, n_inputs: int) -> tuple:
        """What makes two compiled trainers interchangeable: type, architecture and optimizer, input shape."""
        skip = {"seed", "epochs", "patience", "deterministic"}
        return (self.type_name, lookback, n_inputs, self.horizon,
                tuple(sorted((k, repr(v)) for k, v in self.params.items() if k not in skip)))

    @staticmethod
    def _reset_trainer(trainer: Any, fresh: Any) -> None:
        """Give a cached, compiled trainer exactly the state of a fresh build: every variable
        (weights and dropout seed-generator states) copied, optimizer slots and step counter zeroed."""
        for dst, src in zip(trainer.variables, fresh.variables, strict=True):
            dst.assign(src)
        opt = trainer.optimizer
        if getattr(opt, "built", False):
            for v in opt.variables:
                if not v.path.endswith("learning_rate"):
                    v.assign(_keras().ops.zeros_like(v))

    # --- Forecaster hooks ---------------------------------------------------------------
    def _fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None,
        y_val: np.ndarray | None,
        *,
        log_csv: str | Path | None = None,
        initial_weights: list[np.ndarray] | None = None,
        epochs: int | None = None,
        verbose: int = 0,
        trainer_cache: dict[tuple, Any] | None = None,
    ) -> None:
        """Train with early stopping; ``trainer_cache`` (optional, owned by the caller) reuses a compiled
        trainer of the same architecture across folds to skip graph tracing. Results are identical with or
        without it: the trainer is reset to the exact state of a fresh seeded build first."""
        keras = _keras()
        keras.utils.set_random_seed(self.seed)
        self.horizon = y.shape[1]
        fresh = self.build(X.shape[1], X.shape[2], compile=False)
        if initial_weights is not None:
            fresh.set_weights(initial_weights)
        key = self._cache_key(X.shape[1], X.shape[2])
        trainer = trainer_cache.get(key) if trainer_cache is not None else None
        if trainer is None:
            trainer = self.build(X.shape[1], X.shape[2], compile=False)
            self._compile(trainer)
            if trainer_cache is not None:
                trainer_cache[key] = trainer
        self._reset_trainer(trainer, fresh)
        callbacks: list[Any] = []
        patience = int(self.p("patience"))
        has_val = X_val is not None and len(X_val) > 0
        if patience > 0 and has_val:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True))
        if log_csv is not None:
            callbacks.append(keras.callbacks.CSVLogger(os.fspath(log_csv)))
        hist = trainer.fit(
            X, y,
            validation_data=(X_val, y_val) if has_val else None,
            epochs=int(epochs or self.p("epochs")),
            batch_size=int(self.p("batch_size")),
            shuffle=True,
            callbacks=callbacks,
            verbose=verbose,
        )
        fresh.set_weights(trainer.get_weights())  # the fitted model owns its weights; the trainer goes back to the cache
        self.model_ = fresh
        h = hist.history
        n = len(h.get("loss", []))
        self._history = [
            {"epoch": i, "loss": float(h["loss"][i]), "val_loss": float(h["val_loss"][i]) if "val_loss" in h else float("nan")}
            for i in range(n)
        ]

    def adopt(self, weights: list[np.ndarray], history: list[dict[str, float]], lookback: int, n_inputs: int,
              templates: dict[tuple, Any] | None = None) -> "KerasForecaster":
        """Become fitted with ``weights`` (single-model layout) trained elsewhere, e.g. by the grouped trainer.

        ``templates`` (optional, owned by the caller) reuses one built Keras model per architecture: the
        weights are set into it, so this forecaster is valid until the next ``adopt`` with the same dict
        (predict and save it first). Without it a fresh model is built.
        """
        key = self._cache_key(lookback, n_inputs)
        model = templates.get(key) if templates is not None else None
        if model is None:
            model = self.build(lookback, n_inputs, compile=False)
            if templates is not None:
                templates[key] = model
        model.set_weights(weights)
        self.model_ = model
        self._reused = templates is not None
        self._history = list(history)
        self.fitted_ = True
        return self

    def _predict(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            return np.zeros((0, self.horizon))
        if getattr(self, "_reused", False):  # a template serving many folds: its compiled predict step is
            return np.asarray(self.model_.predict_on_batch(X))  # traced once (an eager call costs ~90 ms)
        return np.asarray(self.model_(X, training=False))

    def get_weights(self) -> list[np.ndarray]:
        """The fitted weights (for warm-starting the next fold)."""
        self._check_fitted()
        return self.model_.get_weights()

    def _save(self, folder: Path) -> None:
        self.model_.save(folder / "model.keras")

    def _load(self, folder: Path) -> None:
        keras = _keras()
        self.model_ = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=False)
        self.horizon = int(self.model_.outputs[0].shape[-1])


class LSTMForecaster(KerasForecaster):
    """One LSTM layer of ``units``, dropout, a dense output of ``horizon`` values."""

    type_name = "lstm"
    param_names = LSTMParams.parameter_names() + ENGINE_PARAMS

    def architecture(self, group: bool = False) -> list[LayerSpec]:
        body = [LayerSpec("lstm", units=int(self.p("units")), activation=self._activation())]
        return body + self._dropout_spec(group)


class StackedLSTMForecaster(KerasForecaster):
    """``layers`` (at least 2) LSTM layers of ``units``, each followed by dropout."""

    type_name = "stacked_lstm"
    param_names = StackedLSTMParams.parameter_names() + ENGINE_PARAMS

    def architecture(self, group: bool = False) -> list[LayerSpec]:
        n = int(self.p("layers"))  # the schema guarantees >= 2
        out: list[LayerSpec] = []
        for i in range(n):
            out.append(LayerSpec("lstm", units=int(self.p("units")), return_sequences=i < n - 1,
                                 activation=self._activation()))
            out += self._dropout_spec(group)
        return out


class BiLSTMForecaster(KerasForecaster):
    """Three stacked bidirectional LSTM layers of widths w, 2w, w with dropout (default 0.2), as in the tutorials.

    Bidirectional runs over the *past window only* (bars ``<= t``), so reading it
    backwards sees no future bar.
    """

    type_name = "bilstm"
    param_names = BiLSTMParams.parameter_names() + ENGINE_PARAMS

    def architecture(self, group: bool = False) -> list[LayerSpec]:
        w = int(self.p("units"))
        widths = (w, 2 * w, w)
        out: list[LayerSpec] = []
        for i, width in enumerate(widths):
            out.append(LayerSpec("bilstm", units=width, return_sequences=i < len(widths) - 1,
                                 activation=self._activation()))
            out += self._dropout_spec(group)
        return out


class GRUForecaster(KerasForecaster):
    """One GRU layer of ``units`` (``layers`` > 1 stacks them), dropout, dense output."""

    type_name = "gru"
    param_names = GRUParams.parameter_names() + ENGINE_PARAMS

    def architecture(self, group: bool = False) -> list[LayerSpec]:
        n = int(self.p("layers"))
        out: list[LayerSpec] = []
        for i in range(n):
            out.append(LayerSpec("gru", units=int(self.p("units")), return_sequences=i < n - 1,
                                 activation=self._activation()))
            out += self._dropout_spec(group)
        return out


class CNNForecaster(KerasForecaster):
    """2 to 3 strided ``Conv1D`` layers (ReLU or LeakyReLU), flatten, dense output.

    ``activation`` defaults to ``relu`` here; ``leaky_relu`` uses ``leaky_alpha``.
    """

    type_name = "cnn"
    param_names = CNNParams.parameter_names() + ENGINE_PARAMS

    def architecture(self, group: bool = False) -> list[LayerSpec]:
        n = int(self.p("layers"))  # the schema allows 2 or 3
        act = str(self.p("activation"))  # the schema allows relu, leaky_relu, elu, linear
        out: list[LayerSpec] = []
        for _ in range(n):
            out.append(LayerSpec("conv1d", units=int(self.p("filters")), kernel_size=int(self.p("kernel_size")),
                                 strides=int(self.p("strides")), activation=None if act == "leaky_relu" else act))
            if act == "leaky_relu":
                out.append(LayerSpec("leaky_relu", rate=float(self.p("leaky_alpha"))))
            out += self._dropout_spec(group)
        return out + [LayerSpec("flatten")]
