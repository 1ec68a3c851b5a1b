"""Federated averaging (McMahan et al. 2017) as streaming aggregators, in plaintext or under Paillier.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcore.crypto.paillier import EncryptedArray, PublicKey
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


class _RoundBook:
    """Who has contributed what this round; shared by the plaintext and encrypted accumulators."""

    def __init__(self) -> None:
        self._parties: dict[str, PartyContribution] = {}
        self._tainted_by: set[str] = set()
        self._lock = threading.Lock()
        self._committed = False

    def begin_update(self, party_id: str, n_samples: float) -> None:
        """A party announced its update and its FedAvg weight (its sample count, or a cap of it)."""
        if n_samples <= 0:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        with self._lock:
            if party_id in self._parties:
                raise ValueError(f"party {party_id} already sent an update this round")
            self._parties[party_id] = PartyContribution(weight=float(n_samples))

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

    def _close(self) -> tuple[list[str], float, float]:
        """(parties, total weight, weighted loss) of a round that may commit; call with the lock held."""
        if self._committed:
            raise RuntimeError("the round was already committed")
        if self._tainted_by:
            raise RuntimeError(f"partial updates of {sorted(self._tainted_by)} are in the sum")
        done = {p: c for p, c in self._parties.items() if c.complete}
        if len(done) != len(self._parties):
            raise RuntimeError("updates still streaming")
        if not done:
            raise RuntimeError("no complete update to average")
        self._committed = True
        total = sum(c.weight for c in done.values())
        loss = sum(c.weight * c.train_loss for c in done.values()) / total
        return sorted(done), total, float(loss)


class StreamingFedAvg(_RoundBook):
    """One round's plaintext accumulator of sum_k n_k w_k; thread-safe, as parties stream concurrently.

    The sum is kept in the weights' dtype, so the coordinator holds one model's worth of
    it (a float64 sum would add a model's size again, 76 MiB at 10 M parameters). A float32
    sum could overflow to inf (a finite update near 3.4e38, times n_k): every chunk is
    checked once added, and one that made the sum non-finite is refused, its party named,
    so an overflow is never silent. The caller's bound on each weight (max_abs_weight,
    default 1e6) keeps honest sums far from it: 1e6 * n_k (<= 1e12) * 10^4 parties < 1e23.
    """

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        super().__init__()
        self._sum = [np.zeros(spec.shape, dtype=spec.dtype) for spec in specs]

    def add_update_chunk(self, party_id: str, tensor_index: int, element_offset: int, values: np.ndarray) -> None:
        """Add n_k * values into the accumulator (values were validated by the stream reader).

        Raises ValueError when the chunk made the sum overflow; the party's update is then
        partly in the sum, which taints the round (see ``abandon_update``).
        """
        with self._lock:
            contribution = self._parties[party_id]
            flat = self._sum[tensor_index].reshape(-1)
            target = flat[element_offset : element_offset + values.size]
            with np.errstate(over="ignore"):
                target += values * np.asarray(contribution.weight, dtype=target.dtype)
            contribution.chunks += 1
            if not np.isfinite(target).all():
                raise ValueError(f"n_samples x update overflows {target.dtype} in the sum (tensor {tensor_index}, "
                                 f"from element {element_offset})")

    def commit(self) -> RoundResult:
        """The sample-weighted mean of the complete updates; refuses a tainted sum."""
        with self._lock:
            parties, total, loss = self._close()
            for array in self._sum:
                array *= np.asarray(1.0 / total, dtype=array.dtype)
            return RoundResult(self._sum, parties, total, loss)


@dataclass
class EncryptedRoundResult:
    """Enc(sum_k n_k w_k) per tensor, to be decrypted by the key holder and divided by the total weight."""

    sums: list[EncryptedArray]
    parties: list[str]
    total_weight: float
    train_loss: float


class EncryptedFedAvg(_RoundBook):
    """One round's accumulator of Paillier-encrypted updates Enc(n_k w_k) (Paillier 1999):
    Enc(a) Enc(b) mod n^2 = Enc(a + b), so the coordinator sums what it cannot read."""

    def __init__(self, public_key: PublicKey, lengths: Sequence[int], exponent: int) -> None:
        super().__init__()
        self._key = public_key
        self._exponent = exponent
        self._sum: list[list[Any]] = [[None] * n for n in lengths]

    def add_update_chunk(self, party_id: str, tensor_index: int, element_offset: int,
                         exponent: int, ciphertexts: Sequence[Any]) -> None:
        """Multiply validated ciphertexts into the running encrypted sums."""
        if exponent != self._exponent:
            raise ValueError(f"update encoded with exponent {exponent}, the job uses {self._exponent}")
        nsquare = self._key.nsquare
        with self._lock:
            contribution = self._parties[party_id]
            target = self._sum[tensor_index]
            for i, c in enumerate(ciphertexts, start=element_offset):
                target[i] = c if target[i] is None else target[i] * c % nsquare
            contribution.chunks += 1

    def commit(self) -> EncryptedRoundResult:
        with self._lock:
            parties, total, loss = self._close()
            sums = [EncryptedArray(self._key, list(values), self._exponent) for values in self._sum]
            return EncryptedRoundResult(sums, parties, total, loss)
