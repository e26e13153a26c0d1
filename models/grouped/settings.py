"""What a group shares and what each of its members sets for itself.

A group shares its architecture (:class:`models.grouped.layers.LayerSpec` list) and its optimizer type.
Each member sets (:class:`TrainSettings`): epochs, batch size, early-stopping patience, learning rate,
dropout and recurrent-dropout rates, and the L1/L2 coefficients of Keras' kernel, recurrent, bias and
activity regularisers. A group step carries the largest member batch size of rows per model; a member with
a smaller batch fills only its own rows of it (the others masked), so it trains as alone but computes the
step's rows. :class:`GroupUses` is what the group has to compute
for its members: a group none of whose members uses dropout, recurrent dropout or a regulariser builds
none of them (the same graph as a group without those keys); one that does computes them for every slot,
a member at 0 getting exactly what it would get without them (x / 1.0, 0 * |w| added).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

#: Regularised weight roles and their coefficient names, in the order of the per-model coefficient table.
PENALTY_KEYS: tuple[str, ...] = ("kernel_l1", "kernel_l2", "recurrent_l1", "recurrent_l2", "bias_l1", "bias_l2",
                                 "activity_l1", "activity_l2")


@dataclass(frozen=True)
class TrainSettings:
    """A member's training rule. Shared by the whole group (must be equal for its members): ``optimizer`` adam |
    rmsprop | sgd. The member's own: ``epochs``; ``batch_size`` (rows per own optimizer step; the group's step
    carries the largest member batch, the extra rows masked); ``patience`` epochs without a lower validation
    loss before stopping (0 = none; needs validation rows); ``learning_rate`` (e.g. 0.001); ``dropout`` and
    ``recurrent_dropout`` rates (fraction dropped, 0.2 = 20%; ``None``: the rates written in the architecture's
    specs); ``kernel_l1`` ... ``activity_l2``: Keras ``L1L2`` coefficients (penalty ``l1 * sum|w| + l2 * sum
    w^2`` added to the loss; the activity one on each regularised layer's output, divided by the batch's rows,
    as Keras 3 does).
    """

    epochs: int = 50
    batch_size: int = 64
    patience: int = 5
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    dropout: float | None = None
    recurrent_dropout: float | None = None
    kernel_l1: float = 0.0
    kernel_l2: float = 0.0
    recurrent_l1: float = 0.0
    recurrent_l2: float = 0.0
    bias_l1: float = 0.0
    bias_l2: float = 0.0
    activity_l1: float = 0.0
    activity_l2: float = 0.0

    def penalties(self) -> tuple[float, ...]:
        """The regulariser coefficients in :data:`PENALTY_KEYS` order."""
        return tuple(float(getattr(self, k)) for k in PENALTY_KEYS)


#: Fields that must be equal across a group (the rest are per member).
SHARED_KEYS: tuple[str, ...] = ("optimizer",)
MEMBER_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainSettings) if f.name not in SHARED_KEYS)


@dataclass(frozen=True)
class GroupUses:
    """What a group computes for its members: dropout layers (``dropout``), recurrent-dropout masks
    (``recurrent_dropout``) and which regulariser roles (``penalties``: a subset of kernel, recurrent, bias,
    activity) -- each only when at least one member needs it."""

    dropout: bool = False
    recurrent_dropout: bool = False
    penalties: tuple[str, ...] = ()

    @classmethod
    def of(cls, rates: list[tuple[float, float]], settings: list[TrainSettings]) -> "GroupUses":
        """From each member's (largest dropout rate, largest recurrent-dropout rate) and settings."""
        roles = []
        for role in ("kernel", "recurrent", "bias", "activity"):
            if any(getattr(s, f"{role}_l1") or getattr(s, f"{role}_l2") for s in settings):
                roles.append(role)
        return cls(dropout=any(r[0] > 0 for r in rates), recurrent_dropout=any(r[1] > 0 for r in rates),
                   penalties=tuple(roles))


__all__ = ["GroupUses", "MEMBER_KEYS", "PENALTY_KEYS", "SHARED_KEYS", "TrainSettings"]
