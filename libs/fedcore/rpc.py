"""gRPC plumbing shared by the three services: the one place channel and server options live.

- :func:`make_channel` and :func:`make_server` build mTLS (default) or plaintext
  (``insecure=True``, development only) channels and servers with the same options.
- :class:`AuthInterceptor` authenticates every call by its client certificate and
  authorises it by the role the certificate carries (UNAUTHENTICATED / PERMISSION_DENIED).
- Every server serves ``grpc.health.v1.Health`` and server reflection; reflection publishes the
  protos with their comments (``descriptors.binpb``), so ``grpcurl describe`` shows them.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fedcore.config import ListenError
from fedcore.tls import Identity, TlsFiles, identity_from_pem

MAX_MESSAGE_BYTES = 8 << 20
"""Largest single message accepted: chunks are 1 MiB, so anything bigger is refused (RESOURCE_EXHAUSTED)."""

KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    # Ping idle connections so cloud load balancers do not drop them silently.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Keep HTTP/2 flow-control windows at their defaults: bandwidth-delay probing lets them grow
    # to megabytes per stream, which with many streams is what made gRPC servers' memory balloon.
    ("grpc.http2.bdp_probe", 0),
    # gRPC grows each connection's TCP read buffer up to 4 MiB on fast links and keeps it:
    # with one connection per party that is what made memory grow with the number of parties.
    ("grpc.experimental.tcp_max_read_chunk_size", 256 * 1024),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    *KEEPALIVE_OPTIONS,
    # gRPC's reconnect backoff grows to 120 s by default: a peer that restarts (an arbiter has no
    # registration to tell us) would stay unreachable that long although it listens again.
    ("grpc.max_reconnect_backoff_ms", 5_000),
]
SERVER_OPTIONS: list[tuple[str, Any]] = [
    *CHANNEL_OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),
]

LIMITED_ROLES = frozenset({"party", "arbiter"})
"""Roles whose calls count against a per-peer share (the coordinator's and admins' never do)."""
HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
"""Open to any caller the TLS handshake let in (a certificate of the federation's CA), whatever its role
or none: a probe may use any node's certificate."""

IDENTITY_METADATA = "x-fedsuite-identity"
"""Insecure (development) mode only: the caller declares ``name/role`` in this metadata key."""


def make_channel(target: str, tls: TlsFiles | None, identity: Identity | None = None,
                 peer: str | None = None) -> grpc.Channel:
    """A channel to ``target``: mTLS with ``tls``, or plaintext when ``tls`` is None.

    With ``peer`` (a node id) the server's certificate must name that node (its SAN; `certs
    init` puts the node id there), not merely the address dialled: the CA alone only proves
    the server is *some* member of the federation, and a party that registered another's
    address would otherwise have us talk to that other node in its name. In plaintext mode
    ``identity`` is sent as metadata on every call, since there is no certificate to carry
    it (development only).
    """
    if tls is None:
        channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        if identity is not None:
            channel = grpc.intercept_channel(channel, _IdentityMetadata(identity))
        return channel
    ca, cert, key = tls.read()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    options = [*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", peer)] if peer else CHANNEL_OPTIONS
    return grpc.secure_channel(target, credentials, options=options)


class _IdentityMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the caller's declared identity to every call (plaintext development mode)."""

    def __init__(self, identity: Identity) -> None:
        self._entry = (IDENTITY_METADATA, f"{identity.name}/{identity.role}")

    def _with_identity(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or []), self._entry]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_identity(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_identity(details), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._with_identity(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(self._with_identity(details), requests)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with ``code`` and a sentence for people (``ServicerContext.abort`` raises)."""
    context.abort(code, message)
    raise AssertionError("unreachable: ServicerContext.abort raises")


def peer_identity(context: grpc.ServicerContext, insecure: bool = False) -> Identity | None:
    """The caller's identity: from its verified certificate, or declared metadata when insecure."""
    if insecure:
        for key, value in context.invocation_metadata() or ():
            if key == IDENTITY_METADATA:
                name, _, role = str(value).partition("/")
                return Identity(name, role)
        return None
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    return identity_from_pem(pems[0])


AuthPolicy = Mapping[str, frozenset[str]]
"""Full method name (``/fedsuite.v1.Coordinator/SubmitJob``) -> roles allowed to call it."""


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a client certificate and calls by roles the policy does not allow.

    Methods absent from the policy are refused too (deny by default), except health
    checks and reflection, which any authenticated peer (health: any peer) may use.
    """

    def __init__(self, policy: AuthPolicy, insecure: bool = False,
                 on_refusal: Callable[[str, str, str], None] | None = None, per_peer: int = 8) -> None:
        """``on_refusal(caller, method, reason)`` hears of every refused call (for the audit log);
        ``per_peer``: calls one party or arbiter may have in flight here (see ``_admit``)."""
        self._policy = policy
        self._insecure = insecure
        self._on_refusal = on_refusal
        self._per_peer = per_peer
        self._in_flight: dict[str, int] = {}
        self._in_flight_lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method in HEALTH_METHODS:
            return handler
        allowed = self._policy.get(method)
        is_reflection = method.startswith("/grpc.reflection.")
        return _guard(handler, lambda context: self._check(context, method, allowed, is_reflection))

    def _check(self, context: grpc.ServicerContext, method: str,
               allowed: frozenset[str] | None, is_reflection: bool) -> None:
        identity = peer_identity(context, self._insecure)
        if identity is None or not identity.name:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate signed by the federation's CA is required")
        assert identity is not None
        if not identity.role:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          f"the certificate of {identity.name} carries no fedsuite role (coordinator, arbiter, party, admin)")
        if is_reflection:
            return
        if allowed is None or identity.role not in allowed:
            roles = ", ".join(sorted(allowed or ())) or "nobody"
            if self._on_refusal is not None:
                self._on_refusal(identity.name, method, f"role {identity.role or 'none'} not in {roles}")
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity.name} (role {identity.role or 'none'}) may not call {method}; allowed: {roles}",
            )
        self._admit(context, identity)

    def _admit(self, context: grpc.ServicerContext, identity: Identity) -> None:
        """Give each party and arbiter its own share of the server: at most ``per_peer`` calls in flight.

        One peer flooding us (160 Exchange calls for jobs that do not exist, each waiting
        for its job) would otherwise take every worker and every slot, and the coordinator's
        own calls, which are never limited, would be refused. A call over the share is
        RESOURCE_EXHAUSTED at once, naming the peer, and holds nothing.
        """
        if identity.role not in LIMITED_ROLES:
            return
        with self._in_flight_lock:
            busy = self._in_flight.get(identity.name, 0)
            if busy >= self._per_peer:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{identity.name} already has {busy} calls in flight here (at most {self._per_peer} "
                              f"per peer)")
            self._in_flight[identity.name] = busy + 1
        if not context.add_callback(lambda: self._release(identity.name)):  # the call already ended
            self._release(identity.name)

    def _release(self, name: str) -> None:
        with self._in_flight_lock:
            left = self._in_flight.get(name, 1) - 1
            if left:
                self._in_flight[name] = left
            else:
                self._in_flight.pop(name, None)


def _guard(handler: grpc.RpcMethodHandler, check: Callable[[grpc.ServicerContext], None]) -> grpc.RpcMethodHandler:
    """Wrap ``handler`` so ``check(context)`` runs before the servicer method."""

    def wrap(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            check(context)
            return behaviour(request_or_iterator, context)

        return guarded

    factories = {
        (False, False): (grpc.unary_unary_rpc_method_handler, handler.unary_unary),
        (False, True): (grpc.unary_stream_rpc_method_handler, handler.unary_stream),
        (True, False): (grpc.stream_unary_rpc_method_handler, handler.stream_unary),
        (True, True): (grpc.stream_stream_rpc_method_handler, handler.stream_stream),
    }
    factory, behaviour = factories[(handler.request_streaming, handler.response_streaming)]
    return factory(
        wrap(behaviour),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


@dataclass
class Server:
    """A started gRPC server, the port it bound and its health servicer."""

    grpc_server: grpc.Server
    port: int
    health: health.HealthServicer

    def set_serving(self, service: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(service, status)
        self.health.set("", status)

    def stop(self, grace_s: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace_s).wait(grace_s + 1)


def service(add: Callable[[Any, grpc.Server], None], servicer: object, name: str) -> Callable[[grpc.Server], str]:
    """A ``register`` entry for :func:`make_server`: ``add(servicer, server)`` and the service's full name."""

    def register(server: grpc.Server) -> str:
        add(servicer, server)
        return name

    return register


def make_server(
    listen: str,
    tls: TlsFiles | None,
    policy: AuthPolicy,
    register: Iterable[Callable[[grpc.Server], str]],
    max_workers: int = 32,
    on_refusal: Callable[[str, str, str], None] | None = None,
) -> Server:
    """Build, bind and start a server.

    ``register`` are callables adding one servicer each and returning its full service
    name (for health and reflection). ``tls`` None means plaintext (``--insecure``).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=[AuthInterceptor(policy, insecure=tls is None, on_refusal=on_refusal, per_peer=max_workers // 4)],
        options=SERVER_OPTIONS,
        # Far above what the per-peer shares can hold (AuthInterceptor._admit): a flood beyond a peer's
        # share is refused by the interceptor in microseconds, instead of filling the slots every caller shares.
        maximum_concurrent_rpcs=max_workers * 32,
    )
    names = [add(server) for add in register]
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        CommentedReflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME]), server)
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            ca, cert, key = tls.read()
            credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
            port = server.add_secure_port(listen, credentials)
    except RuntimeError:  # grpcio raises "Failed to bind to address" where it used to return 0
        port = 0
    if port == 0:
        raise ListenError(listen, _bind_problem(listen))
    server.start()
    running = Server(server, port, health_servicer)
    for name in names:
        running.set_serving(name, True)
    return running


class CommentedReflection(reflection.ReflectionServicer):
    """Server reflection that publishes fedsuite's protos with their comments (source info) and the
    well-known types they import, from the descriptor set ``make protos`` writes.

    grpcio-reflection serialises files from a descriptor pool, which drops source info, so the files
    it answers with are swapped for the set's own (its two lookups, ``_file_by_filename`` and
    ``_file_containing_symbol``, are where every file leaves). protoc also fills in each field's
    json_name (lowerCamelCase), which grpcurl would then print: cleared, so grpcurl prints the proto
    field names (``party_id``), as the CLI's ``--json`` and the README do.
    """

    def __init__(self, service_names: Iterable[str]) -> None:
        pool, self._files = _reflection_files()
        super().__init__(service_names, pool=pool)

    def _file_by_filename(self, request, filename):  # type: ignore[no-untyped-def]
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request, fully_qualified_name):  # type: ignore[no-untyped-def]
        return self._with_comments(super()._file_containing_symbol(request, fully_qualified_name))

    def _with_comments(self, response: Any) -> Any:
        if response.HasField("file_descriptor_response"):
            files = response.file_descriptor_response.file_descriptor_proto
            for i, serialised in enumerate(files):
                files[i] = self._files.get(descriptor_pb2.FileDescriptorProto.FromString(serialised).name, serialised)
        return response


@cache
def _reflection_files() -> tuple[descriptor_pool.DescriptorPool, dict[str, bytes]]:
    """A pool of the descriptor set (plus health and reflection), and each set file's bytes by name."""
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("fedcore.proto").joinpath("descriptors.binpb").read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        _clear_json_names(file.message_type)
        pool.Add(file)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    return pool, {file.name: file.SerializeToString() for file in files.file}


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


def _bind_problem(listen: str) -> str:
    """Why ``listen`` cannot be bound, asked of the OS by binding it once: gRPC only says "Failed to bind"."""
    host, _, port = listen.rpartition(":")
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address)
    except OSError as err:  # socket.gaierror included: a host name that does not resolve
        return (err.strerror or str(err)).lower()
    except ValueError:
        return f"{port!r} is not a port number"
    return "the port is free but gRPC could not bind it (check the service's certificate and key)"


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for this process (call before threads start).

    glibc gives threads their own arenas, up to eight per core, and seldom returns
    their freed memory; a gRPC server's many threads each touching megabyte buffers
    then multiply its resident size. Two arenas measured ~30 % lower peak RSS on the
    coordinator at the same round time (bench/horizontal.py). No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_arena_max = -8  # from <malloc.h>
    libc.mallopt(m_arena_max, arenas)


def wait_for_termination(on_stop: Callable[[], None], failed: threading.Event | None = None) -> bool:
    """Block until SIGTERM or SIGINT, or until ``failed`` is set; then call ``on_stop`` once (clean shutdown).

    Returns whether ``failed`` ended the wait (the service gave up by itself and should exit non-zero).
    """
    stopped = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stopped.wait(0.2):
        if failed is not None and failed.is_set():
            break
    on_stop()
    return not stopped.is_set()


def status_code_name(error: grpc.RpcError) -> str:
    """``UNAVAILABLE`` etc. for an RpcError raised by a call (for human-readable reasons)."""
    code = error.code() if isinstance(error, grpc.Call) else None
    return code.name if code is not None else "UNKNOWN"


def error_text(error: BaseException) -> str:
    """A one-line account of a failed call: status code and the peer's message."""
    if isinstance(error, grpc.Call):
        return f"{status_code_name(error)}: {error.details()}"
    return f"{type(error).__name__}: {error}"


class ChannelPool:
    """One channel per target, reused across calls (channels multiplex; creating them is costly)."""

    def __init__(self, tls: TlsFiles | None, identity: Identity | None = None,
                 peer_at: Callable[[str], str | None] = lambda target: None) -> None:
        """``peer_at(target)``: the node id whose certificate a server at ``target`` must present
        (None: any certificate of the federation's CA that names the address)."""
        self._tls = tls
        self._identity = identity
        self._peer_at = peer_at
        self._channels: dict[tuple[str, str | None], grpc.Channel] = {}
        self._lock = threading.Lock()

    def get(self, target: str, peer: str | None = None) -> grpc.Channel:
        """The channel to ``target``, whose server must be ``peer`` (default: ``peer_at(target)``)."""
        key = (target, peer or self._peer_at(target))
        with self._lock:
            if key not in self._channels:
                self._channels[key] = make_channel(target, self._tls, self._identity, key[1])
            return self._channels[key]

    def replace(self, *targets: str) -> None:
        """Drop and close the channels to ``targets``, so the next call dials afresh.

        A peer that restarted must be reachable at once: a cached channel to its old
        process may sit in gRPC's reconnect backoff (up to minutes) although the new
        process listens. Calls in flight on the old channel end with CANCELLED.
        """
        with self._lock:
            stale = [self._channels.pop(key) for key in list(self._channels) if key[0] in targets]
        for channel in stale:
            channel.close()

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
