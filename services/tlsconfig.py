"""Turns a service's ``tls`` config and the ``--insecure`` flag into TLS files (or none)."""

from __future__ import annotations

from pathlib import Path

from fedcore.config import ConfigError, ServerConfig
from fedcore.tls import TlsFiles, check_identity


def tls_files(config: ServerConfig, base_dir: Path, insecure: bool, role: str) -> TlsFiles | None:
    """The node's mTLS files, checked before anything listens; None only with an explicit ``--insecure``.

    Raises TlsSetupError (one sentence naming the file) when the key, certificate, CA,
    validity, common name (``node_id``) or ``role`` would not work.
    """
    if insecure:
        return None
    if config.tls is None:
        raise ConfigError("tls (ca, cert, key) is required; pass --insecure to run without TLS (development only)")
    files = config.tls.files(base_dir)
    check_identity(files, config.node_id, role)
    return files
