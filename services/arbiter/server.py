"""Wires the arbiter together."""

from __future__ import annotations

from pathlib import Path

import grpc

from fedcore.federation.mailbox import Mailbox
from fedcore.proto import arbiter_pb2_grpc, vertical_pb2_grpc
from fedcore.rpc import ChannelPool, Server, make_server
from fedcore.tls import Identity

from fedsuite.arbiter.config import ArbiterConfig
from fedsuite.arbiter.keys import KeyVault
from fedsuite.arbiter.servicer import POLICY, ArbiterServicer
from fedsuite.exchange import POLICY as EXCHANGE_POLICY
from fedsuite.exchange import ActiveJobs, FederationServicer
from fedsuite.tlsconfig import tls_files
from fedsuite.vertical_node import VerticalNode


class Arbiter:
    """A running arbiter."""

    def __init__(self, config: ArbiterConfig, base_dir: Path, insecure: bool = False) -> None:
        tls = tls_files(config, base_dir, insecure)
        self._channels = ChannelPool(tls, Identity(config.node_id, "arbiter"))
        self.mailbox = Mailbox(config.node_id)
        active = ActiveJobs()
        servicer = ArbiterServicer(KeyVault(config.default_key_bits),
                                   VerticalNode(config.node_id, self._channels, self.mailbox, active))
        exchange = FederationServicer(self.mailbox, active, insecure)

        def add(server: grpc.Server) -> str:
            arbiter_pb2_grpc.add_ArbiterServicer_to_server(servicer, server)
            return "fedsuite.v1.Arbiter"

        def add_exchange(server: grpc.Server) -> str:
            vertical_pb2_grpc.add_FederationServicer_to_server(exchange, server)
            return "fedsuite.v1.Federation"

        self.server: Server = make_server(config.listen, tls, {**POLICY, **EXCHANGE_POLICY}, [add, add_exchange])

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        self.server.stop()
        self._channels.close()
