"""The context a federated algorithm talks through: put a value to a peer, get one from a peer.

Algorithms are written against FederationContext alone, so the same protocol code runs
over gRPC between organisations and in memory in unit tests (FATE's ``federation.get/
remote`` and Flower's message API make the same cut).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, overload

from fedcore.crypto.paillier import PublicKey
from fedcore.federation.codec import CodecError, decode, encode
from fedcore.federation.errors import PeerTimeout, ProtocolError
from fedcore.federation.mailbox import Mailbox

T = TypeVar("T")


class Transport(Protocol):
    """Carries one encoded message to a peer's Mailbox; raises PeerUnavailable naming the peer."""

    def send(self, job_id: str, tag: str, src: str, dst: str, payload: bytes) -> None: ...


class FederationContext:
    """One party's view of one job: values out through the transport, values in from the mailbox.

    Every value goes through the codec, both ways. ``public_key`` is set by the algorithm
    once the job's Paillier key is known; the codec needs it to read ciphertexts. A tag
    names one protocol step and must be unique per (job, tag, sender).
    """

    def __init__(
        self,
        job_id: str,
        party_id: str,
        transport: Transport,
        mailbox: Mailbox,
        timeout_s: float = 60.0,
        cancelled: threading.Event | None = None,
        *,
        allow_insecure_keys: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.job_id = job_id
        self.party_id = party_id
        self.transport = transport
        self.mailbox = mailbox
        self.timeout_s = timeout_s
        self.cancelled = cancelled
        self.allow_insecure_keys = allow_insecure_keys
        self.public_key: PublicKey | None = None

    def put(self, tag: str, dst: str, value: object) -> None:
        """Send ``value`` to ``dst`` under ``tag``."""
        self.transport.send(self.job_id, tag, self.party_id, dst, encode(value))

    def put_all(self, tag: str, dsts: Sequence[str], value: object) -> None:
        """Send the same value to every peer in ``dsts`` (encoded once)."""
        payload = encode(value)
        for dst in dsts:
            self.transport.send(self.job_id, tag, self.party_id, dst, payload)

    @overload
    def get(self, tag: str, src: str) -> object: ...

    @overload
    def get(self, tag: str, src: str, kind: type[T]) -> T: ...

    def get(self, tag: str, src: str, kind: type[T] | None = None) -> object:
        """The value ``src`` sent under ``tag``, waiting up to timeout_s (PeerTimeout, Cancelled).

        With ``kind``, a value of another type is a ProtocolError naming the peer and tag.
        """
        return self._receive(tag, src, kind, self.timeout_s)

    @overload
    def get_all(self, tag: str, srcs: Sequence[str]) -> list[object]: ...

    @overload
    def get_all(self, tag: str, srcs: Sequence[str], kind: type[T]) -> list[T]: ...

    def get_all(self, tag: str, srcs: Sequence[str], kind: type[T] | None = None) -> list[Any]:
        """One value per peer, in the order of ``srcs``, all within one timeout_s."""
        deadline = time.monotonic() + self.timeout_s
        values = []
        for src in srcs:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerTimeout(self.job_id, src, tag, self.timeout_s)
            values.append(self._receive(tag, src, kind, remaining))
        return values

    def _receive(self, tag: str, src: str, kind: type[T] | None, timeout_s: float) -> object:
        payload = self.mailbox.take(self.job_id, tag, src, timeout_s, self.cancelled)
        try:
            value = decode(payload, self.public_key, allow_insecure_keys=self.allow_insecure_keys)
        except CodecError as err:
            raise CodecError(f"job {self.job_id}: {src} sent a malformed {tag!r}: {err}") from None
        if kind is not None and not isinstance(value, kind):
            raise ProtocolError(f"job {self.job_id}: {src} sent a {type(value).__name__} as {tag!r}, "
                                f"expected {kind.__name__}")
        return value
