"""Wires the party together: datasets, servicer, server, and its registration with the coordinator."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from fedcore import telemetry
from fedcore.proto import common_pb2, coordinator_pb2 as cpb, coordinator_pb2_grpc, party_pb2_grpc
from fedcore.rpc import ChannelPool, Server, error_text, make_server, service
from fedcore.tls import Identity

from fedsuite.exchange import POLICY as EXCHANGE_POLICY
from fedsuite.party.config import PartyConfig
from fedsuite.party.datasets import DatasetCatalog
from fedsuite.party.models import ModelStore
from fedsuite.party.vertical import VerticalParty
from fedsuite.party.servicer import POLICY, PartyServicer
from fedsuite.party.work import LocalWork
from fedsuite.tlsconfig import tls_files
from fedsuite.vertical_node import VerticalEndpoint

ROLES = {"guest": common_pb2.PARTY_ROLE_GUEST, "host": common_pb2.PARTY_ROLE_HOST}
log = telemetry.get_logger()


class Party:
    """A running party: serves the coordinator's calls and keeps itself registered."""

    def __init__(self, config: PartyConfig, base_dir: Path, insecure: bool = False) -> None:
        if config.role not in ROLES:
            raise ValueError(f"role must be guest or host (got {config.role!r})")
        tls = tls_files(config, base_dir, insecure)
        self.catalog = DatasetCatalog(config.datasets, base_dir)
        self._channels = ChannelPool(tls, Identity(config.node_id, "party"))
        self.vertical = VerticalEndpoint(config.node_id, self._channels, insecure)
        work = LocalWork(self.catalog)
        state = (base_dir / config.state_dir / config.node_id).resolve()
        vertical = VerticalParty(work, ModelStore(state / "models", config.node_id), state / "scores")
        servicer = PartyServicer(work, config.node_id, vertical, self.vertical.node)
        self.server: Server = make_server(
            config.listen, tls, {**POLICY, **EXCHANGE_POLICY},
            [service(party_pb2_grpc.add_PartyServicer_to_server, servicer, "fedsuite.v1.Party"),
             self.vertical.registration],
        )
        host = config.listen.rpartition(":")[0]
        self.address = config.advertise or f"{host}:{self.server.port}"
        self._config = config
        self._stopping = threading.Event()
        self.registered = threading.Event()
        self._heartbeat = threading.Thread(target=self._stay_registered, name="heartbeat", daemon=True)
        self._heartbeat.start()

    @property
    def port(self) -> int:
        return self.server.port

    def _stay_registered(self) -> None:
        """Register, then heartbeat; re-register whenever the coordinator forgets us. Never gives up."""
        stub = coordinator_pb2_grpc.CoordinatorStub(self._channels.get(self._config.coordinator))
        timeout = self._config.call_timeout_s
        interval = 1.0
        while not self._stopping.is_set():
            try:
                if not self.registered.is_set():
                    reply = stub.RegisterParty(self._registration(), timeout=timeout)
                    interval = reply.heartbeat_interval_s or interval
                    self.registered.set()
                    log.info("registered", coordinator=self._config.coordinator, address=self.address)
                else:
                    stub.Heartbeat(cpb.HeartbeatRequest(party_id=self._config.node_id), timeout=timeout)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    self.registered.clear()
                    continue
                if err.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT):  # type: ignore[attr-defined]
                    log.error("registration_refused", reason=error_text(err))
                    self.registered.clear()
                else:
                    # Keep the registration: re-registering replaces the coordinator's channel to us,
                    # which would cut our running streams; only NOT_FOUND means it forgot us.
                    log.warning("coordinator_unreachable", reason=error_text(err))
            self._stopping.wait(interval)

    def _registration(self) -> cpb.RegisterPartyRequest:
        return cpb.RegisterPartyRequest(
            party_id=self._config.node_id, role=ROLES[self._config.role], organisation=self._config.organisation,
            address=self.address, datasets=self.catalog.describe(),
        )

    def stop(self) -> None:
        self._stopping.set()
        self.server.stop()
        self._heartbeat.join(timeout=5)
        self._channels.close()
