"""The context federated algorithms talk through: ``ctx.put(tag, dst, value)``, ``ctx.get(tag, src)``.

Transports (gRPC in the services, in-memory in tests) carry codec frames into each
party's Mailbox; nothing here imports grpc.
"""

from fedcore.federation.codec import CodecError, decode, encode
from fedcore.federation.context import FederationContext, Transport
from fedcore.federation.errors import Cancelled, FederationError, PeerTimeout, PeerUnavailable, ProtocolError
from fedcore.federation.mailbox import Mailbox
from fedcore.federation.memory import MemoryFederation, MemoryTransport

__all__ = [
    "Cancelled",
    "CodecError",
    "FederationContext",
    "FederationError",
    "Mailbox",
    "MemoryFederation",
    "MemoryTransport",
    "PeerTimeout",
    "PeerUnavailable",
    "ProtocolError",
    "Transport",
    "decode",
    "encode",
]
