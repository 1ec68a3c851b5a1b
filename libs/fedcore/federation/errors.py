"""What can go wrong between parties, as exceptions a service maps to statuses.

Every error names the peer involved, so a failure reaches the job status with the id of
the party that caused it (DESIGN.md, "What users of our peers suffer from").
"""

from __future__ import annotations


class FederationError(RuntimeError):
    """Base of every failure to exchange a message with a peer."""


class PeerTimeout(FederationError):
    """A peer did not send an expected message in time."""

    def __init__(self, job_id: str, peer: str, tag: str, seconds: float) -> None:
        super().__init__(f"job {job_id}: no message {tag!r} from {peer} after waiting {seconds:.1f} s")
        self.job_id = job_id
        self.peer = peer
        self.tag = tag
        self.seconds = seconds


class PeerUnavailable(FederationError):
    """A transport could not reach a peer; the message must name the peer."""


class Cancelled(FederationError):
    """The job was cancelled while this party waited for a peer."""


class ProtocolError(FederationError):
    """A peer sent a well-formed value of the wrong kind or size for the protocol step."""
