"""Tensors <-> streams of ``TensorChunk`` messages (raw values, or Paillier ciphertexts).

Models travel as lists of ndarrays cut into chunks of at most ``CHUNK_BYTES`` raw
little-endian bytes, so no gRPC message-size limit is ever reached whatever the model
size. The receiving side validates every chunk against the shapes it expects before a
single value is used: order, offsets, sizes, dtype, encoding and finiteness. A stream
that fails validation raises :class:`TensorStreamError`, which servicers map to
INVALID_ARGUMENT and the coordinator to a dropped party.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fedcore.crypto.paillier import EncryptedArray, InvalidCiphertextError, PublicKey
from fedcore.proto import tensor_pb2

CHUNK_BYTES = 1 << 20
"""Default chunk size: 1 MiB beat 256 KiB and 4 MiB in DESIGN.md's measurements."""

_DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_UINT64: np.dtype("<u8"),
}
_PROTO_DTYPES: dict[str, int] = {dt.str: code for code, dt in _DTYPES.items()}


class TensorStreamError(ValueError):
    """A tensor stream is malformed: wrong order, size, shape, dtype, encoding or values."""


@dataclass(frozen=True)
class TensorSpec:
    """What a receiver expects of one tensor: its shape and numpy dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def of(cls, array: np.ndarray) -> TensorSpec:
        return cls(tuple(int(d) for d in array.shape), np.dtype(array.dtype).newbyteorder("<"))


def specs_of(arrays: Sequence[np.ndarray]) -> list[TensorSpec]:
    """The specs a receiver should expect for ``arrays``."""
    return [TensorSpec.of(a) for a in arrays]


def proto_dtype(dtype: np.dtype) -> int:
    """The ``DType`` enum value of a numpy dtype (little-endian)."""
    key = np.dtype(dtype).newbyteorder("<").str
    if key not in _PROTO_DTYPES:
        raise TensorStreamError(f"dtype {np.dtype(dtype)} cannot travel in a tensor stream")
    return _PROTO_DTYPES[key]


def iter_chunks(arrays: Sequence[np.ndarray], chunk_bytes: int = CHUNK_BYTES) -> Iterator[tensor_pb2.TensorChunk]:
    """Cut ``arrays`` into RAW chunks of at most ``chunk_bytes`` bytes, tensor by tensor.

    An empty tensor still yields one empty chunk so the receiver sees its shape.
    """
    count = len(arrays)
    for index, array in enumerate(arrays):
        dtype = np.dtype(array.dtype).newbyteorder("<")
        shape = np.shape(array)
        raw = memoryview(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8))
        itemsize = dtype.itemsize
        if chunk_bytes < itemsize:
            raise ValueError(f"chunk_bytes={chunk_bytes} is smaller than one {dtype} element")
        step = chunk_bytes - chunk_bytes % itemsize
        total = len(raw)
        for offset in range(0, max(total, 1), step):
            yield tensor_pb2.TensorChunk(
                tensor_index=index,
                tensor_count=count,
                dtype=proto_dtype(dtype),
                shape=shape,
                encoding=tensor_pb2.TENSOR_ENCODING_RAW,
                offset=offset,
                total_bytes=total,
                data=bytes(raw[offset : offset + step]),
                element_bytes=itemsize,
            )


@dataclass(frozen=True)
class ChunkValues:
    """The validated values of one chunk: where they go and what they are."""

    tensor_index: int
    element_offset: int
    values: np.ndarray


class TensorStreamReader:
    """Validates a RAW chunk stream against expected specs, chunk by chunk.

    Chunks must arrive tensor by tensor, each tensor's bytes in order, with nothing
    missing, overlapping or extra. ``accept`` returns each chunk's values as a
    read-only view without copying; ``finish`` checks that the stream is complete.
    """

    def __init__(self, expected: Sequence[TensorSpec], *, require_finite: bool = True) -> None:
        self._expected = list(expected)
        self._require_finite = require_finite
        self._tensor = 0
        self._offset = 0

    def accept(self, chunk: tensor_pb2.TensorChunk) -> ChunkValues:
        spec = self._check_header(chunk)
        if chunk.offset != self._offset:
            raise TensorStreamError(
                f"tensor {chunk.tensor_index}: chunk at byte {chunk.offset}, expected byte {self._offset}"
            )
        data = chunk.data  # each access to a bytes field copies it: read it once
        size = len(data)
        if size % spec.dtype.itemsize:
            raise TensorStreamError(f"tensor {chunk.tensor_index}: chunk of {size} bytes is not whole elements")
        if self._offset + size > spec.nbytes:
            raise TensorStreamError(
                f"tensor {chunk.tensor_index}: stream overruns the tensor's {spec.nbytes} bytes"
            )
        values = np.frombuffer(data, dtype=spec.dtype)
        if self._require_finite and values.dtype.kind == "f" and not np.isfinite(values).all():
            raise TensorStreamError(f"tensor {chunk.tensor_index}: NaN or Inf values")
        result = ChunkValues(self._tensor, self._offset // spec.dtype.itemsize, values)
        self._offset += size
        if self._offset == spec.nbytes:
            self._tensor += 1
            self._offset = 0
        return result

    def _check_header(self, chunk: tensor_pb2.TensorChunk) -> TensorSpec:
        if chunk.encoding != tensor_pb2.TENSOR_ENCODING_RAW:
            raise TensorStreamError(f"encoding {chunk.encoding} where RAW was expected")
        if chunk.tensor_count != len(self._expected):
            raise TensorStreamError(f"stream has {chunk.tensor_count} tensors, expected {len(self._expected)}")
        if self._tensor >= len(self._expected):
            raise TensorStreamError(f"chunk of tensor {chunk.tensor_index} after the stream's last tensor")
        if chunk.tensor_index != self._tensor:
            raise TensorStreamError(f"chunk of tensor {chunk.tensor_index} where tensor {self._tensor} was expected")
        spec = self._expected[self._tensor]
        if tuple(chunk.shape) != spec.shape:
            raise TensorStreamError(
                f"tensor {chunk.tensor_index}: shape {tuple(chunk.shape)}, expected {spec.shape}"
            )
        if _DTYPES.get(chunk.dtype) != spec.dtype:
            raise TensorStreamError(f"tensor {chunk.tensor_index}: dtype {chunk.dtype}, expected {spec.dtype}")
        if chunk.total_bytes != spec.nbytes:
            raise TensorStreamError(
                f"tensor {chunk.tensor_index}: {chunk.total_bytes} bytes announced, expected {spec.nbytes}"
            )
        return spec

    @property
    def complete(self) -> bool:
        return self._tensor == len(self._expected)

    def finish(self) -> None:
        """Raise unless every expected tensor arrived whole (an empty tensor needs its one chunk)."""
        if not self.complete:
            raise TensorStreamError(
                f"stream ended early: tensor {self._tensor} of {len(self._expected)} at byte {self._offset}"
            )


def assemble(chunks: Iterable[tensor_pb2.TensorChunk], expected: Sequence[TensorSpec]) -> list[np.ndarray]:
    """Validate a whole stream and return its tensors as new arrays."""
    reader = TensorStreamReader(expected)
    arrays = [np.empty(spec.shape, dtype=spec.dtype) for spec in expected]
    for chunk in chunks:
        part = reader.accept(chunk)
        flat = arrays[part.tensor_index].reshape(-1)
        flat[part.element_offset : part.element_offset + part.values.size] = part.values
    reader.finish()
    return arrays


def nbytes(arrays: Sequence[np.ndarray]) -> int:
    """Payload size of ``arrays`` in bytes (for metrics)."""
    return sum(int(a.nbytes) for a in arrays)


# -- Paillier ciphertext arrays (TENSOR_ENCODING_PAILLIER) -------------------------------------

MAX_CIPHERTEXT_EXPONENT = 1 << 14
"""Largest |fixed-point exponent| accepted: aligning exponents costs a 2^|e| power."""


def iter_ciphertext_chunks(
    arrays: Sequence[EncryptedArray], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tensor_pb2.TensorChunk]:
    """Encrypted arrays as a PAILLIER stream: whole fixed-width ciphertexts per chunk.

    Each chunk carries the ciphertext width (``element_bytes``) and the array's fixed-point
    ``exponent``; ``dtype`` names what the values decrypt to (float64), ``shape`` the count.
    """
    count = len(arrays)
    for index, array in enumerate(arrays):
        width = array.public_key.ciphertext_width
        if chunk_bytes < width:
            raise ValueError(f"chunk_bytes={chunk_bytes} is smaller than one {width}-byte ciphertext")
        raw = memoryview(array.to_bytes())
        step = chunk_bytes - chunk_bytes % width
        for offset in range(0, max(len(raw), 1), step):
            yield tensor_pb2.TensorChunk(
                tensor_index=index, tensor_count=count, dtype=tensor_pb2.DTYPE_FLOAT64, shape=(len(array),),
                encoding=tensor_pb2.TENSOR_ENCODING_PAILLIER, offset=offset, total_bytes=len(raw),
                data=bytes(raw[offset : offset + step]), element_bytes=width, exponent=array.exponent,
            )


@dataclass(frozen=True)
class CiphertextChunk:
    """The validated ciphertexts of one chunk: where they go, their exponent, and the values."""

    tensor_index: int
    element_offset: int
    exponent: int
    ciphertexts: list


class CiphertextStreamReader:
    """Validates a PAILLIER stream of arrays of ``lengths`` under ``public_key``, chunk by chunk.

    Refuses, with TensorStreamError, anything but whole ciphertexts of the key's width in
    order, one exponent per array, and values that are not ciphertexts (0 < c < n^2,
    gcd(c, n) = 1). Nothing is decrypted; memory is one chunk.
    """

    def __init__(self, public_key: PublicKey, lengths: Sequence[int]) -> None:
        self._key = public_key
        self._width = public_key.ciphertext_width
        self._lengths = list(lengths)
        self._received = [0] * len(self._lengths)
        self._exponents: list[int | None] = [None] * len(self._lengths)
        self._current = 0

    def _whole(self, i: int) -> bool:  # an empty array still needs its one (empty) chunk
        return self._exponents[i] is not None and self._received[i] == self._lengths[i] * self._width

    def accept(self, chunk: tensor_pb2.TensorChunk) -> CiphertextChunk:
        index, width = chunk.tensor_index, self._width
        if chunk.encoding != tensor_pb2.TENSOR_ENCODING_PAILLIER:
            raise TensorStreamError(f"encoding {chunk.encoding} where PAILLIER was expected")
        if chunk.tensor_count != len(self._lengths) or not self._current <= index < len(self._lengths) or not all(
            self._whole(i) for i in range(self._current, index)
        ):
            raise TensorStreamError(f"chunk of array {index} of {chunk.tensor_count} out of order "
                                    f"(expected array {self._current} of {len(self._lengths)})")
        self._current = index
        expected = self._lengths[index] * width
        if chunk.element_bytes != width or tuple(chunk.shape) != (self._lengths[index],) or chunk.total_bytes != expected:
            raise TensorStreamError(
                f"array {index}: {chunk.element_bytes}-byte ciphertexts, shape {tuple(chunk.shape)}, "
                f"{chunk.total_bytes} bytes; expected {width}-byte ciphertexts, shape ({self._lengths[index]},)"
            )
        data = chunk.data
        received = self._received[index]
        if chunk.offset != received or len(data) % width or received + len(data) > expected:
            raise TensorStreamError(f"array {index}: {len(data)} bytes at byte {chunk.offset} do not continue "
                                    f"the {received} received in whole ciphertexts")
        if abs(chunk.exponent) > MAX_CIPHERTEXT_EXPONENT or self._exponents[index] not in (None, chunk.exponent):
            raise TensorStreamError(f"array {index}: exponent {chunk.exponent} differs or is out of range")
        try:
            ciphertexts = EncryptedArray.from_bytes(self._key, data, chunk.exponent).ciphertexts
        except InvalidCiphertextError as err:
            raise TensorStreamError(f"array {index}: invalid ciphertexts: {err}") from None
        self._exponents[index] = chunk.exponent
        self._received[index] += len(data)
        return CiphertextChunk(index, received // width, chunk.exponent, ciphertexts)

    def finish(self) -> None:
        """Raise unless every array arrived whole."""
        if not all(self._whole(i) for i in range(len(self._lengths))):
            raise TensorStreamError("stream ended before every array arrived whole")


def assemble_ciphertexts(
    chunks: Iterable[tensor_pb2.TensorChunk], public_key: PublicKey, lengths: Sequence[int]
) -> list[EncryptedArray]:
    """Validate a whole PAILLIER stream and rebuild its arrays (see CiphertextStreamReader)."""
    reader = CiphertextStreamReader(public_key, lengths)
    values: list[list] = [[] for _ in lengths]
    exponents = [0] * len(lengths)
    for chunk in chunks:
        part = reader.accept(chunk)
        values[part.tensor_index].extend(part.ciphertexts)
        exponents[part.tensor_index] = part.exponent
    reader.finish()
    return [EncryptedArray(public_key, v, e) for v, e in zip(values, exponents, strict=True)]
