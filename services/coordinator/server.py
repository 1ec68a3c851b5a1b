"""Wires the coordinator together: state, registry, jobs, servicer and server."""

from __future__ import annotations

import threading
from pathlib import Path

from fedcore import telemetry
from fedcore.audit import Anchor, AuditLog, RefusalRecorder, Signer
from fedcore.proto import coordinator_pb2_grpc
from fedcore.rpc import ChannelPool, Server, make_server, service
from fedcore.tls import Identity

from fedsuite.coordinator.config import CoordinatorConfig
from fedsuite.coordinator.jobs import JobManager
from fedsuite.coordinator.party_client import PartyClient
from fedsuite.coordinator.registry import PartyRegistry
from fedsuite.coordinator.servicer import POLICY, CoordinatorServicer
from fedsuite.coordinator.store import CheckpointStore, SqliteStore
from fedsuite.tlsconfig import tls_files


class Coordinator:
    """A running coordinator; ``stop`` leaves unfinished jobs resumable."""

    def __init__(self, config: CoordinatorConfig, base_dir: Path, insecure: bool = False) -> None:
        state = (base_dir / config.state_dir).resolve()
        state.mkdir(parents=True, exist_ok=True)
        tls = tls_files(config, base_dir, insecure, "coordinator")
        self.store = SqliteStore(state / "coordinator.db")
        # Signed with the node's TLS key, headed in the store: a cut or re-chained log is refused here.
        self.audit = AuditLog(state / "audit.log", Signer(tls.key) if tls else None,
                              Anchor("coordinator.db", self.store.audit_head, self.store.save_audit_head))
        self._refusals = RefusalRecorder(self.audit)
        checkpoints = CheckpointStore(state / "checkpoints")
        # Every channel must reach the node registered at its address, by certificate name (issue 7.1).
        self._channels = ChannelPool(tls, Identity(config.node_id, "coordinator"),
                                     peer_at=lambda address: self.registry.party_at(address))
        arbiter = (config.arbiter_id, config.arbiter) if config.arbiter else None
        self.registry = PartyRegistry(self.store, config.party_timeout_s, self.audit, self._channels.replace,
                                      reserved={config.arbiter: config.arbiter_id} if arbiter else {})
        self.jobs = JobManager(self.store, checkpoints, self.registry, PartyClient(self._channels),
                               config.call_timeout_s, arbiter, self.audit)
        servicer = CoordinatorServicer(self.registry, self.jobs, checkpoints, config.heartbeat_interval_s, tls is None,
                                       self.audit.head)

        self.server: Server = make_server(
            config.listen, tls, POLICY,
            [service(coordinator_pb2_grpc.add_CoordinatorServicer_to_server, servicer, "fedsuite.v1.Coordinator")],
            on_refusal=self._refusals,
        )
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch_liveness, name="liveness", daemon=True)
        self._monitor.start()
        self.jobs.resume_unfinished()

    @property
    def port(self) -> int:
        return self.server.port

    def _watch_liveness(self) -> None:
        while not self._stopping.wait(1.0):
            self.registry.refresh_status()

    def stop(self) -> None:
        """Stop serving, then write the pending summaries of refused calls to the audit log."""
        self._stopping.set()
        self.server.stop()
        self._refusals.flush()
        self.jobs.close()
        self._channels.close()
        self.store.close()
        telemetry.get_logger().info("stopped")
