"""The Arbiter gRPC servicer."""

from __future__ import annotations

import grpc

from fedcore.proto import arbiter_pb2, arbiter_pb2_grpc

from fedsuite.arbiter.keys import KeyVault, UnknownKey

POLICY = {
    "/fedsuite.v1.Arbiter/CreateKey": frozenset({"coordinator", "party"}),
    "/fedsuite.v1.Arbiter/GetPublicKey": frozenset({"coordinator", "party"}),
}


class ArbiterServicer(arbiter_pb2_grpc.ArbiterServicer):
    """Thin: checks the request and asks the vault."""

    def __init__(self, vault: KeyVault) -> None:
        self._vault = vault

    def CreateKey(self, request: arbiter_pb2.CreateKeyRequest, context: grpc.ServicerContext) -> arbiter_pb2.PublicKey:
        if not request.job_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job_id is empty")
        try:
            public = self._vault.create(request.job_id, request.key_bits)
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            raise
        return arbiter_pb2.PublicKey(job_id=request.job_id, key_bits=public.key_bits, n=public.n_bytes())

    def GetPublicKey(self, request: arbiter_pb2.GetPublicKeyRequest, context: grpc.ServicerContext) -> arbiter_pb2.PublicKey:
        try:
            public = self._vault.public_key(request.job_id)
        except UnknownKey as err:
            context.abort(grpc.StatusCode.NOT_FOUND, str(err.args[0]))
            raise
        return arbiter_pb2.PublicKey(job_id=request.job_id, key_bits=public.key_bits, n=public.n_bytes())
