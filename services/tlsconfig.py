"""Turns a service's ``tls`` config and the ``--insecure`` flag into TLS files (or none)."""

from __future__ import annotations

from pathlib import Path

from fedcore.config import ConfigError, ServerConfig
from fedcore.tls import TlsFiles


def tls_files(config: ServerConfig, base_dir: Path, insecure: bool) -> TlsFiles | None:
    """The node's mTLS files; None only with an explicit ``--insecure``."""
    if insecure:
        return None
    if config.tls is None:
        raise ConfigError("tls (ca, cert, key) is required; pass --insecure to run without TLS (development only)")
    files = config.tls.files(base_dir)
    for path in (files.ca, files.cert, files.key):
        if not path.is_file():
            raise ConfigError(f"TLS file not found: {path}")
    return files
