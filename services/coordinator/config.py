"""The coordinator's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from fedcore.config import ServerConfig


@dataclass(frozen=True)
class CoordinatorConfig(ServerConfig):
    """``fedsuite coordinator --config FILE`` reads this (every key also ``FEDSUITE_<KEY>``)."""

    node_id: str = "coordinator"
    listen: str = "127.0.0.1:50051"
    state_dir: str = "state"
    """SQLite database (``coordinator.db``) and model checkpoints live here."""
    heartbeat_interval_s: float = 2.0
    """Seconds between party heartbeats; told to parties when they register."""
    party_timeout_s: float = 6.0
    """A party silent this long is marked offline and not sampled."""
    call_timeout_s: float = 30.0
    """Deadline of the coordinator's short calls to parties (DescribeData)."""
    arbiter: str | None = None
    """host:port of the arbiter, needed by vertical training jobs."""
    arbiter_id: str = "arbiter"
    """The arbiter's node id (the common name of its certificate)."""
