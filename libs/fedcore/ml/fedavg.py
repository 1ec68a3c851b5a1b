"""Federated averaging (McMahan et al. 2017) as a streaming aggregator.

The new global model is the sample-weighted mean of the parties' locally trained
weights, w = sum_k n_k w_k / sum_k n_k. Chunks are added into one accumulator as they
arrive, so memory is O(model) whatever the number of parties. Only whole, validated
updates may count: a party whose stream breaks after some of its chunks were added
*taints* the accumulator (its partial sum cannot be taken back without keeping it),
and the round must then be run again without it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedcore.tensors import TensorSpec


@dataclass
class PartyContribution:
    """What one party has added to the round so far."""

    weight: float
    chunks: int = 0
    complete: bool = False
    train_loss: float = 0.0


@dataclass
class RoundResult:
    """The outcome of a round's aggregation."""

    weights: list[np.ndarray]
    parties: list[str]
    total_weight: float
    train_loss: float


@dataclass
class StreamingFedAvg:
    """One round's accumulator; thread-safe, as parties stream concurrently."""

    specs: Sequence[TensorSpec]
    _sum: list[np.ndarray] = field(init=False)
    _parties: dict[str, PartyContribution] = field(init=False, default_factory=dict)
    _tainted_by: set[str] = field(init=False, default_factory=set)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _committed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._sum = [np.zeros(spec.shape, dtype=spec.dtype) for spec in self.specs]

    def begin_update(self, party_id: str, n_samples: int) -> None:
        """A party announced its update and its FedAvg weight (its sample count)."""
        if n_samples <= 0:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        with self._lock:
            if party_id in self._parties:
                raise ValueError(f"party {party_id} already sent an update this round")
            self._parties[party_id] = PartyContribution(weight=float(n_samples))

    def add_update_chunk(self, party_id: str, tensor_index: int, element_offset: int, values: np.ndarray) -> None:
        """Add n_k * values into the accumulator (values were validated by the stream reader)."""
        with self._lock:
            contribution = self._parties[party_id]
            flat = self._sum[tensor_index].reshape(-1)
            target = flat[element_offset : element_offset + values.size]
            target += values * np.asarray(contribution.weight, dtype=target.dtype)
            contribution.chunks += 1

    def finish_update(self, party_id: str, train_loss: float) -> None:
        """The party's stream ended whole: its update counts."""
        with self._lock:
            contribution = self._parties[party_id]
            contribution.complete = True
            contribution.train_loss = train_loss

    def abandon_update(self, party_id: str) -> bool:
        """The party's stream broke. Returns True when it had already added chunks (taint)."""
        with self._lock:
            contribution = self._parties.pop(party_id, None)
            if contribution is not None and contribution.chunks > 0:
                self._tainted_by.add(party_id)
                return True
            return False

    @property
    def tainted_by(self) -> set[str]:
        """Parties whose partial updates are mixed into the sum."""
        return set(self._tainted_by)

    def completed(self) -> list[str]:
        """Parties whose whole update was added."""
        return sorted(p for p, c in self._parties.items() if c.complete)

    def commit(self) -> RoundResult:
        """The sample-weighted mean of the complete updates; refuses a tainted sum."""
        with self._lock:
            if self._committed:
                raise RuntimeError("the round was already committed")
            if self._tainted_by:
                raise RuntimeError(f"partial updates of {sorted(self._tainted_by)} are in the sum")
            done = {p: c for p, c in self._parties.items() if c.complete}
            if len(done) != len(self._parties):
                raise RuntimeError("updates still streaming")
            if not done:
                raise RuntimeError("no complete update to average")
            total = sum(c.weight for c in done.values())
            for array in self._sum:
                array *= np.asarray(1.0 / total, dtype=array.dtype)
            loss = sum(c.weight * c.train_loss for c in done.values()) / total
            self._committed = True
            return RoundResult(self._sum, sorted(done), total, float(loss))
