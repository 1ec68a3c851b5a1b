"""Wires the arbiter together."""

from __future__ import annotations

from pathlib import Path

from fedcore.audit import AuditLog, RefusalRecorder, Signer, file_anchor
from fedcore.proto import arbiter_pb2_grpc
from fedcore.rpc import ChannelPool, Server, make_server, service
from fedcore.tls import Identity

from fedsuite.arbiter.config import ArbiterConfig
from fedsuite.arbiter.keys import KeyVault
from fedsuite.arbiter.servicer import POLICY, ArbiterServicer
from fedsuite.exchange import POLICY as EXCHANGE_POLICY
from fedsuite.tlsconfig import tls_files
from fedsuite.vertical_node import VerticalEndpoint


class Arbiter:
    """A running arbiter."""

    def __init__(self, config: ArbiterConfig, base_dir: Path, insecure: bool = False) -> None:
        tls = tls_files(config, base_dir, insecure, "arbiter")
        self._channels = ChannelPool(tls, Identity(config.node_id, "arbiter"))
        self.vertical = VerticalEndpoint(config.node_id, self._channels, insecure)
        audit_path = (base_dir / config.audit_path).resolve()
        self.audit = AuditLog(audit_path, Signer(tls.key) if tls else None, file_anchor(audit_path))
        self._refusals = RefusalRecorder(self.audit)
        servicer = ArbiterServicer(KeyVault(config.default_key_bits, self.audit, config.max_keys, config.key_idle_ttl_s), self.vertical.node)
        self.server: Server = make_server(
            config.listen, tls, {**POLICY, **EXCHANGE_POLICY},
            [service(arbiter_pb2_grpc.add_ArbiterServicer_to_server, servicer, "fedsuite.v1.Arbiter"),
             self.vertical.registration],
            on_refusal=self._refusals,
        )

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        """Stop serving, then write the pending summaries of refused calls to the audit log."""
        self.server.stop()
        self._refusals.flush()
        self._channels.close()
