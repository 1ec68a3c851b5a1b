"""fedcore.tls: the development PKI, node identities, and a real mTLS handshake on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcore.rpc import Server, make_channel, make_server, peer_identity
from fedcore.tls import DEFAULT_HOSTS, Identity, TlsFiles, identity_from_pem, init_pki, parse_node

EXTRA_HOSTS = ("coordinator.fed.example", "10.0.0.7")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    (attribute,) = cert.subject.get_attributes_for_oid(oid)
    return str(attribute.value)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki") / "certs"  # init_pki creates the directory
    written = init_pki(directory, ["coordinator", "arbiter", "admin", "party-a", "ops:admin", "relay:arbiter"],
                       hosts=[*DEFAULT_HOSTS, *EXTRA_HOSTS])
    assert written == {name: TlsFiles.in_dir(directory, name)
                       for name in ["coordinator", "arbiter", "admin", "party-a", "ops", "relay"]}
    return directory


# -- node specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("coordinator", ("coordinator", "coordinator")),
        ("arbiter", ("arbiter", "arbiter")),
        ("admin", ("admin", "admin")),
        ("party-a", ("party-a", "party")),
        ("hospital", ("hospital", "party")),
        ("ops:admin", ("ops", "admin")),
        ("coordinator:party", ("coordinator", "party")),
        ("backup:coordinator", ("backup", "coordinator")),
    ],
)
def test_parse_node(spec: str, parsed: tuple[str, str]) -> None:
    assert parse_node(spec) == parsed


@pytest.mark.parametrize("spec", ["", ":party", "x:root", "x:Party", "a:b:c", "x:ca"])
def test_parse_node_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=f"bad node '{spec}': expected NAME or NAME:ROLE, .*ROLE one of "
                                         "coordinator, arbiter, party, admin"):
        parse_node(spec)


def test_bad_node_spec_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bad node 'x:root'"):
        init_pki(tmp_path / "certs", ["party-a", "x:root"])
    assert not (tmp_path / "certs").exists()


# -- the files and certificates init_pki writes -----------------------------------------------


def test_keys_are_private_and_match_their_certificates(pki_dir: Path) -> None:
    for name in ["ca", "coordinator", "arbiter", "admin", "party-a", "ops", "relay"]:
        key_path = pki_dir / f"{name}.key"
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600, key_path
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        cert_public = _cert(pki_dir / f"{name}.pem").public_key()
        assert cert_public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize(
    ("name", "role"),
    [("coordinator", "coordinator"), ("arbiter", "arbiter"), ("admin", "admin"), ("party-a", "party"),
     ("ops", "admin"), ("relay", "arbiter")],
)
def test_subject_names_node_and_role(pki_dir: Path, name: str, role: str) -> None:
    pem = (pki_dir / f"{name}.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    assert _attribute(cert, NameOID.COMMON_NAME) == name
    assert _attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == role
    assert _attribute(cert, NameOID.ORGANIZATION_NAME) == "fedsuite"
    assert identity_from_pem(pem) == Identity(name, role)


def test_ca_certificate_carries_no_role(pki_dir: Path) -> None:
    ca = _cert(pki_dir / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert identity_from_pem((pki_dir / "ca.pem").read_bytes()) == Identity("fedsuite development CA", "")


def test_subject_alternative_names(pki_dir: Path) -> None:
    cert = _cert(pki_dir / "party-a.pem")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == ["coordinator.fed.example", "localhost", "party-a"]
    assert sorted(sans.get_values_for_type(x509.IPAddress)) == [
        ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("127.0.0.1"),
    ]


def test_default_hosts(tmp_path: Path) -> None:
    files = init_pki(tmp_path, ["party-b"])["party-b"]
    sans = _cert(files.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["party-b", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize("name", ["coordinator", "party-a", "ops"])
def test_certificates_verify_against_the_ca(pki_dir: Path, name: str) -> None:
    ca = _cert(pki_dir / "ca.pem")
    leaf = _cert(pki_dir / f"{name}.pem")
    leaf.verify_directly_issued_by(ca)  # issuer name, signature algorithm and signature
    ca.verify_directly_issued_by(ca)  # self-signed
    now = datetime.now(timezone.utc)
    for cert in (ca, leaf):
        assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_certificates_do_not_verify_against_another_ca(pki_dir: Path, tmp_path: Path) -> None:
    init_pki(tmp_path, ["party-a"])
    other_ca = _cert(tmp_path / "ca.pem")
    leaf = _cert(pki_dir / "party-a.pem")
    assert leaf.issuer == other_ca.subject  # same names: only the signature tells them apart
    with pytest.raises(InvalidSignature):
        leaf.verify_directly_issued_by(other_ca)


def test_second_call_reuses_the_ca(tmp_path: Path) -> None:
    first = init_pki(tmp_path, ["party-a"])["party-a"]
    ca_pem, ca_key = (tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca.key").read_bytes()
    first_cert = first.cert.read_bytes()
    second = init_pki(tmp_path, ["party-a", "party-b"])
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem
    assert (tmp_path / "ca.key").read_bytes() == ca_key
    assert second["party-a"].cert.read_bytes() != first_cert  # reissued: new key, new serial
    ca = _cert(tmp_path / "ca.pem")
    for files in second.values():
        _cert(files.cert).verify_directly_issued_by(ca)


# -- a real mTLS handshake -------------------------------------------------------------------

PING = "/fedsuite.test.Whoami/Ping"


def _add_whoami(server: grpc.Server) -> str:
    """A tiny servicer answering with the caller's identity as the server sees it."""

    def ping(request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = peer_identity(context)
        return f"{identity.name}/{identity.role}".encode() if identity else b"?"

    handler = grpc.unary_unary_rpc_method_handler(ping)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("fedsuite.test.Whoami", {"Ping": handler})])
    return "fedsuite.test.Whoami"


@pytest.fixture(scope="module")
def server(pki_dir: Path) -> Iterator[Server]:
    running = make_server("127.0.0.1:0", TlsFiles.in_dir(pki_dir, "coordinator"), {PING: frozenset({"admin"})},
                          [_add_whoami], max_workers=4)
    yield running
    running.stop(0)


def _health(channel: grpc.Channel, service: str = "") -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


def test_mtls_health_and_identity(server: Server, pki_dir: Path) -> None:
    assert server.port > 0
    for target in [f"127.0.0.1:{server.port}", f"localhost:{server.port}"]:
        with make_channel(target, TlsFiles.in_dir(pki_dir, "admin")) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
            assert _health(channel, "fedsuite.test.Whoami") == health_pb2.HealthCheckResponse.SERVING
            assert channel.unary_unary(PING)(b"", timeout=5) == b"admin/admin"
    with make_channel(f"127.0.0.1:{server.port}", TlsFiles.in_dir(pki_dir, "ops")) as channel:
        assert channel.unary_unary(PING)(b"", timeout=5) == b"ops/admin"  # the role comes from the certificate


def test_mtls_role_not_allowed(server: Server, pki_dir: Path) -> None:
    with make_channel(f"127.0.0.1:{server.port}", TlsFiles.in_dir(pki_dir, "party-a")) as channel:
        assert _health(channel) == health_pb2.HealthCheckResponse.SERVING  # health is open
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(PING)(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "party-a (role party) may not call /fedsuite.test.Whoami/Ping; allowed: admin" in raised.value.details()


def _refused(target: str, files: TlsFiles) -> grpc.RpcError:
    started = time.monotonic()
    with make_channel(target, files) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            _health(channel)
    assert time.monotonic() - started < 4.5  # refused by the handshake, not by running out the deadline
    return raised.value


def test_certificates_of_another_ca_are_refused(server: Server, tmp_path: Path) -> None:
    foreign = init_pki(tmp_path, ["admin"])["admin"]
    error = _refused(f"127.0.0.1:{server.port}", foreign)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_server_refuses_a_client_certificate_of_another_ca(server: Server, pki_dir: Path, tmp_path: Path) -> None:
    foreign = init_pki(tmp_path, ["admin"])["admin"]
    # The client trusts the federation's CA (so it accepts the server) but presents a foreign certificate.
    files = TlsFiles(pki_dir / "ca.pem", foreign.cert, foreign.key)
    error = _refused(f"127.0.0.1:{server.port}", files)
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("spec", ["ca", "ca:party", "../outside", "a/b"])
def test_node_names_must_be_plain_file_names_and_not_ca(spec: str) -> None:
    with pytest.raises(ValueError, match="bad node"):
        parse_node(spec)


def test_certificates_pass_a_strict_rfc5280_verifier(tmp_path: Path) -> None:
    from cryptography.x509.verification import PolicyBuilder, Store

    init_pki(tmp_path, ["party-a"])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((tmp_path / "party-a.pem").read_bytes())
    verifier = PolicyBuilder().store(Store([ca])).build_client_verifier()
    verified = verifier.verify(leaf, [])
    assert verified.chain[-1] == ca
