"""Wires the arbiter together."""

from __future__ import annotations

from pathlib import Path

import grpc

from fedcore.proto import arbiter_pb2_grpc
from fedcore.rpc import Server, make_server

from fedsuite.arbiter.config import ArbiterConfig
from fedsuite.arbiter.keys import KeyVault
from fedsuite.arbiter.servicer import POLICY, ArbiterServicer
from fedsuite.tlsconfig import tls_files


class Arbiter:
    """A running arbiter."""

    def __init__(self, config: ArbiterConfig, base_dir: Path, insecure: bool = False) -> None:
        servicer = ArbiterServicer(KeyVault(config.default_key_bits))

        def add(server: grpc.Server) -> str:
            arbiter_pb2_grpc.add_ArbiterServicer_to_server(servicer, server)
            return "fedsuite.v1.Arbiter"

        self.server: Server = make_server(config.listen, tls_files(config, base_dir, insecure), POLICY, [add])

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        self.server.stop()
