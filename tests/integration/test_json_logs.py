"""Every line a service logs is JSON with its service and node_id, gRPC's own TLS errors included.

Real processes over real mTLS on 127.0.0.1; the peers that fail their handshakes are real
TLS clients presenting a certificate of another CA.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from fedcore.proto import coordinator_pb2 as pb

from fedsuite.demo import horizontal_job
from fedsuite.local import LocalFederation, NodeProcess
from tests.conftest import breast_dataset


def records(federation: LocalFederation, name: str) -> list[dict[str, Any]]:
    """Every line of ``name``'s log, parsed (a line that is not JSON fails the test here)."""
    return [json.loads(line) for line in federation.log_tail(name, 100_000).splitlines()]


def foreign_handshake(node: NodeProcess, pki: Path, foreign_pki: Path) -> int:
    """A TLS client that trusts the federation's CA but presents another CA's certificate; returns its port."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(foreign_pki / "admin.pem", foreign_pki / "admin.key")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", node.port), timeout=5, source_address=("127.0.0.1", 0)) as raw:
        port = int(raw.getsockname()[1])
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            try:
                assert tls.recv(1) == b""  # the server closes the connection: it refused the certificate
            except ssl.SSLError:
                pass
    return port


def wait_for(federation: LocalFederation, name: str, event: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [r for r in records(federation, name) if r["event"] == event]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {event} in {name}'s log:\n{federation.log_tail(name)}")


def test_coordinator_logs_a_foreign_handshake_as_json_with_the_peer(federation: LocalFederation,
                                                                    foreign_pki: Path) -> None:
    # No handshaker trace in its environment: the coordinator must turn it on itself (by running itself again).
    coordinator = federation.start_coordinator(env={"GRPC_TRACE": ""})
    port = foreign_handshake(coordinator, federation.certs, foreign_pki)
    (failure,) = [r for r in wait_for(federation, "coordinator", "tls_handshake_failed")
                  if r["peer"] == f"127.0.0.1:{port}"]
    assert failure["service"] == "coordinator" and failure["node_id"] == "coordinator"
    assert failure["level"] == "warning" and failure["side"] == "server"
    assert failure["local"] == coordinator.address
    assert "CERTIFICATE_VERIFY_FAILED" in failure["reason"]
    assert failure["hint"] == "the client's certificate is not signed by this node's CA (tls.ca)"


def test_every_line_of_a_partys_log_is_json_with_service_and_node_id(
        federation: LocalFederation, breast_dir: Path, foreign_pki: Path) -> None:
    federation.start_coordinator()
    parties = ("party-a", "party-b")
    nodes = {name: federation.start_party(name, {"breast": breast_dataset(breast_dir, name)}) for name in parties}
    federation.wait_for_parties(list(parties))
    spec = horizontal_job(2)
    spec.horizontal.min_parties = 2
    with federation.admin() as admin:
        job_id = admin.submit(spec)
        deadline = time.monotonic() + 60
        while admin.get(job_id).state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert admin.get(job_id).state == pb.JOB_STATE_SUCCEEDED
    foreign_handshake(nodes["party-a"], federation.certs, foreign_pki)  # gRPC's own lines, from its C core
    wait_for(federation, "party-a", "tls_handshake_failed")
    federation.nodes["coordinator"].stop()  # the heartbeat thread's lines
    wait_for(federation, "party-a", "coordinator_unreachable")
    assert nodes["party-a"].stop() == 0

    lines = records(federation, "party-a")
    assert {"serving", "registered", "trained", "tls_handshake_failed", "coordinator_unreachable"} <= {
        r["event"] for r in lines}
    assert all(r["service"] == "party" and r["node_id"] == "party-a" for r in lines), lines
