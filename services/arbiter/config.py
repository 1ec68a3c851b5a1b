"""The arbiter's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from fedcore.config import ServerConfig


@dataclass(frozen=True)
class ArbiterConfig(ServerConfig):
    """``fedsuite arbiter --config FILE`` reads this (every key also ``FEDSUITE_<KEY>``)."""

    node_id: str = "arbiter"
    listen: str = "127.0.0.1:50052"
    default_key_bits: int = 2048
    """Paillier modulus size when a job does not ask for one."""
    max_keys: int = 64
    """Most key pairs held at once (one per running secure job); CreateKey beyond is RESOURCE_EXHAUSTED."""
    key_idle_ttl_s: float = 86400.0
    """A key unused (no creation, no decryption) this long is forgotten, in case its job's end went unannounced."""
    audit_path: str = "arbiter-audit.log"
    """Hash-chained log of keys created, decryptions made or refused, and refused calls."""
