"""The arbiter's key custody: one Paillier key pair per job, private keys never leave.

Keys live only as long as their job: the coordinator releases a job's key when the job
ends (ReleaseKey). Two bounds hold even if that call never arrives (the coordinator lost
its state, or the arbiter was unreachable then): at most ``max_keys`` keys at once, so
memory is bounded and a runaway caller cannot make the arbiter generate keys without end;
and a key unused for ``idle_ttl_s`` is forgotten. The TTL counts from last use (creation,
or a decryption, which every round of a secure job makes), so a long job keeps its key
while one that stopped without saying so loses it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedcore.audit import AuditLog
from fedcore.crypto.paillier import EncryptedArray, PrivateKey, PublicKey, generate_keypair

ALLOWED_KEY_BITS = (1024, 2048, 3072)


class UnknownKey(KeyError):
    """No key pair exists for the job (NOT_FOUND)."""


class TooManyKeys(RuntimeError):
    """The arbiter holds ``max_keys`` keys already (RESOURCE_EXHAUSTED)."""


@dataclass
class _Held:
    public: PublicKey
    private: PrivateKey
    last_used: float


class KeyVault:
    """Job id -> key pair; creating twice returns the first key (idempotent for retries)."""

    def __init__(self, default_bits: int, audit: AuditLog, max_keys: int, idle_ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if default_bits not in ALLOWED_KEY_BITS:
            raise ValueError(f"default_key_bits must be one of {ALLOWED_KEY_BITS} (got {default_bits})")
        if max_keys < 1 or not idle_ttl_s > 0:
            raise ValueError(f"max_keys must be >= 1 and key_idle_ttl_s > 0 (got {max_keys}, {idle_ttl_s})")
        self._default_bits = default_bits
        self._audit = audit
        self._max_keys = max_keys
        self._idle_ttl_s = idle_ttl_s
        self._clock = clock
        self._keys: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def create(self, job_id: str, bits: int) -> PublicKey:
        bits = bits or self._default_bits
        if bits not in ALLOWED_KEY_BITS:
            raise ValueError(f"key_bits must be one of {ALLOWED_KEY_BITS} (got {bits})")
        with self._lock:
            self._expire()
            held = self._keys.get(job_id)
            if held is not None:
                if held.public.key_bits != bits:
                    raise ValueError(f"job {job_id} already has a {held.public.key_bits}-bit key")
                held.last_used = self._clock()
                return held.public
            if len(self._keys) >= self._max_keys:
                self._audit.record("key_refused", job_id=job_id, held=len(self._keys))
                raise TooManyKeys(f"the arbiter holds {len(self._keys)} keys, its max_keys; "
                                  "a key is freed when its job ends")
            public, private = generate_keypair(bits)
            self._keys[job_id] = _Held(public, private, self._clock())
            self._audit.record("key_created", job_id=job_id, key_bits=bits)
            return public

    def release(self, job_id: str) -> bool:
        """Forget the job's key pair (its job ended); False if there was none."""
        with self._lock:
            held = self._keys.pop(job_id, None)
        if held is not None:
            self._audit.record("key_released", job_id=job_id)
        return held is not None

    def public_key(self, job_id: str) -> PublicKey:
        return self._held(job_id, touch=False).public

    def decrypt_sum(self, job_id: str, sums: list[EncryptedArray], contributors: int) -> list[np.ndarray]:
        """Decrypt aggregated updates of ``contributors`` parties; never fewer than two, so no single
        party's update can be read (the coordinator states the count; the arbiter logs every call)."""
        if contributors < 2:
            self._audit.record("decryption_refused", job_id=job_id, contributors=contributors)
            raise PermissionError(
                f"the arbiter decrypts only sums of at least 2 parties' updates (got {contributors}): "
                "a single update would be revealed"
            )
        private = self._held(job_id, touch=True).private
        self._audit.record("sum_decrypted", job_id=job_id, contributors=contributors, values=sum(len(a) for a in sums))
        return [private.decrypt(array) for array in sums]

    def _held(self, job_id: str, touch: bool) -> _Held:
        with self._lock:
            self._expire()
            held = self._keys.get(job_id)
            if held is None:
                raise UnknownKey(f"no key for job {job_id!r} (never created, or released when the job ended)")
            if touch:
                held.last_used = self._clock()
            return held

    def _expire(self) -> None:
        """Forget keys unused for ``idle_ttl_s`` (called under the lock)."""
        now = self._clock()
        for job_id in [j for j, held in self._keys.items() if now - held.last_used > self._idle_ttl_s]:
            del self._keys[job_id]
            self._audit.record("key_expired", job_id=job_id, idle_ttl_s=self._idle_ttl_s)
