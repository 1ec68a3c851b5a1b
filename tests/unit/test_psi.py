"""RSA blind-signature PSI (fedcore.crypto.psi): correctness, ordering, privacy of the messages, wire validation."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.crypto.psi import (
    TAG_BYTES,
    InvalidSignatureError,
    PsiError,
    PsiStateError,
    RsaPrivateKey,
    RsaPsiRequester,
    RsaPsiSigner,
    WireFormatError,
    hash_ids,
    int_width,
    pack_ints,
    pack_tags,
    run_psi,
    unpack_ints,
    unpack_tags,
)


@pytest.fixture(scope="module")
def key() -> RsaPrivateKey:
    """One real 1024-bit key for the module; keygen per test would dominate the run time."""
    return RsaPrivateKey.generate(1024)


@pytest.fixture
def signer(key: RsaPrivateKey) -> RsaPsiSigner:
    return RsaPsiSigner(private_key=key)


def requester_for(signer: RsaPsiSigner) -> RsaPsiRequester:
    return RsaPsiRequester(*signer.public_key())


def customer_ids(start: int, stop: int) -> list[str]:
    """Ids long enough that finding one by chance inside a random blob is impossible."""
    return [f"customer-{i:06d}@example.org" for i in range(start, stop)]


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize(
    ("requester_ids", "signer_ids", "expected"),
    [
        (["a", "b", "c", "d"], ["c", "d", "e"], {"c", "d"}),
        (["a", "b"], ["c", "d"], set()),
        (["a", "b", "c"], ["c", "b", "a"], {"a", "b", "c"}),
        ([], ["a"], set()),
        (["a"], [], set()),
        ([], [], set()),
    ],
    ids=["overlapping", "disjoint", "identical", "empty-requester", "empty-signer", "both-empty"],
)
def test_intersection(signer, requester_ids, signer_ids, expected):
    result = run_psi(requester_ids, signer_ids, signer=signer)
    assert set(result.requester_ids) == expected
    assert result.requester_ids == result.signer_ids
    assert result.size == len(expected)


def test_both_sides_same_order_independent_of_row_order(signer):
    requester_ids, signer_ids = customer_ids(0, 2_000), customer_ids(1_000, 3_000)
    result = run_psi(requester_ids, signer_ids, signer=signer)
    assert result.size == 1_000
    assert result.requester_ids == result.signer_ids
    assert set(result.requester_ids) == set(customer_ids(1_000, 2_000))

    shuffler = random.Random(7)
    shuffled_requester, shuffled_signer = requester_ids[:], signer_ids[:]
    shuffler.shuffle(shuffled_requester)
    shuffler.shuffle(shuffled_signer)
    reshuffled = run_psi(shuffled_requester[:1_500], shuffled_signer, signer=signer)
    in_both = [i for i in result.requester_ids if i in set(shuffled_requester[:1_500])]
    assert reshuffled.requester_ids == reshuffled.signer_ids == in_both


def test_order_is_canonical_by_tag(signer):
    requester = requester_for(signer)
    ids = customer_ids(0, 50)
    own_tags = requester.unblind_and_hash(signer.sign_blinded(requester.blind(ids)))
    shared_ids, shared_tags = requester.intersect(signer.hashed_own_signatures(ids))
    assert shared_tags == sorted(own_tags)
    assert shared_ids == [ids[own_tags.index(tag)] for tag in shared_tags]


def test_arbitrary_string_ids(signer):
    requester_ids = ["007", "", " ", "é", "日本語", "🙂", "a\x00b", "\ud800", "x" * 10_000, "tab\t"]
    signer_ids = ["7", "", "é", "e\u0301", "日本語", "🙂", "a\x00b", "\ud800", "x" * 10_000, "tab"]
    result = run_psi(requester_ids, signer_ids, signer=signer)
    assert set(result.requester_ids) == {"", "é", "日本語", "🙂", "a\x00b", "\ud800", "x" * 10_000}
    assert result.requester_ids == result.signer_ids


@settings(max_examples=40, deadline=None)
@given(
    requester_ids=st.sets(st.text(max_size=6), max_size=12),
    signer_ids=st.sets(st.text(max_size=6), max_size=12),
)
def test_matches_plain_set_intersection(key, requester_ids, signer_ids):
    result = run_psi(sorted(requester_ids), sorted(signer_ids), signer=RsaPsiSigner(private_key=key))
    assert set(result.requester_ids) == requester_ids & signer_ids
    assert len(result.requester_ids) == len(requester_ids & signer_ids)
    assert result.requester_ids == result.signer_ids


def test_2048_bit_key():
    signer = RsaPsiSigner(2048)
    n, e = signer.public_key()
    assert n.bit_length() == 2048 and e == 65537
    result = run_psi(customer_ids(0, 60), customer_ids(40, 100), signer=signer)
    assert result.requester_ids == result.signer_ids
    assert set(result.signer_ids) == set(customer_ids(40, 60))


def test_crt_signature_is_textbook_rsa():
    from cryptography.hazmat.primitives.asymmetric import rsa

    raw = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    numbers = raw.private_numbers()
    n = numbers.public_numbers.n
    values = [2, 3, n - 1, 123456789 ** 7 % n]
    assert RsaPrivateKey(raw).sign(values) == [pow(v, numbers.d, n) for v in values]


def test_hash_is_in_range_deterministic_and_exact(key):
    n = key.public_key.n
    hashes = hash_ids(["007", "7", "007"], n)
    assert all(0 <= h < n for h in hashes)
    assert hashes[0] == hashes[2] != hashes[1]
    assert max(hashes).bit_length() > n.bit_length() - 16  # spread over Z_n, not just 256 bits


# --------------------------------------------------------------------------- what each side sees


def test_signer_receives_blinded_values_not_hashes(signer):
    n, e = signer.public_key()
    ids = customer_ids(0, 200)
    first, second = RsaPsiRequester(n, e).blind(ids), RsaPsiRequester(n, e).blind(ids)
    hashes = [int(h) for h in hash_ids(ids, n)]
    assert not set(first) & set(hashes)
    assert all(a != b for a, b in zip(first, second))
    assert len(set(first) | set(second)) == 2 * len(ids)
    assert all(a != pow(h, e, n) for a, h in zip(first, hashes))


def test_signer_messages_carry_no_raw_ids(signer):
    requester_ids, signer_ids = customer_ids(0, 100), customer_ids(50, 150)
    requester = requester_for(signer)
    n = signer.public_key()[0]
    signed = signer.sign_blinded(requester.blind(requester_ids))
    tags = signer.hashed_own_signatures(signer_ids)
    messages = pack_ints(signed, int_width(n)) + pack_tags(tags)
    assert len(messages) == len(signed) * int_width(n) + len(signer_ids) * TAG_BYTES
    for identifier in requester_ids + signer_ids:
        assert identifier.encode() not in messages
    assert tags == sorted(tags)


def test_signer_tags_need_the_signers_key(signer):
    ids = customer_ids(0, 100)
    tags = set(signer.hashed_own_signatures(ids))
    other_key_tags = set(RsaPsiSigner(1024).hashed_own_signatures(ids))
    assert not tags & other_key_tags
    plain_hashes = {hashlib.sha256(i.encode()).digest() for i in ids}
    assert not tags & plain_hashes


def test_requester_tells_signer_only_shared_tags(signer):
    requester = requester_for(signer)
    signed = signer.sign_blinded(requester.blind(customer_ids(0, 30)))
    own_tags = requester.unblind_and_hash(signed)
    _, shared_tags = requester.intersect(signer.hashed_own_signatures(customer_ids(20, 40)))
    assert set(shared_tags) == set(own_tags[20:30])


# --------------------------------------------------------------------------- rejected inputs and messages


def test_wire_round_trip(key):
    n = key.public_key.n
    width = int_width(n)
    values = [1, 2, n - 1]
    assert unpack_ints(pack_ints(values, width), width, n) == values
    tags = [bytes([i]) * TAG_BYTES for i in range(3)]
    assert unpack_tags(pack_tags(tags)) == tags
    assert unpack_ints(b"", width, n) == [] and unpack_tags(b"") == []


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda blob, n, w: blob[:-1],  # truncated
        lambda blob, n, w: blob + b"\x00",  # padded
        lambda blob, n, w: blob + n.to_bytes(w, "big"),  # value == n
        lambda blob, n, w: blob + b"\xff" * w,  # value > n
        lambda blob, n, w: blob + bytes(w),  # value == 0
    ],
    ids=["truncated", "padded", "equal-n", "over-n", "zero"],
)
def test_malformed_int_blob_rejected(key, corrupt):
    n = key.public_key.n
    width = int_width(n)
    blob = corrupt(pack_ints([5, 6], width), n, width)
    with pytest.raises(WireFormatError):
        unpack_ints(blob, width, n)


def test_wire_errors_are_value_errors(key):
    n = key.public_key.n
    with pytest.raises(ValueError, match="width"):
        unpack_ints(pack_ints([5], 200), 200, n)
    with pytest.raises(WireFormatError):
        pack_ints([n ** 2], int_width(n))
    with pytest.raises(WireFormatError):
        pack_ints([-1], int_width(n))
    with pytest.raises(WireFormatError):
        unpack_tags(bytes(TAG_BYTES + 1))
    with pytest.raises(WireFormatError):
        pack_tags([bytes(TAG_BYTES - 1)])


def test_signer_refuses_out_of_range_values(signer):
    n = signer.public_key()[0]
    for bad in (0, n, n + 1, -3):
        with pytest.raises(WireFormatError):
            signer.sign_blinded([5, bad])


def test_tampered_or_reordered_signatures_rejected(signer):
    requester = requester_for(signer)
    n = signer.public_key()[0]
    blinded = requester.blind(customer_ids(0, 10))
    signed = signer.sign_blinded(blinded)
    tampered = signed[:]
    tampered[3] ^= 1 << 10
    with pytest.raises(InvalidSignatureError, match="position 3"):
        requester.unblind_and_hash(tampered)
    with pytest.raises(InvalidSignatureError):
        requester.unblind_and_hash([signed[1], signed[0], *signed[2:]])
    other_signer = RsaPsiSigner(1024)
    other_n = other_signer.public_key()[0]
    other_reply = [z % n for z in other_signer.sign_blinded([y % other_n for y in blinded])]
    with pytest.raises(InvalidSignatureError):
        requester.unblind_and_hash(other_reply)
    with pytest.raises(PsiError, match="expected 10"):
        requester.unblind_and_hash(signed[:-1])
    assert len(requester.unblind_and_hash(signed)) == 10  # the genuine reply still works


def test_signer_rejects_unknown_or_repeated_tags(signer):
    tags = signer.hashed_own_signatures(["a", "b"])
    with pytest.raises(PsiError, match="not this signer's"):
        signer.intersection_from([tags[0], bytes(TAG_BYTES)])
    with pytest.raises(PsiError, match="repeats"):
        signer.intersection_from([tags[0], tags[0]])
    assert sorted(signer.intersection_from(tags)) == ["a", "b"]


def test_steps_out_of_order(signer):
    requester = requester_for(signer)
    with pytest.raises(PsiStateError):
        requester.unblind_and_hash([])
    requester.blind(["a"])
    with pytest.raises(PsiStateError):
        requester.intersect([])
    with pytest.raises(PsiStateError):
        signer.intersection_from([])


def test_bad_ids_rejected(signer):
    requester = requester_for(signer)
    with pytest.raises(PsiError, match="1 ids repeat"):
        requester.blind(["a", "b", "a"])
    with pytest.raises(PsiError, match="repeat"):
        signer.hashed_own_signatures(["x", "x"])
    with pytest.raises(TypeError, match="str"):
        requester.blind(["7", 7])


def test_implausible_keys_rejected(key):
    n, e = key.public_key.n, key.public_key.e
    for bad_n, bad_e in [(n + 1, e), (n >> 200, e), (n, 2), (n, 1), (n, n + 2)]:
        with pytest.raises(PsiError, match="public key rejected"):
            RsaPsiRequester(bad_n, bad_e)
    with pytest.raises(ValueError, match="at least 1024"):
        RsaPsiSigner(512)
