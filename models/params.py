"""The hyper-parameters of each forecaster type: one validated schema per type, defaults in one place.

``[models.NAME]`` is validated against the schema of its ``type`` (a pydantic
discriminated union on ``type``): a key the type does not use, or a value the
network would have to change (``cnn`` with 4 layers, ``stacked_lstm`` with 1),
is an error naming the key and the type, never silently ignored or clamped.
The forecaster classes read the validated values (:attr:`Forecaster.hparams`);
there is no second default in :mod:`models.networks`.

Importing this module does not import Keras (config validation stays fast).
Units: rates and penalties are plain numbers (``learning_rate`` 1e-3,
``dropout`` 0.2 = 20% of the units dropped), sizes are counts (units, filters),
``kernel_size``/``strides`` are in bars.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

#: Activations a recurrent layer accepts (tanh keeps it cuDNN-eligible).
RECURRENT_ACTIVATIONS = ("tanh", "relu", "leaky_relu", "sigmoid", "elu", "linear")
#: Activations the Conv1D layers accept (leaky_relu uses ``leaky_alpha``).
CNN_ACTIVATIONS = ("relu", "leaky_relu", "elu", "linear")


class ModelParams(BaseModel):
    """Base of every ``[models.NAME]`` schema: the registered ``type`` and nothing else."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    type: str = Field(..., description="registered forecaster type (walkforward models lists them)")

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The hyper-parameter keys of this type (``type`` excluded), in schema order."""
        return tuple(k for k in cls.model_fields if k != "type")


class TrainingParams(ModelParams):
    """Keys of every Keras network: optimiser and the training loop."""

    optimizer: Literal["adam", "rmsprop", "sgd"] = Field("adam", description="Keras optimiser")
    learning_rate: float = Field(1e-3, gt=0.0, lt=10.0, description="optimiser step size, e.g. 0.001")
    batch_size: int = Field(64, ge=1, description="windows per gradient step")
    epochs: int = Field(50, ge=1, le=10000, description="maximum training epochs (cold start)")
    patience: int = Field(5, ge=0, description="early-stopping patience in epochs on validation loss; 0 = no early stopping")


class RegularizerParams(ModelParams):
    """L1/L2 penalties of the kernel, bias and activity (0 = none)."""

    kernel_l1: float = Field(0.0, ge=0.0, description="L1 penalty on layer kernels")
    kernel_l2: float = Field(0.0, ge=0.0, description="L2 penalty on layer kernels")
    bias_l1: float = Field(0.0, ge=0.0, description="L1 penalty on biases")
    bias_l2: float = Field(0.0, ge=0.0, description="L2 penalty on biases")
    activity_l1: float = Field(0.0, ge=0.0, description="L1 penalty on layer outputs")
    activity_l2: float = Field(0.0, ge=0.0, description="L2 penalty on layer outputs")


class RecurrentParams(TrainingParams, RegularizerParams):
    """Keys of the recurrent networks (lstm, stacked_lstm, bilstm, gru)."""

    units: int = Field(64, ge=1, le=4096, description="recurrent units per layer (width w)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each recurrent layer; 0.2 = 20%")
    recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="recurrent dropout (not cuDNN-eligible when > 0)")
    activation: Literal[RECURRENT_ACTIVATIONS] = Field(  # type: ignore[valid-type]
        "tanh", description="recurrent activation: tanh (cuDNN-eligible), relu, leaky_relu (slope 0.2), sigmoid, elu, linear")
    recurrent_l1: float = Field(0.0, ge=0.0, description="L1 penalty on recurrent kernels")
    recurrent_l2: float = Field(0.0, ge=0.0, description="L2 penalty on recurrent kernels")


class LSTMParams(RecurrentParams):
    """``lstm``: one LSTM layer of ``units``."""

    type: Literal["lstm"]


class StackedLSTMParams(RecurrentParams):
    """``stacked_lstm``: ``layers`` (at least 2) LSTM layers of ``units``."""

    type: Literal["stacked_lstm"]
    layers: int = Field(2, ge=2, le=8, description="stacked LSTM layers, 2..8")


class BiLSTMParams(RecurrentParams):
    """``bilstm``: three bidirectional LSTM layers of widths w, 2w, w; dropout 0.2 by default (the tutorials')."""

    type: Literal["bilstm"]
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout after each bidirectional layer; 0.2 = 20%")


class GRUParams(RecurrentParams):
    """``gru``: ``layers`` GRU layers of ``units`` (1 by default)."""

    type: Literal["gru"]
    layers: int = Field(1, ge=1, le=8, description="stacked GRU layers, 1..8")


class CNNParams(TrainingParams, RegularizerParams):
    """``cnn``: 2 or 3 strided Conv1D layers, flatten, dense output."""

    type: Literal["cnn"]
    layers: int = Field(2, ge=2, le=3, description="Conv1D layers, 2 or 3")
    filters: int = Field(32, ge=1, description="Conv1D filters per layer")
    kernel_size: int = Field(3, ge=1, description="Conv1D kernel size in bars")
    strides: int = Field(2, ge=1, description="Conv1D strides in bars")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after each conv layer; 0.2 = 20%")
    activation: Literal[CNN_ACTIVATIONS] = Field(  # type: ignore[valid-type]
        "relu", description="conv activation: relu, leaky_relu (slope leaky_alpha), elu, linear")
    leaky_alpha: float = Field(0.2, gt=0.0, lt=1.0, description="negative slope of LeakyReLU (activation = leaky_relu)")


class PersistenceParams(ModelParams):
    """``persistence``: 'no change' (a log return of 0); no hyper-parameters."""

    type: Literal["persistence"]


class MeanParams(ModelParams):
    """``mean``: the training rows' mean log return; no hyper-parameters."""

    type: Literal["mean"]


class LinearParams(ModelParams):
    """``linear``: scikit-learn Ridge on the flattened window."""

    type: Literal["linear"]
    alpha: float = Field(1.0, ge=0.0, description="ridge penalty")


#: type name -> its schema (every registered type has one; see :data:`models.MODEL_TYPES`).
PARAMS_BY_TYPE: dict[str, type[ModelParams]] = {
    "persistence": PersistenceParams, "mean": MeanParams, "linear": LinearParams, "lstm": LSTMParams,
    "stacked_lstm": StackedLSTMParams, "bilstm": BiLSTMParams, "gru": GRUParams, "cnn": CNNParams,
}

#: The discriminated union a ``[models.NAME]`` table is validated against.
AnyModelParams = Annotated[
    Union[PersistenceParams, MeanParams, LinearParams, LSTMParams, StackedLSTMParams, BiLSTMParams, GRUParams, CNNParams],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyModelParams)


def parse_model_params(raw: dict[str, Any] | ModelParams) -> ModelParams:
    """Validate one ``[models.NAME]`` table (with its ``type``) into its type's schema.

    Raises ``pydantic.ValidationError`` (the config turns it into one line).
    """
    if isinstance(raw, ModelParams):
        return raw
    return _ADAPTER.validate_python(raw)
