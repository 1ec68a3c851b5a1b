"""fedcore.tensors: chunking tensors into TensorChunk streams and validating them on receipt."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.proto import tensor_pb2
from fedcore.tensors import (
    CHUNK_BYTES,
    TensorSpec,
    TensorStreamError,
    TensorStreamReader,
    assemble,
    iter_chunks,
    specs_of,
)

DTYPES = [np.float32, np.float64, np.int64, np.uint64]


def _sample(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    """Values of ``dtype`` that use the type's range (negative floats, large unsigned ints)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _chunks(arrays: list[np.ndarray], chunk_bytes: int) -> list[tensor_pb2.TensorChunk]:
    return list(iter_chunks(arrays, chunk_bytes))


def _assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        assert g.dtype == np.dtype(w.dtype)
        np.testing.assert_array_equal(g, w)


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_each_dtype_in_chunks_of_100_bytes(dtype: type) -> None:
    arrays = [_sample((7, 9), dtype, 1), np.zeros((0,), dtype=dtype), _sample((1,), dtype, 2), _sample((33,), dtype, 3)]
    chunks = _chunks(arrays, 100)  # 100 is not a multiple of 8: chunks hold 96 bytes (f8/i8/u8) or 100 (f4)
    assert max(len(c.data) for c in chunks) <= 100
    assert sum(1 for c in chunks if c.tensor_index == 0) == -(-arrays[0].nbytes // (100 - 100 % arrays[0].itemsize))
    _assert_same(assemble(chunks, specs_of(arrays)), arrays)


def test_chunk_headers_describe_the_stream() -> None:
    arrays = [np.arange(30, dtype=np.float64).reshape(5, 6), np.zeros((0,), np.int64), np.ones(2, np.float32)]
    chunks = _chunks(arrays, 100)
    assert [(c.tensor_index, c.offset, len(c.data)) for c in chunks] == [
        (0, 0, 96), (0, 96, 96), (0, 192, 48), (1, 0, 0), (2, 0, 8),
    ]
    for chunk in chunks:
        array = arrays[chunk.tensor_index]
        assert chunk.tensor_count == 3
        assert tuple(chunk.shape) == array.shape
        assert chunk.total_bytes == array.nbytes
        assert chunk.element_bytes == array.itemsize
        assert chunk.encoding == tensor_pb2.TENSOR_ENCODING_RAW
    assert [c.dtype for c in chunks] == [tensor_pb2.DTYPE_FLOAT64] * 3 + [tensor_pb2.DTYPE_INT64, tensor_pb2.DTYPE_FLOAT32]


def test_an_empty_tensor_still_sends_one_chunk_and_is_required() -> None:
    arrays = [np.ones(3, np.float32), np.zeros((0,), np.float32)]
    chunks = _chunks(arrays, 1024)
    assert [(c.tensor_index, len(c.data)) for c in chunks] == [(0, 12), (1, 0)]
    reader = TensorStreamReader(specs_of(arrays))
    reader.accept(chunks[0])
    assert not reader.complete
    with pytest.raises(TensorStreamError, match="stream ended early: tensor 1 of 2 at byte 0"):
        reader.finish()
    reader.accept(chunks[1])
    assert reader.complete
    reader.finish()


def test_default_chunks_are_at_most_one_mebibyte() -> None:
    assert CHUNK_BYTES == 1 << 20
    big = _sample((600_000,), np.float32, 4)  # 2.4 MB
    chunks = list(iter_chunks([big]))
    assert [len(c.data) for c in chunks] == [1 << 20, 1 << 20, big.nbytes - (2 << 20)]
    _assert_same(assemble(chunks, specs_of([big])), [big])


def test_non_contiguous_and_big_endian_inputs_travel_as_little_endian_row_major() -> None:
    fortran = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    transposed = np.arange(6, dtype=np.int64).reshape(2, 3).T
    big_endian = np.arange(5, dtype=">f4")
    arrays = [fortran, transposed, big_endian]
    specs = specs_of(arrays)
    assert [s.dtype.str for s in specs] == ["<f8", "<i8", "<f4"]
    chunks = _chunks(arrays, 16)
    assert chunks[0].data == np.arange(12, dtype="<f8").tobytes()[:16]
    got = assemble(chunks, specs)
    _assert_same(got, [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for a in arrays])
    np.testing.assert_array_equal(got[1], [[0, 3], [1, 4], [2, 5]])


def test_reader_yields_read_only_views_at_element_offsets() -> None:
    array = np.arange(10, dtype=np.int64)
    reader = TensorStreamReader(specs_of([array]))
    parts = [reader.accept(c) for c in iter_chunks([array], 24)]
    assert [(p.tensor_index, p.element_offset, p.values.tolist()) for p in parts] == [
        (0, 0, [0, 1, 2]), (0, 3, [3, 4, 5]), (0, 6, [6, 7, 8]), (0, 9, [9]),
    ]
    assert not any(p.values.flags.writeable for p in parts)


def test_unsupported_dtype_cannot_travel() -> None:
    with pytest.raises(TensorStreamError, match="dtype float16 cannot travel"):
        list(iter_chunks([np.zeros(3, np.float16)]))


def test_spec_nbytes() -> None:
    assert TensorSpec((3, 4), np.dtype("<f8")).nbytes == 96
    assert TensorSpec((0, 5), np.dtype("<f4")).nbytes == 0
    assert TensorSpec.of(np.zeros((2, 2), ">i8")) == TensorSpec((2, 2), np.dtype("<i8"))


_shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple) | st.just((0,))
_tensors = st.lists(st.tuples(_shapes, st.sampled_from(DTYPES), st.integers(0, 2**32 - 1)), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(tensors=_tensors, chunk_bytes=st.integers(8, 200))
def test_round_trip_random_shapes_dtypes_and_chunk_sizes(
    tensors: list[tuple[tuple[int, ...], type, int]], chunk_bytes: int
) -> None:
    arrays = [_sample(shape, dtype, seed) for shape, dtype, seed in tensors]
    chunks = _chunks(arrays, chunk_bytes)
    assert all(len(c.data) <= chunk_bytes for c in chunks)
    assert all(len(c.data) % arrays[c.tensor_index].itemsize == 0 for c in chunks)
    _assert_same(assemble(chunks, specs_of(arrays)), arrays)


# -- rejections ------------------------------------------------------------------------------

F32 = np.arange(1, 11, dtype=np.float32)  # 40 bytes
I64 = np.arange(6, dtype=np.int64).reshape(2, 3)  # 48 bytes


def _stream(chunk_bytes: int = 16) -> list[tensor_pb2.TensorChunk]:
    """F32 in chunks of 16, 16, 8 bytes, then I64 in 16, 16, 16."""
    return _chunks([F32, I64], chunk_bytes)


def _edited(chunk: tensor_pb2.TensorChunk, **fields: object) -> tensor_pb2.TensorChunk:
    copy = tensor_pb2.TensorChunk()
    copy.CopyFrom(chunk)
    for name, value in fields.items():
        if name == "shape":
            del copy.shape[:]
            copy.shape.extend(value)  # type: ignore[arg-type]
        else:
            setattr(copy, name, value)
    return copy


def _reject(chunks: list[tensor_pb2.TensorChunk], message: str, specs: list[TensorSpec] | None = None) -> None:
    """Every chunk but the last is accepted; the last is refused with ``message``."""
    reader = TensorStreamReader(specs or specs_of([F32, I64]))
    for chunk in chunks[:-1]:
        reader.accept(chunk)
    with pytest.raises(TensorStreamError, match=message):
        reader.accept(chunks[-1])


def test_whole_stream_is_accepted() -> None:
    chunks = _stream()
    assert [(c.tensor_index, len(c.data)) for c in chunks] == [(0, 16), (0, 16), (0, 8), (1, 16), (1, 16), (1, 16)]
    _assert_same(assemble(chunks, specs_of([F32, I64])), [F32, I64])


def test_rejects_other_encoding() -> None:
    _reject([_edited(_stream()[0], encoding=tensor_pb2.TENSOR_ENCODING_PAILLIER)], "encoding 3 where RAW was expected")
    _reject([_edited(_stream()[0], encoding=tensor_pb2.TENSOR_ENCODING_UNSPECIFIED)], "encoding 0 where RAW")


def test_rejects_wrong_tensor_count() -> None:
    _reject([_edited(_stream()[0], tensor_count=3)], "stream has 3 tensors, expected 2")
    _reject(_chunks([F32], 16)[:1], "stream has 1 tensors, expected 2")


def test_rejects_chunk_of_another_tensor_out_of_order() -> None:
    chunks = _stream()
    _reject([chunks[3]], "chunk of tensor 1 where tensor 0 was expected")
    _reject([chunks[0], chunks[1], chunks[3]], "chunk of tensor 1 where tensor 0 was expected")
    _reject(chunks[:3] + [chunks[0]], "chunk of tensor 0 where tensor 1 was expected")


def test_rejects_gap_and_overlap() -> None:
    chunks = _stream()
    _reject([chunks[0], chunks[2]], r"tensor 0: chunk at byte 32, expected byte 16")  # gap
    _reject([chunks[0], chunks[0]], r"tensor 0: chunk at byte 0, expected byte 16")  # repeat
    _reject([chunks[0], _edited(chunks[1], offset=12)], r"tensor 0: chunk at byte 12, expected byte 16")  # overlap
    _reject([_edited(chunks[0], offset=4)], r"tensor 0: chunk at byte 4, expected byte 0")


def test_rejects_overrun() -> None:
    chunks = _stream()
    _reject([chunks[0], chunks[1], _edited(chunks[2], data=bytes(16))], "tensor 0: stream overruns the tensor's 40 bytes")
    _reject([_edited(chunks[0], data=bytes(44))], "overruns the tensor's 40 bytes")


def test_rejects_partial_elements() -> None:
    _reject([_edited(_stream()[0], data=bytes(6))], "tensor 0: chunk of 6 bytes is not whole elements")
    _reject(_stream()[:3] + [_edited(_stream()[3], data=bytes(12))], "tensor 1: chunk of 12 bytes is not whole elements")


def test_rejects_wrong_shape_even_with_the_same_size() -> None:
    chunks = _stream()
    _reject(chunks[:3] + [_edited(chunks[3], shape=[3, 2])], r"tensor 1: shape \(3, 2\), expected \(2, 3\)")
    _reject([_edited(chunks[0], shape=[10, 1])], r"tensor 0: shape \(10, 1\), expected \(10,\)")


def test_rejects_wrong_dtype_even_with_the_same_size() -> None:
    chunks = _stream()
    _reject(chunks[:3] + [_edited(chunks[3], dtype=tensor_pb2.DTYPE_UINT64)], "tensor 1: dtype 4, expected int64")
    _reject(chunks[:3] + [_edited(chunks[3], dtype=tensor_pb2.DTYPE_FLOAT64)], "tensor 1: dtype 2, expected int64")
    _reject([_edited(chunks[0], dtype=tensor_pb2.DTYPE_UNSPECIFIED)], "tensor 0: dtype 0, expected float32")


def test_rejects_wrong_total_bytes() -> None:
    chunks = _stream()
    _reject([_edited(chunks[0], total_bytes=44)], "tensor 0: 44 bytes announced, expected 40")
    _reject(chunks[:4] + [_edited(chunks[4], total_bytes=40)], "tensor 1: 40 bytes announced, expected 48")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rejects_nan_and_inf(bad: float, dtype: type) -> None:
    array = np.arange(8, dtype=dtype)
    array[5] = bad
    chunks = _chunks([array], 4 * array.itemsize)
    reader = TensorStreamReader(specs_of([array]))
    reader.accept(chunks[0])  # the first half is finite
    with pytest.raises(TensorStreamError, match="tensor 0: NaN or Inf values"):
        reader.accept(chunks[1])
    with pytest.raises(TensorStreamError, match="NaN or Inf"):
        assemble(chunks, specs_of([array]))


def test_non_finite_values_pass_when_not_required() -> None:
    array = np.array([np.nan, np.inf, 1.0])
    reader = TensorStreamReader(specs_of([array]), require_finite=False)
    part = reader.accept(next(iter_chunks([array])))
    np.testing.assert_array_equal(part.values, array)
    reader.finish()


def test_finish_refuses_a_stream_that_ended_early() -> None:
    chunks = _stream()
    with pytest.raises(TensorStreamError, match="stream ended early: tensor 1 of 2 at byte 32"):
        assemble(chunks[:5], specs_of([F32, I64]))
    with pytest.raises(TensorStreamError, match="stream ended early: tensor 0 of 2 at byte 16"):
        assemble(chunks[:1], specs_of([F32, I64]))
    with pytest.raises(TensorStreamError, match="stream ended early: tensor 0 of 2 at byte 0"):
        assemble([], specs_of([F32, I64]))


def test_rejects_extra_chunk_after_completion() -> None:
    chunks = _stream()
    _reject(chunks + [chunks[-1]], "chunk of tensor 1 after the stream.s last tensor")
    with pytest.raises(TensorStreamError, match="chunk of tensor 0 after the stream.s last tensor"):
        assemble(chunks + [chunks[0]], specs_of([F32, I64]))


def test_scalar_and_multidimensional_empty_tensors_round_trip() -> None:
    arrays = [np.array(2.5, dtype=np.float32), np.zeros((0, 3)), np.zeros((3, 0)), np.zeros((2, 0, 4), np.int64)]
    out = assemble(iter_chunks(arrays, 100), specs_of(arrays))
    assert [a.shape for a in out] == [(), (0, 3), (3, 0), (2, 0, 4)] and out[0] == 2.5


def test_chunk_size_below_one_element_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller than one"):
        list(iter_chunks([np.zeros(3, np.float64)], 4))
