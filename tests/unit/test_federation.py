"""fedcore.federation: the codec (round trips, every malformed payload refused), the Mailbox, the context."""

from __future__ import annotations

import json
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcore.crypto.paillier import EncryptedArray, PackedArray, Packing, PrivateKey, PublicKey, generate_keypair
from fedcore.federation import (
    Cancelled,
    CodecError,
    FederationContext,
    Mailbox,
    MemoryFederation,
    PeerTimeout,
    PeerUnavailable,
    ProtocolError,
    decode,
    encode,
)
from fedcore.federation.codec import ARRAY_DTYPES, MAGIC, VERSION, Kind, key_fingerprint

BITS = 512
Keys = tuple[PublicKey, PrivateKey]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return generate_keypair(BITS, allow_insecure=True)


def frame(kind: int, header: object, body: bytes = b"", *, version: int = VERSION, magic: bytes = MAGIC) -> bytes:
    """A frame written by hand, so malformed ones can be built field by field."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<3sBBIQ", magic, version, kind, len(text), len(body)) + text + body


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**200, 1.5, -0.0, 1e-300, "", "ünïcode ✓",
    [], [1, "a", None, [2.5, {"k": False}]], {"rows": 569, "nested": {"x": [1, 2]}},
])
def test_json_values_round_trip_exactly(value: object) -> None:
    decoded = decode(encode(value), None)
    assert decoded == value and type(decoded) is type(value)


def test_numpy_scalars_travel_as_python_scalars() -> None:
    assert decode(encode({"a": np.float64(0.25), "b": np.int32(3), "c": np.bool_(True)}), None) == {
        "a": 0.25, "b": 3, "c": True}


def test_bytes_round_trip() -> None:
    blob = bytes(range(256)) * 3
    assert decode(encode(blob), None) == blob
    assert decode(encode(bytearray(b"xy")), None) == b"xy"


array_dtypes = st.sampled_from(sorted(ARRAY_DTYPES)).flatmap(
    lambda dtype: st.sampled_from([np.dtype(dtype), np.dtype(dtype).newbyteorder(">")]))


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
                  elements={"allow_nan": False, "allow_infinity": False}))
def test_arrays_round_trip_in_value_shape_and_kind(array: np.ndarray) -> None:
    decoded = decode(encode(array), None)
    assert isinstance(decoded, np.ndarray)
    assert decoded.shape == array.shape and decoded.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable and decoded.dtype.isnative


def test_encrypted_array_round_trips_with_exponent_and_bound(keys: Keys) -> None:
    public, private = keys
    encrypted = public.encrypt([1.5, -2.25, 0.0, 1e6])
    decoded = decode(encode(encrypted), public)
    assert isinstance(decoded, EncryptedArray)
    assert decoded.ciphertexts == encrypted.ciphertexts
    assert (decoded.exponent, decoded.bound) == (encrypted.exponent, encrypted.bound)
    assert private.decrypt(decoded).tolist() == [1.5, -2.25, 0.0, 1e6]


def test_packed_array_round_trips_with_its_packing(keys: Keys) -> None:
    public, private = keys
    encrypted = public.encrypt([3.0, -4.0, 5.0, 6.5, -7.0], precision=20)
    packed = Packing.for_array(encrypted).pack(encrypted)
    decoded = decode(encode(packed), public)
    assert isinstance(decoded, PackedArray) and decoded.packing == packed.packing
    assert private.decrypt_packed(decoded).tolist() == [3.0, -4.0, 5.0, 6.5, -7.0]


def test_public_key_round_trips_only_when_short_keys_are_allowed(keys: Keys) -> None:
    public, _ = keys
    assert decode(encode(public), None, allow_insecure_keys=True) == public
    with pytest.raises(CodecError, match="512 bits not allowed"):
        decode(encode(public), None)


# -- what encode refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "error"), [
    ((1, 2), TypeError),
    ({1: "a"}, TypeError),
    ({"x": {1, 2}}, TypeError),
    (np.array(["a", "b"]), TypeError),
    (np.array([1, None], dtype=object), TypeError),
    (np.array([1.0, np.nan]), CodecError),
    ({"loss": float("inf")}, CodecError),
])
def test_encode_refuses_what_the_format_does_not_carry(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode(value)


# -- malformed payloads --------------------------------------------------------------------------


def test_every_truncation_or_padding_of_a_frame_is_refused(keys: Keys) -> None:
    public, _ = keys
    for payload in (encode({"rows": 5}), encode(b"blob"), encode(np.arange(4.0)), encode(public.encrypt([1.0, 2.0]))):
        for cut in range(len(payload)):
            with pytest.raises(CodecError, match="truncated"):
                decode(payload[:cut], public)
        with pytest.raises(CodecError, match="padded"):
            decode(payload + b"\0", public)


def _malformed(keys: Keys) -> dict[str, tuple[bytes, str]]:
    """Payloads that must be refused, with the words the error must contain."""
    public, _ = keys
    good = public.encrypt([1.0, 2.0])
    key = key_fingerprint(public)
    width = public.ciphertext_width
    too_large = int(public.nsquare).to_bytes(width, "big")
    enc_header = {"exponent": good.exponent, "bound": good.bound, "key": key}
    other_public, _ = generate_keypair(BITS, allow_insecure=True)
    return {
        "bad magic": (frame(Kind.JSON, 1, magic=b"PKL"), "magic"),
        "future version": (frame(Kind.JSON, 1, version=VERSION + 1), "version"),
        "unknown kind": (frame(99, {}), "unknown payload kind"),
        "header not json": (frame(Kind.JSON, b"{not json"), "malformed header"),
        "header not utf-8": (frame(Kind.JSON, b'"\xff"'), "malformed header"),
        "json with a body": (frame(Kind.JSON, 1, b"x"), "no body"),
        "NaN constant": (frame(Kind.JSON, b"[NaN]"), "non-finite"),
        "overflowing float": (frame(Kind.JSON, b"1e400"), "non-finite"),
        "repeated key": (frame(Kind.JSON, b'{"a":1,"a":2}'), "repeats a key"),
        "bytes header with fields": (frame(Kind.BYTES, {"x": 1}, b"ab"), "header fields"),
        "object dtype": (frame(Kind.NDARRAY, {"dtype": "|O", "shape": [1]}, b"\0" * 8), "not allowed"),
        "big-endian dtype": (frame(Kind.NDARRAY, {"dtype": ">f8", "shape": [1]}, b"\0" * 8), "not allowed"),
        "short array body": (frame(Kind.NDARRAY, {"dtype": "<f8", "shape": [2]}, b"\0" * 15), "need 16"),
        "long array body": (frame(Kind.NDARRAY, {"dtype": "<f8", "shape": [2]}, b"\0" * 17), "need 16"),
        "negative dimension": (frame(Kind.NDARRAY, {"dtype": "<f8", "shape": [-1]}), "non-negative"),
        "bool dimension": (frame(Kind.NDARRAY, {"dtype": "<f8", "shape": [True]}, b"\0" * 8), "non-negative"),
        "array field missing": (frame(Kind.NDARRAY, {"dtype": "<f8"}), "header fields"),
        "NaN in an array": (frame(Kind.NDARRAY, {"dtype": "<f8", "shape": [1]}, struct.pack("<d", float("nan"))),
                            "NaN"),
        "ciphertext >= n^2": (frame(Kind.ENCRYPTED, enc_header, too_large), "not below n^2"),
        "ciphertext 0": (frame(Kind.ENCRYPTED, enc_header, bytes(width)), "coprime"),
        "ciphertexts cut short": (frame(Kind.ENCRYPTED, enc_header, good.to_bytes()[:-1]), "whole number"),
        "another key's ciphertexts": (encode(other_public.encrypt([1.0])), "another public key"),
        "bound beyond max_int": (frame(Kind.ENCRYPTED, {**enc_header, "bound": int(public.nsquare)}, good.to_bytes()),
                                 "outside [0, max_int]"),
        "negative bound": (frame(Kind.ENCRYPTED, {**enc_header, "bound": -1}, good.to_bytes()), "outside"),
        "absurd exponent": (frame(Kind.ENCRYPTED, {**enc_header, "exponent": -10**9}, good.to_bytes()), "exponent"),
        "exponent as bool": (frame(Kind.ENCRYPTED, {**enc_header, "exponent": True}, good.to_bytes()), "wrong type"),
        "slots beyond the key": (frame(Kind.PACKED, {"exponent": 0, "count": 2, "slot_bits": 300, "slots": 2,
                                                     "key": key}, good.to_bytes()[:width]), "does not fit"),
        "packed count mismatch": (frame(Kind.PACKED, {"exponent": 0, "count": 9, "slot_bits": 100, "slots": 2,
                                                      "key": key}, good.to_bytes()), "cannot hold"),
        "even modulus": (frame(Kind.PUBLIC_KEY, {}, (int(public.n) + 1).to_bytes(BITS // 8, "big")), "refused"),
    }


def test_each_malformed_payload_is_refused_with_a_clear_codec_error(keys: Keys) -> None:
    public, _ = keys
    for name, (payload, words) in _malformed(keys).items():
        try:
            decode(payload, public, allow_insecure_keys=True)
        except CodecError as err:
            assert words in str(err), f"{name}: {err}"
        else:
            pytest.fail(f"{name}: accepted")
    assert issubclass(CodecError, ValueError)


def test_ciphertexts_need_the_jobs_public_key(keys: Keys) -> None:
    public, _ = keys
    with pytest.raises(CodecError, match="no public key"):
        decode(encode(public.encrypt([1.0])), None)


# -- Mailbox -----------------------------------------------------------------------------------------


def test_take_returns_what_was_delivered_and_keeps_nothing() -> None:
    mailbox = Mailbox("guest")
    for i in range(100):
        mailbox.deliver("job", f"t{i}", "host", b"x" * 1000)
    assert mailbox.pending() == 100
    for i in range(100):
        assert mailbox.take("job", f"t{i}", "host", timeout_s=1.0) == b"x" * 1000
    assert mailbox.pending() == 0


def test_take_waits_for_a_late_delivery() -> None:
    mailbox = Mailbox("guest")
    threading.Timer(0.2, mailbox.deliver, ("job", "late", "host", b"here")).start()
    assert mailbox.take("job", "late", "host", timeout_s=5.0) == b"here"


def test_timeout_names_the_peer_the_tag_and_the_seconds() -> None:
    mailbox = Mailbox("guest")
    mailbox.deliver("job", "forward", "someone-else", b"")
    started = time.monotonic()
    with pytest.raises(PeerTimeout, match=r"'forward' from host-7 after waiting 0\.3 s") as caught:
        mailbox.take("job", "forward", "host-7", timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert (caught.value.peer, caught.value.tag, caught.value.job_id) == ("host-7", "forward", "job")


def test_a_message_is_accepted_once_even_after_it_was_taken() -> None:
    mailbox = Mailbox("guest")
    mailbox.deliver("job", "t", "host", b"1")
    with pytest.raises(ValueError, match="duplicate message 't' from host"):
        mailbox.deliver("job", "t", "host", b"2")
    assert mailbox.take("job", "t", "host", 1.0) == b"1"
    with pytest.raises(ValueError, match="duplicate"):
        mailbox.deliver("job", "t", "host", b"3")
    mailbox.deliver("job", "t", "other-host", b"4")
    mailbox.deliver("other-job", "t", "host", b"5")


def test_cancel_wakes_a_waiting_take_promptly() -> None:
    mailbox = Mailbox("guest")
    cancelled = threading.Event()
    threading.Timer(0.2, cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled, match="waited for 'residual' from host"):
        mailbox.take("job", "residual", "host", timeout_s=30.0, cancelled=cancelled)
    assert time.monotonic() - started < 1.0


def test_received_logs_every_delivery_of_the_job_in_order() -> None:
    mailbox = Mailbox("arbiter")
    mailbox.deliver("job", "a", "guest", b"123")
    mailbox.deliver("other", "a", "guest", b"")
    mailbox.deliver("job", "b", "host", b"")
    mailbox.take("job", "a", "guest", 1.0)
    assert mailbox.received("job") == [("a", "guest", 3), ("b", "host", 0)]
    assert mailbox.received("unknown") == []


def test_drop_job_forgets_it_and_refuses_late_messages() -> None:
    mailbox = Mailbox("host")
    mailbox.deliver("job", "a", "guest", b"x" * 10)
    mailbox.deliver("keep", "a", "guest", b"y")
    mailbox.drop_job("job")
    assert mailbox.pending() == 1 and mailbox.received("job") == []
    with pytest.raises(ValueError, match="finished"):
        mailbox.deliver("job", "b", "guest", b"")


# -- FederationContext over the in-memory transport ----------------------------------------------


def test_values_travel_between_contexts_through_the_codec(keys: Keys) -> None:
    public, private = keys
    federation = MemoryFederation(["guest", "host", "arbiter"], allow_insecure_keys=True)
    guest, host, arbiter = (federation.context("job", party) for party in ("guest", "host", "arbiter"))
    arbiter.put_all("key", ["guest", "host"], public)
    guest.public_key = guest.get("key", "arbiter", PublicKey)
    host.public_key = host.get("key", "arbiter", PublicKey)
    guest.put("d", "host", guest.public_key.encrypt([0.5, -1.0]))
    received = host.get("d", "guest", EncryptedArray)
    assert received.public_key is host.public_key and private.decrypt(received).tolist() == [0.5, -1.0]
    assert federation.mailbox("host").received("job")[1][:2] == ("d", "guest")


def test_a_value_of_the_wrong_kind_is_a_protocol_error_naming_peer_and_tag() -> None:
    federation = MemoryFederation(["guest", "host"])
    federation.context("job", "host").put("forward", "guest", np.zeros(3))
    with pytest.raises(ProtocolError, match="host sent a ndarray as 'forward', expected EncryptedArray"):
        federation.context("job", "guest").get("forward", "host", EncryptedArray)


def test_a_malformed_payload_names_its_sender_and_tag() -> None:
    federation = MemoryFederation(["guest", "host"])
    federation.transport.send("job", "rows", "host", "guest", b"garbage")
    with pytest.raises(CodecError, match="host sent a malformed 'rows'"):
        federation.context("job", "guest").get("rows", "host")


def test_get_all_shares_one_deadline_and_names_the_silent_peer() -> None:
    federation = MemoryFederation(["guest", "h1", "h2"])
    federation.context("job", "h1").put("u", "guest", 1)
    started = time.monotonic()
    with pytest.raises(PeerTimeout, match="from h2"):
        federation.context("job", "guest", timeout_s=0.3).get_all("u", ["h1", "h2"])
    assert time.monotonic() - started < 1.0


def test_sending_to_a_stranger_is_peer_unavailable() -> None:
    federation = MemoryFederation(["guest"])
    with pytest.raises(PeerUnavailable, match="nobody"):
        federation.context("job", "guest").put("t", "nobody", 1)


def test_context_refuses_a_non_positive_timeout() -> None:
    federation = MemoryFederation(["guest"])
    with pytest.raises(ValueError, match="timeout_s"):
        FederationContext("job", "guest", federation.transport, federation.mailbox("guest"), timeout_s=0)
