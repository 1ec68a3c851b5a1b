"""Wires the party together: datasets, servicer, server, and its registration with the coordinator."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from fedcore import telemetry
from fedcore.audit import WitnessFile
from fedcore.proto import common_pb2, coordinator_pb2 as cpb, coordinator_pb2_grpc, party_pb2_grpc
from fedcore.rpc import ChannelPool, Server, error_text, make_server, service
from fedcore.tls import Identity, handshake_refusal

from fedsuite.exchange import POLICY as EXCHANGE_POLICY
from fedsuite.party.config import PartyConfig
from fedsuite.party.datasets import DatasetCatalog
from fedsuite.party.models import ModelStore
from fedsuite.party.vertical import VerticalParty
from fedsuite.party.servicer import POLICY, PartyServicer
from fedsuite.party.work import LocalWork
from fedsuite.tlsconfig import tls_files
from fedsuite.translate import seconds
from fedsuite.vertical_node import VerticalEndpoint

ROLES = {"guest": common_pb2.PARTY_ROLE_GUEST, "host": common_pb2.PARTY_ROLE_HOST}
log = telemetry.get_logger()

WITNESS_FILE = "coordinator-audit-heads.jsonl"
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0
"""Backoff between attempts while the coordinator is unreachable: doubling, capped."""

REFUSALS = {
    grpc.StatusCode.PERMISSION_DENIED: "the coordinator at {coordinator} does not let this certificate register as "
                                       "party '{node_id}'; fix the certificate or node_id, then start the party again",
    grpc.StatusCode.UNAUTHENTICATED: "the coordinator at {coordinator} does not take this certificate as a fedsuite "
                                     "identity; issue one with `fedsuite certs init DIR --node {node_id}`",
    grpc.StatusCode.INVALID_ARGUMENT: "the coordinator at {coordinator} refuses what this party's config declares "
                                      "(advertise, role, datasets); fix the config, then start the party again",
    grpc.StatusCode.UNIMPLEMENTED: "{coordinator} answers gRPC but is no fedsuite coordinator; check `coordinator` "
                                   "in the party's config",
    grpc.StatusCode.ALREADY_EXISTS: "the address this party advertises is another live node's; set `advertise` "
                                    "(or `listen`) to this party's own host:port",
}
"""Refusals retrying cannot fix, and what to do about each."""


class Party:
    """A running party: serves the coordinator's calls and keeps itself registered."""

    def __init__(self, config: PartyConfig, base_dir: Path, insecure: bool = False) -> None:
        if config.role not in ROLES:
            raise ValueError(f"role must be guest or host (got {config.role!r})")
        tls = self._tls = tls_files(config, base_dir, insecure, "party")
        self.catalog = DatasetCatalog(config.datasets, base_dir)
        self._channels = ChannelPool(tls, Identity(config.node_id, "party"))
        self.vertical = VerticalEndpoint(config.node_id, self._channels, insecure)
        work = LocalWork(self.catalog)
        state = (base_dir / config.state_dir / config.node_id).resolve()
        self.witness = WitnessFile(state / WITNESS_FILE, config.node_id)
        """The coordinator's audit heads as we were shown them: evidence its log cannot take back."""
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
        self.failed = threading.Event()
        """Set when the coordinator refused us for good (see ``_stay_registered``): the party should exit."""
        self._heartbeat = threading.Thread(target=self._stay_registered, name="heartbeat", daemon=True)
        self._heartbeat.start()

    @property
    def port(self) -> int:
        return self.server.port

    def _stay_registered(self) -> None:
        """Register, then heartbeat; re-register whenever the coordinator forgets us.

        A transient failure (the coordinator down or restarting) is retried with capped
        exponential backoff. A refusal that retrying cannot fix (wrong identity, a
        certificate from another CA, an address that is no coordinator) is logged once with
        a hint and ends the party: ``failed`` is set and ``fedsuite party`` exits 1. Exiting
        beats backing off: a supervisor restarts with its own backoff and shows the failure
        (Kubernetes: CrashLoopBackOff) instead of a party that looks alive and never joins.
        """
        stub = coordinator_pb2_grpc.CoordinatorStub(
            self._channels.get(self._config.coordinator, peer=self._config.coordinator_id))
        timeout = self._config.call_timeout_s
        interval = 1.0
        retry_s = RETRY_FIRST_S
        while not self._stopping.is_set():
            try:
                if not self.registered.is_set():
                    reply = stub.RegisterParty(self._registration(), timeout=timeout)
                    interval = seconds(reply.heartbeat_interval) or interval
                    self.registered.set()
                    log.info("registered", coordinator=self._config.coordinator, address=self.address)
                    self._witness(reply.audit_head)
                else:
                    beat = stub.Heartbeat(cpb.HeartbeatRequest(party_id=self._config.node_id), timeout=timeout)
                    self._witness(beat.audit_head)
                retry_s = RETRY_FIRST_S
                wait_s = interval
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                    self.registered.clear()
                    continue
                hint = self._unfixable(err)
                if hint is not None:
                    log.error("registration_refused", coordinator=self._config.coordinator, reason=error_text(err),
                              hint=hint)
                    self.failed.set()
                    return
                # Keep the registration: re-registering replaces the coordinator's channel to us,
                # which would cut our running streams; only NOT_FOUND means it forgot us.
                log.warning("coordinator_unreachable", reason=error_text(err), retry_in_s=retry_s)
                wait_s, retry_s = retry_s, min(retry_s * 2, RETRY_MAX_S)
            self._stopping.wait(wait_s)

    def _witness(self, head: common_pb2.AuditHead) -> None:
        problem = self.witness.observe(head.records, head.hash)
        if problem is not None:
            log.error("coordinator_audit_went_back", coordinator=self._config.coordinator, reason=problem,
                      witness_file=str(self.witness.path))

    def _unfixable(self, err: grpc.RpcError) -> str | None:
        """What to fix when the coordinator's refusal cannot end by retrying; None for a transient failure."""
        code, details = err.code(), err.details() or ""  # type: ignore[attr-defined]
        coordinator = self._config.coordinator
        if code in REFUSALS:
            return REFUSALS[code].format(coordinator=coordinator, node_id=self._config.node_id)
        tls_trouble = code == grpc.StatusCode.UNAVAILABLE and any(
            sign in details.lower() for sign in ("socket closed", "handshake", "verification"))
        if not tls_trouble or self._tls is None:
            return None
        # gRPC's words cannot tell a rejected certificate from a server going away: ask with a handshake of our own.
        refusal = handshake_refusal(coordinator, self._tls, min(self._config.call_timeout_s, 5.0),
                                    peer=self._config.coordinator_id)
        if refusal is None:
            return None
        if f"not valid for '{self._config.coordinator_id}'" in refusal:
            return (f"{refusal.rstrip('.')}: the server at {coordinator} is not the coordinator "
                    f"{self._config.coordinator_id!r}; "
                    f"check `coordinator` and `coordinator_id`")
        return f"{refusal}; the party and the coordinator need certificates from one CA"

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
