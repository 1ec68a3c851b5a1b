"""The Arbiter gRPC servicer."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from fedcore.rpc import abort
from fedcore import telemetry, tensors
from fedcore.federation import FederationError
from fedcore.proto import arbiter_pb2, arbiter_pb2_grpc, vertical_pb2
from fedcore.federation import FederationContext
from fedcore.vertical.hetero_lr import EpochDone, fit_arbiter

from fedsuite.arbiter.keys import KeyVault, TooManyKeys, UnknownKey
from fedsuite.translate import duration, hetero_params
from fedsuite.vertical_node import Report, VerticalNode, job_label, status_for

POLICY = {
    "/fedsuite.v1.Arbiter/CreateKey": frozenset({"coordinator"}),
    "/fedsuite.v1.Arbiter/ReleaseKey": frozenset({"coordinator"}),
    "/fedsuite.v1.Arbiter/GetPublicKey": frozenset({"coordinator", "party"}),
    "/fedsuite.v1.Arbiter/RunVertical": frozenset({"coordinator"}),
    "/fedsuite.v1.Arbiter/DecryptSum": frozenset({"coordinator"}),
}
MAX_VALUES = 1 << 28
"""Most values one DecryptSum may ask for (bounds the arbiter's memory)."""


class ArbiterServicer(arbiter_pb2_grpc.ArbiterServicer):
    """Thin: checks the request and asks the vault."""

    def __init__(self, vault: KeyVault, node: VerticalNode) -> None:
        self._vault = vault
        self._node = node

    def CreateKey(self, request: arbiter_pb2.CreateKeyRequest, context: grpc.ServicerContext) -> arbiter_pb2.PublicKey:
        if not request.job_id:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "job_id is empty")
        try:
            public = self._vault.create(request.job_id, request.key_bits)
        except ValueError as err:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except TooManyKeys as err:
            abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
        return arbiter_pb2.PublicKey(job_id=request.job_id, key_bits=public.key_bits, n=public.n_bytes())

    def ReleaseKey(self, request: arbiter_pb2.ReleaseKeyRequest,
                   context: grpc.ServicerContext) -> arbiter_pb2.ReleaseKeyResponse:
        """The job ended: its private key has nothing left to decrypt."""
        return arbiter_pb2.ReleaseKeyResponse(released=self._vault.release(request.job_id))

    def GetPublicKey(self, request: arbiter_pb2.GetPublicKeyRequest, context: grpc.ServicerContext) -> arbiter_pb2.PublicKey:
        try:
            public = self._vault.public_key(request.job_id)
        except UnknownKey as err:
            abort(context, grpc.StatusCode.NOT_FOUND, str(err.args[0]))
        return arbiter_pb2.PublicKey(job_id=request.job_id, key_bits=public.key_bits, n=public.n_bytes())

    def RunVertical(self, request: vertical_pb2.VerticalTask, context: grpc.ServicerContext) -> Iterator[vertical_pb2.VerticalProgress]:
        """Train as the arbiter, streaming each epoch's loss as soon as it is decrypted."""
        if request.role != vertical_pb2.VERTICAL_ROLE_ARBITER or request.kind != vertical_pb2.VERTICAL_KIND_TRAIN:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the arbiter plays VERTICAL_ROLE_ARBITER in training jobs")
        try:
            params = hetero_params(request.params)
        except ValueError as err:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        started = time.monotonic()
        job_id = job_label(request)

        def epoch_done(done: EpochDone, report: Report) -> None:
            telemetry.ROUND_DURATION.observe(done.seconds)
            telemetry.TRAINING_LOSS.labels(job_id=job_id).set(done.loss or 0.0)
            report(vertical_pb2.VerticalProgress(epoch=done.epoch, loss=done.loss or 0.0))

        def train(ctx: FederationContext, report: Report) -> vertical_pb2.VerticalResult:
            outcome = fit_arbiter(ctx, params, request.guest, list(request.hosts),
                                  on_epoch=lambda done: epoch_done(done, report),
                                  on_decrypt=telemetry.DECRYPTIONS.labels(job_id=job_id).inc)
            return vertical_pb2.VerticalResult(epochs=outcome.epochs, converged=outcome.converged,
                                               losses=outcome.losses,
                                               duration=duration(time.monotonic() - started))

        with telemetry.bind(job_id=request.job_id):
            try:
                yield from self._node.stream(request, context, train)
            except (FederationError, ValueError) as err:
                telemetry.get_logger().warning("vertical_failed", reason=str(err))
                abort(context, status_for(err), f"{self._node.node_id}: {err}")

    def DecryptSum(self, request_iterator: Iterator[arbiter_pb2.DecryptSumRequest],
                   context: grpc.ServicerContext) -> Iterator[arbiter_pb2.DecryptSumResponse]:
        """Decrypt a sum of encrypted updates (secure aggregation); the plaintext sums stream back RAW."""
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the stream must start with a header")
        header = first.header
        if any(n < 0 for n in header.lengths) or sum(header.lengths) > MAX_VALUES:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"lengths must be >= 0 and sum to at most {MAX_VALUES}")
        try:
            public = self._vault.public_key(header.job_id)
            sums = tensors.assemble_ciphertexts(
                (_chunk_of(request) for request in request_iterator), public, list(header.lengths))
            values = self._vault.decrypt_sum(header.job_id, sums, header.contributors)
        except UnknownKey as err:
            abort(context, grpc.StatusCode.NOT_FOUND, str(err.args[0]))
        except PermissionError as err:
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except ValueError as err:  # includes TensorStreamError
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        telemetry.DECRYPTIONS.labels(job_id=header.job_id).inc(sum(header.lengths))
        telemetry.get_logger().info("decrypted_sum", job_id=header.job_id, round=header.round,
                                    contributors=header.contributors, values=sum(header.lengths))
        for chunk in tensors.iter_chunks(values):
            yield arbiter_pb2.DecryptSumResponse(chunk=chunk)


def _chunk_of(request: arbiter_pb2.DecryptSumRequest) -> tensors.tensor_pb2.TensorChunk:
    if not request.HasField("chunk"):
        raise tensors.TensorStreamError("only ciphertext chunks may follow the header")
    return request.chunk
