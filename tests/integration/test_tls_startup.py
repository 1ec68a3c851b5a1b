"""A wrong identity or certificate ends a service at start with one sentence; an unfixable refusal ends a party.

Every service here is a real ``fedsuite`` process over real mTLS on 127.0.0.1: the start
checks run before anything binds, and a party whose registration is refused for a reason
retrying cannot fix (a certificate of another CA on either side, a config the coordinator
refuses, an address that is no coordinator) logs why with a hint and exits 1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedcore.logrelay import service_environment
from fedcore.proto import coordinator_pb2_grpc
from fedcore.rpc import abort
from fedcore.tls import TlsFiles, issue_node

from fedsuite.local import LocalFederation, free_port

START_S = 15.0
"""Bound on a service's start and failure: an import of the package is ~1 s, the checks milliseconds."""


def run(kind: str, config: dict[str, Any], directory: Path, *args: str) -> tuple[int, str, float]:
    """Run ``fedsuite KIND --config FILE`` until it exits: (exit code, everything it printed, seconds)."""
    path = directory / f"{kind}-{config.get('node_id', 'cli')}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fedsuite.cli", kind, "--config", str(path), *args],
                          capture_output=True, text=True, timeout=START_S, env=service_environment(os.environ))
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def tls_section(ca: Path, cert: Path, key: Path) -> dict[str, str]:
    return {"ca": str(ca), "cert": str(cert), "key": str(key)}


def party_config(name: str, coordinator: str, tls: dict[str, str], **settings: Any) -> dict[str, Any]:
    return {"node_id": name, "listen": "127.0.0.1:0", "coordinator": coordinator, "tls": tls, "call_timeout_s": 3.0,
            **settings}


def expired_certificate(pki: Path, directory: Path, name: str) -> TlsFiles:
    """``name``'s certificate signed by the federation's CA, valid until yesterday."""
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsuite"),
                                 x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "party"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(pki / "ca.pem", directory / f"{name}-expired.pem", directory / f"{name}-expired.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def assert_one_sentence(output: str, *fragments: str) -> None:
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], output


# -- checks at start -------------------------------------------------------------------------------


def test_party_with_another_partys_certificate_exits_at_once(pki: Path, tmp_path: Path) -> None:
    tls = tls_section(pki / "ca.pem", pki / "party-a.pem", pki / "party-a.key")
    code, output, seconds = run("party", party_config("party-c", "127.0.0.1:1", tls), tmp_path)
    assert code == 2 and seconds < START_S
    assert_one_sentence(output, f"{pki / 'party-a.pem'}: the certificate is for 'party-a', but node_id is 'party-c'")


@pytest.mark.parametrize("case", ["foreign certificate", "key of another node", "garbage certificate",
                                  "garbage key", "expired", "missing key"])
def test_bad_certificate_setup_exits_at_once_naming_the_file(case: str, pki: Path, foreign_pki: Path,
                                                              tmp_path: Path) -> None:
    ca, cert, key = pki / "ca.pem", pki / "party-a.pem", pki / "party-a.key"
    if case == "foreign certificate":  # signed by another CA of the same name, the config names the federation's
        cert, key = foreign_pki / "party-a.pem", foreign_pki / "party-a.key"
        expected = [f"{cert}: the certificate was not signed by the CA in {ca} but by another CA of the same name"]
    elif case == "key of another node":
        key = pki / "party-b.key"
        expected = [f"{key}: this key does not belong to the certificate {cert}"]
    elif case == "garbage certificate":
        cert = tmp_path / "garbage.pem"
        cert.write_text("not a certificate\n")
        expected = [f"{cert}: not a PEM certificate"]
    elif case == "garbage key":
        key = tmp_path / "garbage.key"
        shutil.copy(pki / "party-a.pem", key)  # a certificate where the key should be
        expected = [f"{key}: not a PEM private key (it holds a certificate: are tls.cert and tls.key swapped?)"]
    elif case == "expired":
        files = expired_certificate(pki, tmp_path, "party-a")
        cert, key = files.cert, files.key
        expected = [f"{cert}: the certificate expired on ", "UTC"]
    else:
        key = tmp_path / "absent.key"
        expected = [f"{key}: no such file"]
    code, output, seconds = run("party", party_config("party-a", "127.0.0.1:1", tls_section(ca, cert, key)), tmp_path)
    assert code == 2 and seconds < START_S
    assert_one_sentence(output, *expected)


def test_coordinator_and_arbiter_check_their_certificates_too(pki: Path, tmp_path: Path) -> None:
    as_party = tls_section(pki / "ca.pem", pki / "party-a.pem", pki / "party-a.key")
    code, output, _ = run("coordinator", {"node_id": "party-a", "listen": "127.0.0.1:0", "tls": as_party,
                                          "state_dir": str(tmp_path / "state")}, tmp_path)
    assert code == 2
    assert_one_sentence(output, f"{pki / 'party-a.pem'}: the certificate carries role 'party', not 'coordinator'")
    expired = expired_certificate(pki, tmp_path, "arbiter")
    code, output, _ = run("arbiter", {"node_id": "arbiter", "listen": "127.0.0.1:0",
                                      "tls": tls_section(expired.ca, expired.cert, expired.key)}, tmp_path)
    assert code == 2
    assert_one_sentence(output, f"{expired.cert}: the certificate expired on ")


def test_admin_cli_checks_its_certificate(pki: Path, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(pki / "ca.pem", certs / "ca.pem")
    shutil.copy(pki / "admin.pem", certs / "admin.pem")
    shutil.copy(pki / "party-a.key", certs / "admin.key")
    done = subprocess.run([sys.executable, "-m", "fedsuite.cli", "parties", "--certs", str(certs), "--coordinator",
                           f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=START_S)
    assert done.returncode == 2
    assert_one_sentence(done.stdout + done.stderr,
                        f"{certs / 'admin.key'}: this key does not belong to the certificate {certs / 'admin.pem'}")


# -- refusals at registration ---------------------------------------------------------------------------


def refusal_of(output: str) -> dict[str, Any]:
    """The party's one ``registration_refused`` line; every line it wrote is JSON."""
    assert "Traceback" not in output, output
    records = [json.loads(line) for line in output.splitlines()]
    refused = [r for r in records if r["event"] == "registration_refused"]
    assert len(refused) == 1, output
    assert refused[0]["level"] == "error" and refused[0]["service"] == "party"
    return refused[0]


@pytest.fixture
def coordinator(federation: LocalFederation) -> Iterator[str]:
    yield federation.start_coordinator().address


def test_party_trusting_another_ca_exits_with_a_hint(coordinator: str, foreign_pki: Path, tmp_path: Path) -> None:
    """Its own files agree (the start check passes); the coordinator's certificate is not from its CA."""
    tls = tls_section(foreign_pki / "ca.pem", foreign_pki / "party-a.pem", foreign_pki / "party-a.key")
    code, output, seconds = run("party", party_config("party-a", coordinator, tls), tmp_path)
    assert code == 1 and seconds < START_S
    refusal = refusal_of(output)
    assert refusal["coordinator"] == coordinator and refusal["reason"].startswith("UNAVAILABLE")
    assert refusal["hint"] == (f"the certificate {coordinator} presents fails verification with "
                               f"{foreign_pki / 'ca.pem'}: unable to get local issuer certificate; "
                               f"the party and the coordinator need certificates from one CA")


def other_ca(directory: Path, party: str) -> TlsFiles:
    """A CA not named like the development CA, and ``party``'s certificate from it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "another federation's CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir()
    files = issue_node(directory, (key, cert), party, "party")
    files.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def test_party_whose_certificate_the_coordinator_rejects_exits_with_a_hint(
        federation: LocalFederation, coordinator: str, tmp_path: Path) -> None:
    """The party trusts both CAs, but presents a certificate of the one the coordinator does not trust.

    gRPC says only "Socket closed" to the party; the coordinator's log says why, with the party's address.
    """
    other = other_ca(tmp_path / "other", "party-a")
    bundle = tmp_path / "both-cas.pem"
    bundle.write_bytes((federation.certs / "ca.pem").read_bytes() + other.ca.read_bytes())
    code, output, seconds = run("party", party_config("party-a", coordinator, tls_section(bundle, other.cert, other.key)),
                                tmp_path)
    assert code == 1 and seconds < START_S
    refusal = refusal_of(output)
    assert "Socket closed" in refusal["reason"]
    assert refusal["hint"] == (f"{coordinator} closes the connection once it has seen the certificate "
                               f"{other.cert}: it does not accept it (it trusts another CA than "
                               f"{bundle}?); the party and the coordinator need certificates from one CA")
    coordinator_log = [json.loads(line) for line in federation.log_tail("coordinator", 200).splitlines()]
    failures = [r for r in coordinator_log if r["event"] == "tls_handshake_failed"]
    assert failures and all(r["node_id"] == "coordinator" and r["side"] == "server" for r in failures)
    assert any("CERTIFICATE_VERIFY_FAILED" in r["reason"] and r["peer"].startswith("127.0.0.1:") for r in failures)


def test_party_whose_registration_is_invalid_exits_with_a_hint(federation: LocalFederation, coordinator: str,
                                                               tmp_path: Path) -> None:
    pki = federation.certs
    tls = tls_section(pki / "ca.pem", pki / "party-a.pem", pki / "party-a.key")
    code, output, _ = run("party", party_config("party-a", coordinator, tls, advertise="nowhere"), tmp_path)
    assert code == 1
    refusal = refusal_of(output)
    assert refusal["reason"] == "INVALID_ARGUMENT: address 'nowhere' is not host:port"
    assert "fix the config, then start the party again" in refusal["hint"]


def test_party_pointed_at_an_arbiter_exits_with_a_hint(federation: LocalFederation, tmp_path: Path) -> None:
    arbiter = federation.start_arbiter().address
    pki = federation.certs
    tls = tls_section(pki / "ca.pem", pki / "party-a.pem", pki / "party-a.key")
    code, output, _ = run("party", party_config("party-a", arbiter, tls), tmp_path)
    assert code == 1  # the arbiter's certificate names the arbiter, not the coordinator: refused before any call
    assert refusal_of(output)["hint"] == (
        f"the certificate {arbiter} presents fails verification with {pki / 'ca.pem'}: Hostname mismatch, "
        f"certificate is not valid for 'coordinator': the server at {arbiter} is not the coordinator "
        f"'coordinator'; check `coordinator` and `coordinator_id`")
    # told the arbiter is its coordinator, the name check passes and the arbiter's answer is the tell
    code, output, _ = run("party", party_config("party-a", arbiter, tls, coordinator_id="arbiter"), tmp_path)
    assert code == 1
    assert refusal_of(output)["hint"] == (f"{arbiter} answers gRPC but is no fedsuite coordinator; check "
                                          f"`coordinator` in the party's config")


class RefusingCoordinator(coordinator_pb2_grpc.CoordinatorServicer):
    """A coordinator that lets no party in (as one with an allow-list would): the real one cannot be made to
    refuse a party that passed its own start check, whose certificate names it."""

    def RegisterParty(self, request: Any, context: grpc.ServicerContext) -> Any:
        abort(context, grpc.StatusCode.PERMISSION_DENIED, f"{request.party_id} is not a member of this federation")


def test_party_refused_permission_exits_with_a_hint(pki: Path, tmp_path: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(RefusingCoordinator(), server)
    credentials = grpc.ssl_server_credentials([((pki / "coordinator.key").read_bytes(),
                                                (pki / "coordinator.pem").read_bytes())],
                                              root_certificates=(pki / "ca.pem").read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        tls = tls_section(pki / "ca.pem", pki / "party-a.pem", pki / "party-a.key")
        code, output, seconds = run("party", party_config("party-a", f"127.0.0.1:{port}", tls), tmp_path)
    finally:
        server.stop(0)
    assert code == 1 and seconds < START_S
    refusal = refusal_of(output)
    assert refusal["reason"] == "PERMISSION_DENIED: party-a is not a member of this federation"
    assert refusal["hint"] == (f"the coordinator at 127.0.0.1:{port} does not let this certificate register as party "
                               f"'party-a'; fix the certificate or node_id, then start the party again")


def test_party_waits_for_a_coordinator_that_is_down(federation: LocalFederation) -> None:
    """Transient: retried with growing, capped delays, and the party registers once the coordinator is back."""
    federation.start_coordinator().stop()
    party = federation.start_party("party-a", {})

    def delays() -> list[float]:
        records = map(json.loads, federation.log_tail("party-a", 100).splitlines())
        return [r["retry_in_s"] for r in records if r["event"] == "coordinator_unreachable"]

    deadline = time.monotonic() + 10
    while len(delays()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert delays()[:3] == [0.5, 1.0, 2.0] and party.alive()
    federation.restart("coordinator")
    federation.wait_for_parties(["party-a"], timeout_s=10)
