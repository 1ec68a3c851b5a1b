"""The arbiter's key custody: one Paillier key pair per job, private keys never leave."""

from __future__ import annotations

import threading

import numpy as np

from fedcore.audit import AuditLog
from fedcore.crypto.paillier import EncryptedArray, PrivateKey, PublicKey, generate_keypair

ALLOWED_KEY_BITS = (1024, 2048, 3072)


class UnknownKey(KeyError):
    """No key pair exists for the job (NOT_FOUND)."""


class KeyVault:
    """Job id -> key pair; creating twice returns the first key (idempotent for retries)."""

    def __init__(self, default_bits: int, audit: AuditLog) -> None:
        if default_bits not in ALLOWED_KEY_BITS:
            raise ValueError(f"default_key_bits must be one of {ALLOWED_KEY_BITS} (got {default_bits})")
        self._default_bits = default_bits
        self._audit = audit
        self._keys: dict[str, tuple[PublicKey, PrivateKey]] = {}
        self._lock = threading.Lock()

    def create(self, job_id: str, bits: int) -> PublicKey:
        bits = bits or self._default_bits
        if bits not in ALLOWED_KEY_BITS:
            raise ValueError(f"key_bits must be one of {ALLOWED_KEY_BITS} (got {bits})")
        with self._lock:
            if job_id in self._keys:
                public = self._keys[job_id][0]
                if public.key_bits != bits:
                    raise ValueError(f"job {job_id} already has a {public.key_bits}-bit key")
                return public
            self._keys[job_id] = generate_keypair(bits)
            self._audit.record("key_created", job_id=job_id, key_bits=bits)
            return self._keys[job_id][0]

    def public_key(self, job_id: str) -> PublicKey:
        with self._lock:
            if job_id not in self._keys:
                raise UnknownKey(f"no key for job {job_id!r}")
            return self._keys[job_id][0]

    def decrypt_sum(self, job_id: str, sums: list[EncryptedArray], contributors: int) -> list[np.ndarray]:
        """Decrypt aggregated updates of ``contributors`` parties; never fewer than two, so no single
        party's update can be read (the coordinator states the count; the arbiter logs every call)."""
        if contributors < 2:
            self._audit.record("decryption_refused", job_id=job_id, contributors=contributors)
            raise PermissionError(
                f"the arbiter decrypts only sums of at least 2 parties' updates (got {contributors}): "
                "a single update would be revealed"
            )
        with self._lock:
            if job_id not in self._keys:
                raise UnknownKey(f"no key for job {job_id!r}")
            private = self._keys[job_id][1]
        self._audit.record("sum_decrypted", job_id=job_id, contributors=contributors, values=sum(len(a) for a in sums))
        return [private.decrypt(array) for array in sums]
