"""An in-memory federation for unit tests: every party's Mailbox in one process.

Messages still go through the codec (FederationContext encodes and decodes), so tests
exercise the same bytes a gRPC transport would carry.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from fedcore.federation.context import FederationContext
from fedcore.federation.errors import PeerUnavailable
from fedcore.federation.mailbox import Mailbox


class MemoryTransport:
    """Delivers straight into the destination party's Mailbox."""

    def __init__(self, mailboxes: dict[str, Mailbox]) -> None:
        self._mailboxes = mailboxes

    def send(self, job_id: str, tag: str, src: str, dst: str, payload: bytes) -> None:
        mailbox = self._mailboxes.get(dst)
        if mailbox is None:
            raise PeerUnavailable(f"party {dst} is not part of this in-memory federation")
        mailbox.deliver(job_id, tag, src, payload)


class MemoryFederation:
    """One Mailbox per party and a transport between them.

    ``allow_insecure_keys`` lets contexts accept Paillier keys below 1024 bits, so unit
    tests can run the protocols with 512-bit keys.
    """

    def __init__(self, party_ids: Sequence[str], *, allow_insecure_keys: bool = False) -> None:
        if len(set(party_ids)) != len(party_ids):
            raise ValueError(f"party ids repeat: {list(party_ids)}")
        self._mailboxes = {party_id: Mailbox(party_id) for party_id in party_ids}
        self.transport = MemoryTransport(self._mailboxes)
        self.allow_insecure_keys = allow_insecure_keys

    def context(
        self, job_id: str, party_id: str, timeout_s: float = 30.0, cancelled: threading.Event | None = None
    ) -> FederationContext:
        """``party_id``'s context for ``job_id``."""
        return FederationContext(job_id, party_id, self.transport, self.mailbox(party_id), timeout_s, cancelled,
                                 allow_insecure_keys=self.allow_insecure_keys)

    def mailbox(self, party_id: str) -> Mailbox:
        """The Mailbox of ``party_id`` (KeyError for a stranger)."""
        return self._mailboxes[party_id]
