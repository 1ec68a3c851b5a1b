"""The receiving side of every transport: messages wait here until the algorithm takes them."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from fedcore.federation.errors import Cancelled, PeerTimeout

#: How often a waiting take() looks at its cancellation event (an Event cannot wake a Condition).
_CANCEL_POLL_S = 0.05


class Mailbox:
    """Messages delivered to one party, keyed by (job, tag, sender); thread-safe.

    Transports call deliver() as messages arrive and the algorithm's take() blocks until
    its message is there. A (job, tag, sender) is accepted once per job: a second delivery
    is a replay or a protocol bug and is refused, even after the first was taken. take()
    removes the payload, so memory holds only messages not yet consumed, plus a small log
    per job; drop_job() forgets a finished job, and later deliveries for it are refused.
    """

    def __init__(self, party_id: str) -> None:
        self.party_id = party_id
        self._pending: dict[tuple[str, str, str], bytes] = {}
        self._log: defaultdict[str, list[tuple[str, str, int]]] = defaultdict(list)
        self._seen: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
        self._finished: set[str] = set()
        self._arrived = threading.Condition()

    def deliver(self, job_id: str, tag: str, src: str, payload: bytes) -> None:
        """Store one message; ValueError for a duplicate or a message to a finished job."""
        with self._arrived:
            if job_id in self._finished:
                raise ValueError(f"job {job_id} is finished on {self.party_id}; message {tag!r} from {src} refused")
            if (tag, src) in self._seen[job_id]:
                raise ValueError(f"duplicate message {tag!r} from {src} in job {job_id}")
            self._seen[job_id].add((tag, src))
            self._log[job_id].append((tag, src, len(payload)))
            self._pending[(job_id, tag, src)] = bytes(payload)
            self._arrived.notify_all()

    def take(
        self, job_id: str, tag: str, src: str, timeout_s: float, cancelled: threading.Event | None = None
    ) -> bytes:
        """Remove and return the message, waiting up to ``timeout_s``: PeerTimeout or Cancelled otherwise."""
        key = (job_id, tag, src)
        started = time.monotonic()
        deadline = started + timeout_s
        with self._arrived:
            while key not in self._pending:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled(f"job {job_id} cancelled while {self.party_id} waited for {tag!r} from {src}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PeerTimeout(job_id, src, tag, time.monotonic() - started)
                self._arrived.wait(remaining if cancelled is None else min(remaining, _CANCEL_POLL_S))
            return self._pending.pop(key)

    def received(self, job_id: str) -> list[tuple[str, str, int]]:
        """(tag, sender, payload size) of every message delivered for the job, in arrival order."""
        with self._arrived:
            return list(self._log.get(job_id, []))

    def pending(self) -> int:
        """How many delivered messages no one has taken yet (all jobs)."""
        with self._arrived:
            return len(self._pending)

    def drop_job(self, job_id: str) -> None:
        """Forget a finished job: its untaken messages, its log; refuse its late messages from now on."""
        with self._arrived:
            self._finished.add(job_id)
            self._log.pop(job_id, None)
            self._seen.pop(job_id, None)
            for key in [key for key in self._pending if key[0] == job_id]:
                del self._pending[key]
