"""The party's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from fedcore.config import ServerConfig
from fedcore.data import DatasetConfig


@dataclass(frozen=True)
class PartyConfig(ServerConfig):
    """``fedsuite party --config FILE`` reads this (every key also ``FEDSUITE_<KEY>``)."""

    coordinator: str = "127.0.0.1:50051"
    """host:port of the coordinator."""
    coordinator_id: str = "coordinator"
    """The coordinator's node id: its certificate must name it, or the party does not talk to it."""
    advertise: str | None = None
    """host:port the coordinator dials back; default: the listen host and the bound port."""
    role: str = "guest"
    """guest (holds labels) or host (features only, in vertical jobs)."""
    organisation: str = ""
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    """Dataset name -> where it lives (a CSV or Parquet file, or a SQL query) and its columns; paths relative to
    the config file."""
    call_timeout_s: float = 10.0
    """Deadline of the party's calls to the coordinator."""
    state_dir: str = "party-state"
    """Trained vertical models are saved here (``<node_id>/models/<model_id>/v<version>.json``), and a guest's
    per-id scores of vertical predict jobs (``<node_id>/scores/<scores_path>``)."""
