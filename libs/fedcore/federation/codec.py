"""The binary format of every value parties send each other: explicit, versioned, never pickle.

Parties are different organisations, so a payload is data to validate, not code to run.
Each payload is one frame:

    b"FSC" | version (u8) | kind (u8) | header length (u32) | body length (u64) | header | body

with integers little-endian, so a payload cut anywhere, or with bytes appended, is refused.
The header is a UTF-8 JSON object (for kind JSON, the value itself) and the body is raw
bytes. Kinds and what they carry:

    JSON        None, bool, int, float (finite), str, lists and str-keyed dicts of those; empty body
    BYTES       {}; the bytes
    NDARRAY     {"dtype": "<f8", "shape": [...]}; the elements, C order, little-endian
    ENCRYPTED   {"exponent", "bound", "key"}; ciphertexts, each ciphertext_width bytes big-endian
    PACKED      {"exponent", "count", "slot_bits", "slots", "key"}; packed ciphertexts, same width
    PUBLIC_KEY  {}; n big-endian (the whole public key, g = n + 1)

``key`` is a fingerprint of the Paillier modulus, so a ciphertext read under the wrong
key fails with a clear message instead of decrypting to garbage. Decoding checks every
field; anything malformed raises CodecError. Non-finite floats are refused both ways, so
a NaN never reaches a model.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from enum import IntEnum
from typing import Any

import numpy as np

from fedcore.crypto.paillier import EncryptedArray, PackedArray, Packing, PublicKey

MAGIC = b"FSC"
VERSION = 1
FRAME_PREFIX = struct.Struct("<3sBBIQ")
#: Little-endian dtypes an ndarray may have on the wire (no objects, strings or records).
ARRAY_DTYPES = frozenset({"|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8"})
_MAX_NDIM = 32
#: Largest |exponent| accepted for ciphertexts: aligning exponents costs a 2^|e| power.
_MAX_EXPONENT = 1 << 14


class Kind(IntEnum):
    """What a frame holds."""

    JSON = 1
    BYTES = 2
    NDARRAY = 3
    ENCRYPTED = 4
    PACKED = 5
    PUBLIC_KEY = 6


class CodecError(ValueError):
    """A payload that is not a valid frame: truncated, of an unknown kind, or with a bad field."""


def key_fingerprint(public_key: PublicKey) -> str:
    """The first 8 bytes of SHA-256(n) in hex: which key a ciphertext belongs to."""
    return hashlib.sha256(public_key.n_bytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def encode(value: object) -> bytes:
    """One frame for ``value``; TypeError for a type the format does not carry."""
    if isinstance(value, EncryptedArray):
        header = {"exponent": value.exponent, "bound": value.bound, "key": key_fingerprint(value.public_key)}
        return _frame(Kind.ENCRYPTED, header, value.to_bytes())
    if isinstance(value, PackedArray):
        header = {"exponent": value.exponent, "count": value.count, "slot_bits": value.packing.slot_bits,
                  "slots": value.packing.slots, "key": key_fingerprint(value.public_key)}
        return _frame(Kind.PACKED, header, value.to_bytes())
    if isinstance(value, PublicKey):
        return _frame(Kind.PUBLIC_KEY, {}, value.n_bytes())
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _frame(Kind.BYTES, {}, bytes(value))
    return _frame(Kind.JSON, _plain(value, "value"), b"")


def _frame(kind: Kind, header: object, body: bytes) -> bytes:
    text = json.dumps(header, allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode()
    return FRAME_PREFIX.pack(MAGIC, VERSION, kind, len(text), len(body)) + text + body


def _encode_array(array: np.ndarray) -> bytes:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder != "|" else array.dtype
    if dtype.str not in ARRAY_DTYPES:
        raise TypeError(f"arrays of dtype {array.dtype} cannot be sent; use bool, (u)int8-64 or float16-64")
    if dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise CodecError("cannot send an array holding NaN or infinity")
    body = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return _frame(Kind.NDARRAY, {"dtype": dtype.str, "shape": list(array.shape)}, body)


def _plain(value: object, path: str) -> Any:
    """``value`` as plain JSON types (numpy scalars become Python scalars), checked all the way down."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise CodecError(f"{path}: cannot send a non-finite float ({value})")
        return float(value)
    if isinstance(value, list):
        return [_plain(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"{path}: dict keys must be str")
        return {key: _plain(item, f"{path}[{key!r}]") for key, item in value.items()}
    raise TypeError(f"{path}: values of type {type(value).__name__} cannot be sent")


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def decode(payload: bytes, public_key: PublicKey | None, *, allow_insecure_keys: bool = False) -> object:
    """The value in one frame. Ciphertexts need the job's ``public_key``; keys below 1024 bits
    are refused unless ``allow_insecure_keys`` (unit tests)."""
    data = bytes(payload)
    if len(data) < FRAME_PREFIX.size:
        raise CodecError(f"truncated payload: {len(data)} bytes, a frame has at least {FRAME_PREFIX.size}")
    magic, version, kind, header_length, body_length = FRAME_PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise CodecError("not a fedsuite payload (bad magic)")
    if version != VERSION:
        raise CodecError(f"codec version {version} is not supported (this party speaks version {VERSION})")
    end = FRAME_PREFIX.size + header_length
    if end + body_length != len(data):
        raise CodecError(f"truncated or padded payload: header and body need {header_length + body_length} bytes, "
                         f"{len(data) - FRAME_PREFIX.size} follow")
    header = _parse_json(data[FRAME_PREFIX.size : end])
    body = data[end:]
    if kind == Kind.JSON:
        if body:
            raise CodecError(f"a JSON frame has no body, got {len(body)} extra bytes")
        return header
    if kind == Kind.BYTES:
        _fields(header, {})
        return body
    if kind == Kind.NDARRAY:
        return _decode_array(header, body)
    if kind == Kind.PUBLIC_KEY:
        _fields(header, {})
        try:
            return PublicKey.from_n(body, allow_insecure=allow_insecure_keys)
        except ValueError as err:
            raise CodecError(f"public key refused: {err}") from None
    if kind == Kind.ENCRYPTED:
        return _decode_encrypted(header, body, public_key)
    if kind == Kind.PACKED:
        return _decode_packed(header, body, public_key)
    raise CodecError(f"unknown payload kind {kind}")


def _parse_json(text: bytes) -> Any:
    try:
        return json.loads(text.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as err:  # also bad UTF-8, and ints beyond Python's digit limit
        raise CodecError(f"malformed header: {err}") from None


def _refuse_constant(name: str) -> float:
    raise CodecError(f"non-finite number {name} in a payload")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CodecError(f"non-finite number {text} in a payload")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise CodecError("a JSON object repeats a key")
    return result


def _fields(header: object, expected: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """``header`` if it is an object with exactly the ``expected`` keys of the expected types."""
    if not isinstance(header, dict):
        raise CodecError(f"the header must be a JSON object, got {type(header).__name__}")
    if set(header) != set(expected):
        raise CodecError(f"header fields {sorted(header)} differ from {sorted(expected)}")
    for name, kind in expected.items():
        value = header[name]
        if isinstance(value, bool) or not isinstance(value, kind):  # no header field is a bool
            raise CodecError(f"header field {name!r} has the wrong type ({type(value).__name__})")
    return header


def _decode_array(header: object, body: bytes) -> np.ndarray:
    fields = _fields(header, {"dtype": str, "shape": list})
    if fields["dtype"] not in ARRAY_DTYPES:
        raise CodecError(f"array dtype {fields['dtype']!r} is not allowed")
    shape = fields["shape"]
    if len(shape) > _MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise CodecError(f"array shape {shape} is not a list of at most {_MAX_NDIM} non-negative ints")
    dtype = np.dtype(fields["dtype"])
    expected = math.prod(shape) * dtype.itemsize
    if len(body) != expected:
        raise CodecError(f"array body is {len(body)} bytes; dtype {dtype.str} and shape {shape} need {expected}")
    array = np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise CodecError("array holds NaN or infinity")
    return array


def _checked_key(header: dict[str, Any], public_key: PublicKey | None) -> PublicKey:
    if public_key is None:
        raise CodecError("ciphertexts arrived but this party has no public key for the job yet")
    if header["key"] != key_fingerprint(public_key):
        raise CodecError("ciphertexts were made under another public key than this job's")
    if abs(header["exponent"]) > _MAX_EXPONENT:
        raise CodecError(f"exponent {header['exponent']} is outside +-{_MAX_EXPONENT}")
    return public_key


def _decode_encrypted(header: object, body: bytes, public_key: PublicKey | None) -> EncryptedArray:
    fields = _fields(header, {"exponent": int, "bound": (int, type(None)), "key": str})
    key = _checked_key(fields, public_key)
    bound = fields["bound"]
    if bound is not None and not 0 <= bound <= key.max_int:
        raise CodecError(f"bound of {int(bound).bit_length()} bits is outside [0, max_int] of the key")
    try:
        return EncryptedArray.from_bytes(key, body, fields["exponent"], bound)
    except ValueError as err:
        raise CodecError(f"bad ciphertexts: {err}") from None


def _decode_packed(header: object, body: bytes, public_key: PublicKey | None) -> PackedArray:
    fields = _fields(header, {"exponent": int, "count": int, "slot_bits": int, "slots": int, "key": str})
    key = _checked_key(fields, public_key)
    count, slot_bits, slots = fields["count"], fields["slot_bits"], fields["slots"]
    if count < 0 or slot_bits < 2 or slots < 1 or slots * slot_bits > key.key_bits - 2:
        raise CodecError(f"packing of {slots} x {slot_bits}-bit slots for {count} values does not fit the key")
    try:
        return PackedArray.from_bytes(key, body, fields["exponent"], count, Packing(slot_bits, slots))
    except ValueError as err:
        raise CodecError(f"bad packed ciphertexts: {err}") from None
