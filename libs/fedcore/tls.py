"""mTLS material: a development CA, one certificate per node, and who a peer is.

A node's identity is its certificate: the common name is the node id (``party-a``) and
the organizational unit is its role (``party``, ``coordinator``, ``arbiter`` or
``admin``). Servers authorise calls by role and check that a party speaks only for
itself by common name. ``fedsuite certs init`` writes the files this module reads.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("coordinator", "arbiter", "party", "admin")
"""Every role a certificate may carry."""

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
"""Names every development certificate is valid for, besides the node's own name."""

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of one node's CA bundle, certificate chain and private key (PEM)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: str | Path, name: str) -> TlsFiles:
        """The files ``certs init`` wrote for node ``name`` in ``directory``."""
        base = Path(directory)
        return cls(base / "ca.pem", base / f"{name}.pem", base / f"{name}.key")

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes; a missing file raises FileNotFoundError naming it."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


@dataclass(frozen=True)
class Identity:
    """Who is calling: the node id and role from its certificate."""

    name: str
    role: str


def role_for(node: str) -> str:
    """Default role of a node name: ``coordinator``, ``arbiter``, ``admin``, else ``party``."""
    return node if node in ("coordinator", "arbiter", "admin") else "party"


_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def parse_node(spec: str) -> tuple[str, str]:
    """Parse ``NAME`` or ``NAME:ROLE`` as given to ``certs init --node``.

    Names become file names next to the CA's, so they must be plain and may not be ``ca``.
    """
    name, _, role = spec.partition(":")
    role = role or role_for(name)
    if not _NODE_NAME.match(name) or name == "ca" or role not in ROLES:
        raise ValueError(
            f"bad node {spec!r}: expected NAME or NAME:ROLE, NAME of letters, digits, '.', '_' or '-' "
            f"(not 'ca'), ROLE one of {', '.join(ROLES)}"
        )
    return name, role


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsuite"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write ``data``; a private key is created 0600 from the start, never readable by others."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _subject_alt_names(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def init_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Load the CA in ``directory`` or create one (EC P-256, self-signed, one year)."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = _name("fedsuite development CA", "ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write(key_path, _pem_key(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def issue_node(
    directory: Path,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    name: str,
    role: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
) -> TlsFiles:
    """Write ``NAME.pem``/``NAME.key``: a client-and-server certificate signed by ``ca``."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name, role))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(_subject_alt_names([name, *hosts]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles.in_dir(directory, name)
    _write(files.key, _pem_key(key), private=True)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def init_pki(directory: str | Path, nodes: Sequence[str], hosts: Sequence[str] = DEFAULT_HOSTS) -> dict[str, TlsFiles]:
    """Create (or reuse) the CA in ``directory`` and issue one certificate per ``NAME[:ROLE]``."""
    base = Path(directory)
    parsed = [parse_node(spec) for spec in nodes]
    ca = init_ca(base)
    return {name: issue_node(base, ca, name, role, hosts) for name, role in parsed}


@functools.lru_cache(maxsize=1024)
def identity_from_pem(pem: bytes) -> Identity:
    """The identity a verified peer certificate carries (cached: one parse per peer)."""
    cert = x509.load_pem_x509_certificate(pem)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    unit = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    name = str(common[0].value) if common else ""
    role = str(unit[0].value) if unit else ""
    return Identity(name=name, role=role if role in ROLES else "")


# -- checks at start ----------------------------------------------------------------------------


class TlsSetupError(ValueError):
    """A node's CA, certificate or key cannot work: one sentence naming the file and the problem."""


def shown(path: Path) -> str:
    """``path`` as a person would type it here: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_identity(files: TlsFiles, name: str, role: str, setting: str = "node_id",
                   now: dt.datetime | None = None) -> None:
    """Refuse at start what peers would refuse later in vaguer words, naming the file at fault.

    The key must belong to the certificate, the certificate must chain to the CA in
    ``files.ca`` and be within its validity period (the issuing CA too), and its common
    name must be ``name`` (given as ``setting``) and its role ``role``. Without this a
    mismatch shows only as gRPC's "Failed to bind", a "Socket closed" retried forever, or
    a ``PERMISSION_DENIED`` once a second.
    """
    cas = _certificates(files.ca, "CA certificate")
    chain = _certificates(files.cert, "certificate")
    key = _private_key(files.key)
    leaf = chain[0]
    if key.public_key() != leaf.public_key():
        raise TlsSetupError(f"{shown(files.key)}: this key does not belong to the certificate {shown(files.cert)} "
                            f"(the two files come from different nodes or different `certs init` runs)")
    path = _path_to_ca(leaf, chain[1:], cas, files)
    now = now or dt.datetime.now(dt.timezone.utc)
    intermediates = [(cert, files.cert, "an intermediate CA certificate") for cert in path[1:-1]]
    for cert, where, what in [(leaf, files.cert, "the certificate"), *intermediates, (path[-1], files.ca, "the CA certificate")]:
        if now < cert.not_valid_before_utc:
            raise TlsSetupError(f"{shown(where)}: {what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
                                f"UTC (is this machine's clock right?)")
        if now >= cert.not_valid_after_utc:
            raise TlsSetupError(f"{shown(where)}: {what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
                                f"issue a new one (`fedsuite certs init`)")
    identity = identity_from_pem(leaf.public_bytes(serialization.Encoding.PEM))
    if identity.name != name:
        raise TlsSetupError(f"{shown(files.cert)}: the certificate is for '{identity.name}', but {setting} is '{name}'")
    if identity.role != role:
        raise TlsSetupError(f"{shown(files.cert)}: the certificate carries role '{identity.role or 'none'}', not '{role}' "
                            f"(issue one with `fedsuite certs init DIR --node {name}:{role}`)")


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = _read(path)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        swapped = " (it holds a private key: are tls.cert and tls.key swapped?)" if b"PRIVATE KEY" in data else ""
        raise TlsSetupError(f"{shown(path)}: not a PEM {what}{swapped}") from None


def _private_key(path: Path) -> PrivateKeyTypes:
    data = _read(path)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # "Password was not given but private key is encrypted"
        raise TlsSetupError(f"{shown(path)}: the private key is encrypted; fedsuite needs it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        swapped = " (it holds a certificate: are tls.cert and tls.key swapped?)" if b"CERTIFICATE" in data else ""
        raise TlsSetupError(f"{shown(path)}: not a PEM private key{swapped}") from None


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TlsSetupError(f"{shown(path)}: no such file") from None
    except OSError as err:
        raise TlsSetupError(f"{shown(path)}: cannot be read ({err.strerror or err})") from None
    if not data.strip():
        raise TlsSetupError(f"{shown(path)}: the file is empty")
    return data


def _issuer(cert: x509.Certificate, candidates: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for candidate in candidates:
        try:
            cert.verify_directly_issued_by(candidate)
            return candidate
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
    return None


def _path_to_ca(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], cas: Sequence[x509.Certificate],
                files: TlsFiles) -> list[x509.Certificate]:
    """leaf, any intermediates from the certificate file, and the CA from ``files.ca`` that signed the last."""
    path, remaining = [leaf], list(intermediates)
    while True:
        ca = _issuer(path[-1], cas)
        if ca is not None:
            return [*path, ca]
        parent = _issuer(path[-1], remaining)
        if parent is None:
            break
        path.append(parent)
        remaining.remove(parent)
    issuer = path[-1].issuer.rfc4514_string()
    if any(ca.subject == path[-1].issuer for ca in cas):
        raise TlsSetupError(f"{shown(files.cert)}: the certificate was not signed by the CA in {shown(files.ca)} but by "
                            f"another CA of the same name '{issuer}' (made by another `certs init` run?)")
    raise TlsSetupError(f"{shown(files.cert)}: the certificate was issued by '{issuer}', not by the CA in "
                        f"{shown(files.ca)} ('{cas[0].subject.rfc4514_string()}')")


# -- why a TLS peer refuses us -------------------------------------------------------------------


def handshake_refusal(target: str, files: TlsFiles, timeout_s: float, peer: str | None = None) -> str | None:
    """Why the gRPC server at ``host:port`` (which must be node ``peer``, if given) and this node cannot
    talk TLS; None if they can, or it is unreachable.

    gRPC tells a client whose certificate the server rejects only "Socket closed", the
    words it also uses for a server going away. One handshake of our own tells them
    apart: a gRPC server that accepts us speaks HTTP/2 at once, one that rejects our
    certificate closes the connection right after the handshake.
    """
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=peer or host) as tls:
                try:
                    accepted = tls.recv(1) != b""
                except ssl.SSLError:  # an alert: the server refused our certificate after the handshake
                    accepted = False
    except ssl.SSLCertVerificationError as err:
        return f"the certificate {target} presents fails verification with {shown(files.ca)}: {err.verify_message}"
    except ssl.SSLError as err:
        plaintext = " (it speaks plaintext: does it run --insecure?)" if err.reason == "WRONG_VERSION_NUMBER" else ""
        return f"the TLS handshake with {target} fails: {err.reason or err}{plaintext}"
    except (OSError, ValueError):  # unreachable, timed out, or not host:port: nothing learnt about TLS
        return None
    if accepted:
        return None
    return (f"{target} closes the connection once it has seen the certificate {shown(files.cert)}: it does not "
            f"accept it (it trusts another CA than {shown(files.ca)}?)")
