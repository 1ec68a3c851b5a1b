"""Paillier ciphertext arrays on the tensor stream (TENSOR_ENCODING_PAILLIER): round trip and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from fedcore.crypto.paillier import EncryptedArray, generate_keypair
from fedcore.proto import tensor_pb2
from fedcore.tensors import TensorStreamError, assemble_ciphertexts, iter_ciphertext_chunks

PUBLIC, PRIVATE = generate_keypair(512, allow_insecure=True)
WIDTH = PUBLIC.ciphertext_width


def arrays() -> list[EncryptedArray]:
    return [PUBLIC.encrypt(np.array([0.5, -2.25, 1e-3, 7.0])), PUBLIC.encrypt(np.array([])),
            PUBLIC.encrypt(np.linspace(-1, 1, 9))]


def test_round_trip_in_small_chunks_of_whole_ciphertexts() -> None:
    sent = arrays()
    chunks = list(iter_ciphertext_chunks(sent, chunk_bytes=3 * WIDTH + 5))
    assert all(len(c.data) % WIDTH == 0 and len(c.data) <= 3 * WIDTH for c in chunks)
    assert {c.encoding for c in chunks} == {tensor_pb2.TENSOR_ENCODING_PAILLIER}
    assert all(c.element_bytes == WIDTH for c in chunks)
    received = assemble_ciphertexts(chunks, PUBLIC, [4, 0, 9])
    for mine, theirs in zip(received, sent, strict=True):
        assert mine.exponent == theirs.exponent
        np.testing.assert_allclose(PRIVATE.decrypt(mine), PRIVATE.decrypt(theirs))
    np.testing.assert_allclose(PRIVATE.decrypt(received[2]), np.linspace(-1, 1, 9), atol=1e-12)


def _edited(chunks: list[tensor_pb2.TensorChunk], index: int, **fields: object) -> list[tensor_pb2.TensorChunk]:
    copy = [tensor_pb2.TensorChunk.FromString(c.SerializeToString()) for c in chunks]
    for name, value in fields.items():
        if name == "shape":
            del copy[index].shape[:]
            copy[index].shape.extend(value)  # type: ignore[arg-type]
        else:
            setattr(copy[index], name, value)
    return copy


@pytest.mark.parametrize("edit, words", [
    ({"encoding": tensor_pb2.TENSOR_ENCODING_RAW}, "PAILLIER was expected"),
    ({"element_bytes": WIDTH - 1}, "expected"),
    ({"shape": [5]}, "shape"),
    ({"offset": WIDTH}, "do not continue"),
    ({"exponent": 1 << 20}, "exponent"),
    ({"tensor_index": 2}, "out of order"),
    ({"data": b"\x01" * (WIDTH - 1)}, "whole ciphertexts"),
    ({"data": b"\xff" * WIDTH}, "invalid ciphertexts"),
])
def test_malformed_streams_are_refused(edit: dict[str, object], words: str) -> None:
    chunks = list(iter_ciphertext_chunks(arrays(), chunk_bytes=WIDTH))
    with pytest.raises(TensorStreamError, match=words):
        assemble_ciphertexts(_edited(chunks, 0, **edit), PUBLIC, [4, 0, 9])


def test_exponent_must_not_change_within_an_array_and_the_stream_must_end_whole() -> None:
    chunks = list(iter_ciphertext_chunks(arrays(), chunk_bytes=WIDTH))
    with pytest.raises(TensorStreamError, match="exponent"):
        assemble_ciphertexts(_edited(chunks, 1, exponent=chunks[1].exponent - 1), PUBLIC, [4, 0, 9])
    with pytest.raises(TensorStreamError, match="ended before"):
        assemble_ciphertexts(chunks[:-1], PUBLIC, [4, 0, 9])


def test_chunks_smaller_than_one_ciphertext_are_refused() -> None:
    with pytest.raises(ValueError, match="smaller than one"):
        list(iter_ciphertext_chunks(arrays(), chunk_bytes=WIDTH - 1))
