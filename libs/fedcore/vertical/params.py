"""Parameters of hetero (vertical) logistic regression, named as FATE's ``hetero_lr`` names them.

A FATE user should recognise every field (FATE 1.x ``LogisticParam``): penalty, alpha,
optimizer, learning_rate, decay, decay_sqrt, max_iter, batch_size, tol, early_stop,
init_method (FATE's ``init_param.init_method``), fit_intercept and key_length (FATE's
``encrypt_param.key_length``). Defaults follow the issue that introduced them, which
keeps FATE's alpha = 1.0 and early_stop = "diff" but starts from zeros with rmsprop at
0.15 for 20 epochs. ``key_length`` defaults to 2048 bits as DESIGN.md ("Security")
requires; 1024 is allowed for parity with FATE's examples. ``psi_key_length`` (the RSA
key of the alignment, FATE's ``intersect_param.rsa_params.key_length``) is fedsuite's
addition.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedcore.crypto.paillier import ALLOWED_KEY_BITS

PENALTIES = ("L1", "L2", "none")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "nesterov_momentum_sgd")
EARLY_STOPS = ("diff", "abs", "weight_diff")
INIT_METHODS = ("zeros", "random_uniform", "random_normal", "ones")
PSI_KEY_LENGTHS = (1024, 2048, 3072)
#: FATE's consts.MIN_BATCH_SIZE: a batch_size other than -1 must be at least this.
MIN_BATCH_SIZE = 10


@dataclass(frozen=True)
class HeteroLRParams:
    """One vertical LR job's settings; constructing it validates every field (ValueError naming it)."""

    penalty: str = "L2"
    alpha: float = 1.0
    optimizer: str = "rmsprop"
    learning_rate: float = 0.15
    decay: float = 1.0
    decay_sqrt: bool = True
    max_iter: int = 20
    batch_size: int = -1
    tol: float = 1e-4
    early_stop: str = "diff"
    init_method: str = "zeros"
    fit_intercept: bool = True
    key_length: int = 2048
    psi_key_length: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        for name, choices in (("penalty", PENALTIES), ("optimizer", OPTIMIZERS), ("early_stop", EARLY_STOPS),
                              ("init_method", INIT_METHODS)):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name}: must be one of {', '.join(choices)} (got {value!r})")
        for name in ("decay_sqrt", "fit_intercept"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false (got {getattr(self, name)!r})")
        for name, low, strict in (("alpha", 0.0, False), ("learning_rate", 0.0, True), ("decay", 0.0, False),
                                  ("tol", 0.0, False)):
            object.__setattr__(self, name, _number(name, getattr(self, name), low, strict))
        for name, low in (("max_iter", 1), ("seed", 0)):
            _integer(name, getattr(self, name), low)
        _integer("batch_size", self.batch_size, -1)
        if self.batch_size != -1 and self.batch_size < MIN_BATCH_SIZE:
            raise ValueError(f"batch_size: must be -1 (the whole set) or at least {MIN_BATCH_SIZE} "
                             f"(got {self.batch_size})")
        for name, allowed in (("key_length", ALLOWED_KEY_BITS), ("psi_key_length", PSI_KEY_LENGTHS)):
            _integer(name, getattr(self, name), 0)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: must be one of {', '.join(map(str, allowed))} (got {getattr(self, name)})")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HeteroLRParams:
        """Parameters from a mapping of field names; unknown names and invalid values raise ValueError."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: unknown parameter(s); known are {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able."""
        return dataclasses.asdict(self)

    def learning_rate_at(self, epoch: int) -> float:
        """FATE's schedule: lr / sqrt(1 + decay t) with decay_sqrt, else lr / (1 + decay t).

        t is the number of epochs already run (0 in the first epoch), so every mini-batch of
        an epoch uses the same rate, as FATE 1.x sets the optimizer's iteration once per epoch.
        """
        scale = 1.0 + self.decay * epoch
        return self.learning_rate / (math.sqrt(scale) if self.decay_sqrt else scale)


def _number(name: str, value: object, low: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number (got {value!r})")
    if value < low or (strict and value == low):
        raise ValueError(f"{name}: must be {'>' if strict else '>='} {low:g} (got {value!r})")
    return float(value)


def _integer(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer (got {value!r})")
    if value < low:
        raise ValueError(f"{name}: must be >= {low} (got {value})")
