"""fedcore.crypto.paillier against python-paillier (phe) and against its own algebra.

Keys are 512 bits (allow_insecure) for speed, except one 2048-bit round trip.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable

import gmpy2
import numpy as np
import phe
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcore.crypto.fixedpoint import FixedPoint
from fedcore.crypto.paillier import (
    ClassicObfuscator,
    DJNObfuscator,
    EncryptedArray,
    InvalidCiphertextError,
    ObfuscatorPool,
    PackedArray,
    Packing,
    PrivateKey,
    PublicKey,
    _multi_power,
    generate_keypair,
)

BITS = 512
Keys = tuple[PublicKey, PrivateKey]
PhePrivate = phe.paillier.PaillierPrivateKey
FAST = settings(max_examples=60, deadline=None)
# Values with a realistic dynamic range (1e-6 .. 1e9, either sign, or zero): aligning fixed-point
# exponents 600 bits apart would exceed a 512-bit key, which test_exponent_gap_beyond_the_key_raises covers.
finite = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e9), st.floats(min_value=-1e9, max_value=-1e-6))
same_length_pairs = st.integers(1, 6).flatmap(
    lambda k: st.tuples(st.lists(finite, min_size=k, max_size=k), st.lists(finite, min_size=k, max_size=k)))
slot_cases = st.integers(2, 40).flatmap(  # (B, values with |v| < 2^(B-1))
    lambda bits: st.tuples(st.just(bits), st.lists(st.integers(1 - 2 ** (bits - 1), 2 ** (bits - 1) - 1), max_size=40)))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return generate_keypair(BITS, allow_insecure=True)


@pytest.fixture(scope="module")
def phe_private(keys: Keys) -> PhePrivate:
    public, private = keys
    return phe.paillier.PaillierPrivateKey(phe.paillier.PaillierPublicKey(int(public.n)), int(private.p), int(private.q))


def _phe_exponent(values: np.ndarray) -> int:
    """Our default base-2 exponent rounded down to a multiple of 4, i.e. a base-16 phe exponent times 4."""
    return 4 * math.floor(FixedPoint.encode(values).exponent / 4)


# -- key generation and the public key on the wire -------------------------------------------


def _assert_well_formed(public: PublicKey, private: PrivateKey, bits: int) -> None:
    p, q = private.p, private.q
    assert p != q and p * q == public.n and public.n.bit_length() == bits
    assert p.bit_length() == q.bit_length() == bits // 2
    for prime in (p, q):
        assert gmpy2.is_prime(prime) and gmpy2.is_prime((prime - 1) // 2)


def test_keygen_512_gives_safe_distinct_primes_and_exact_length(keys: Keys) -> None:
    _assert_well_formed(*keys, BITS)


def test_keygen_2048_round_trips_with_phe() -> None:
    public, private = generate_keypair()
    _assert_well_formed(public, private, 2048)
    phe_public = phe.paillier.PaillierPublicKey(int(public.n))
    phe_private = phe.paillier.PaillierPrivateKey(phe_public, int(private.p), int(private.q))
    ours = public.encrypt([-1.25, 3.0e6], exponent=-40)
    assert [phe_private.decrypt(phe.EncryptedNumber(phe_public, int(c), -10)) for c in ours.ciphertexts] == [
        -1.25, 3.0e6]
    theirs = phe_public.encrypt(-7.5)
    ours_view = EncryptedArray(public, [mpz(theirs.ciphertext())], 4 * theirs.exponent)
    assert private.decrypt(ours_view).tolist() == [-7.5]


def test_key_sizes_outside_the_policy_are_refused(keys: Keys) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        generate_keypair(BITS)
    with pytest.raises(ValueError, match="not allowed"):
        PublicKey.from_n(keys[0].n_bytes())


def test_public_key_from_n_bytes_round_trips(keys: Keys) -> None:
    public, private = keys
    wire = public.n_bytes()
    assert len(wire) == BITS // 8
    received = PublicKey.from_n(wire, allow_insecure=True)
    assert received == public
    assert private.decrypt(received.encrypt([2.5, -0.125])).tolist() == [2.5, -0.125]


@pytest.mark.parametrize(
    "make_bad",
    [lambda n, p: n + 1, lambda n, p: p * p, lambda n, p: gmpy2.next_prime(n), lambda n, p: 3 * (n // 3 | 1)],
    ids=["even", "square", "prime", "small factor"],
)
def test_public_key_rejects_a_modulus_that_is_not_pq(keys: Keys, make_bad: Callable[[mpz, mpz], mpz]) -> None:
    public, private = keys
    with pytest.raises(ValueError):
        PublicKey(make_bad(public.n, private.p), allow_insecure=True)


# -- cross-checks with phe -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 1.0, -1.0, 0.5, -123.456, 7.0],
        [1e12, -3.5e15, 2.0**60, 0.0],
        [1e-12, -3.3e-9, 0.0, 5e-300 * 1e290],
        [1e300, -2.5e299],
    ],
    ids=["small", "large", "tiny", "huge"],
)
def test_phe_decrypts_what_we_encrypt(keys: Keys, phe_private: PhePrivate, values: list[float]) -> None:
    public, _ = keys
    x = np.array(values)
    exponent = _phe_exponent(x)
    encrypted = public.encrypt(x, exponent=exponent)
    encoded = FixedPoint.encode(x, exponent=exponent)
    phe_public = phe_private.public_key
    for c, m, value in zip(encrypted.ciphertexts, encoded.tolist(), encoded.decode(), strict=True):
        assert phe_private.raw_decrypt(int(c)) == m % int(public.n)
        theirs = phe_private.decrypt(phe.EncryptedNumber(phe_public, int(c), exponent // 4))
        assert theirs == pytest.approx(value, rel=1e-15, abs=0)
    np.testing.assert_allclose(encoded.decode(), x, rtol=2.0**-52, atol=2.0 ** (exponent - 1))


@pytest.mark.parametrize("value", [0, 1, -1, 42, -(2**40), 0.1, -2.5e-7, 6.02e23, -1.7e-300, 3.4e300])
def test_we_decrypt_what_phe_encrypts(keys: Keys, phe_private: PhePrivate, value: float) -> None:
    public, private = keys
    theirs = phe_private.public_key.encrypt(value)
    ours = EncryptedArray(public, [mpz(theirs.ciphertext())], 4 * theirs.exponent)
    assert private.decrypt(ours)[0] == value  # phe encodes exactly; we decode correctly rounded


def test_phe_sum_and_product_decrypt_with_our_key(keys: Keys, phe_private: PhePrivate) -> None:
    public, private = keys
    a, b = phe_private.public_key.encrypt(-3.75), phe_private.public_key.encrypt(1.5)
    total, scaled = a + b, a * -2
    for number, expected in ((total, -2.25), (scaled, 7.5)):
        ours = EncryptedArray(public, [mpz(number.ciphertext())], 4 * number.exponent)
        assert private.decrypt(ours)[0] == expected


# -- homomorphic identities (hypothesis) -----------------------------------------------------


@FAST
@given(same_length_pairs)
def test_decrypt_of_sum_is_sum(keys: Keys, pair: tuple[list[float], list[float]]) -> None:
    public, private = keys
    a, b = np.array(pair[0]), np.array(pair[1])
    ea, eb = public.encrypt(a), public.encrypt(b)
    total = ea + eb
    exponent = min(ea.exponent, eb.exponent)
    expected = [
        x * 2 ** (ea.exponent - exponent) + y * 2 ** (eb.exponent - exponent)
        for x, y in zip(FixedPoint.encode(a).tolist(), FixedPoint.encode(b).tolist(), strict=True)
    ]
    assert total.exponent == exponent and private.decrypt_mantissas(total) == expected
    np.testing.assert_allclose(private.decrypt(total), a + b, rtol=1e-12, atol=2.0**ea.exponent + 2.0**eb.exponent)
    np.testing.assert_allclose(private.decrypt(ea + b), a + b, rtol=1e-12, atol=2.0**ea.exponent)


@FAST
@given(same_length_pairs)
def test_decrypt_of_scalar_multiple_is_product(keys: Keys, pair: tuple[list[float], list[float]]) -> None:
    public, private = keys
    a, k = np.array(pair[0]), np.array(pair[1])
    product = public.encrypt(a) * k  # mixed signs: negative scalars go through the inverse
    scalars = FixedPoint.encode(k, precision=32, trim=True)
    expected = [x * y for x, y in zip(FixedPoint.encode(a).tolist(), scalars.tolist(), strict=True)]
    assert private.decrypt_mantissas(product) == expected
    tolerance = np.abs(a).max() * 2.0 ** (scalars.exponent - 1) + 2.0 ** FixedPoint.encode(a).exponent * np.abs(k).max()
    np.testing.assert_allclose(private.decrypt(product), a * k, rtol=1e-12, atol=tolerance)


@FAST
@given(st.lists(finite, min_size=1, max_size=8), finite)
def test_negation_subtraction_and_broadcast_scalar(keys: Keys, values: list[float], scalar: float) -> None:
    public, private = keys
    x = np.array(values)
    encrypted = public.encrypt(x)
    assert private.decrypt_mantissas(-encrypted) == [-m for m in FixedPoint.encode(x).tolist()]
    assert private.decrypt_mantissas(encrypted - encrypted) == [0] * len(x)
    atol = 2.0 ** encrypted.exponent * (1 + abs(scalar))
    np.testing.assert_allclose(private.decrypt(scalar - encrypted), scalar - x, rtol=1e-12, atol=atol)
    atol += abs(x).max() * 2.0**-32 * abs(scalar)  # the scalar has 32 significant bits
    np.testing.assert_allclose(private.decrypt(encrypted * scalar), x * scalar, rtol=1e-9, atol=atol)


@FAST
@given(slot_cases)
def test_packing_round_trip(keys: Keys, case: tuple[int, list[int]]) -> None:
    public, private = keys
    slot_bits, values = case
    packing = Packing.for_key(public, slot_bits)
    assert packing.slots * slot_bits <= BITS - 2 < (packing.slots + 1) * slot_bits
    assert packing.unpack_ints(packing.pack_ints(values), len(values)) == values
    encrypted = public.encrypt_encoded(FixedPoint.from_ints(values, -3))
    packed = packing.pack(encrypted)
    assert len(packed.ciphertexts) == -(-len(values) // packing.slots)
    assert private.decrypt_packed_mantissas(packed) == values
    np.testing.assert_array_equal(private.decrypt_packed(packed), np.array(values) / 8.0)


@FAST
@given(st.lists(finite, min_size=0, max_size=10))
def test_serialisation_round_trip(keys: Keys, values: list[float]) -> None:
    public, private = keys
    encrypted = public.encrypt(np.array(values), exponent=-20)
    data = encrypted.to_bytes()
    assert len(data) == len(values) * public.ciphertext_width == len(values) * 2 * BITS // 8
    parsed = EncryptedArray.from_bytes(public, data, encrypted.exponent)
    assert parsed.ciphertexts == encrypted.ciphertexts
    np.testing.assert_array_equal(private.decrypt(parsed), private.decrypt(encrypted))


# -- packing limits, overflow ------------------------------------------------------------------


def test_packing_refuses_values_wider_than_a_slot(keys: Keys) -> None:
    public, _ = keys
    encrypted = public.encrypt_encoded(FixedPoint.from_ints([2**20, -5], 0))
    with pytest.raises(OverflowError):
        Packing.for_key(public, 21).pack(encrypted)  # 2^20 is not < 2^(21-1)
    assert Packing.for_array(encrypted).slot_bits == 22
    with pytest.raises(OverflowError):
        Packing(8, 2).pack_ints([-128])
    with pytest.raises(ValueError, match="unknown"):
        Packing.for_key(public, 30).pack(EncryptedArray.from_bytes(public, encrypted.to_bytes(), 0))
    with pytest.raises(ValueError):
        Packing(BITS // 2, 2).pack(encrypted)  # 2 x 256 bits > 512 - 2


def test_packed_bytes_round_trip_and_count_check(keys: Keys) -> None:
    public, private = keys
    values = [5, -6, 7, -8, 9]
    packed = Packing(16, 2).pack(public.encrypt_encoded(FixedPoint.from_ints(values, 0)))
    received = PackedArray.from_bytes(public, packed.to_bytes(), 0, 5, Packing(16, 2))
    assert private.decrypt_packed_mantissas(received) == values
    with pytest.raises(InvalidCiphertextError):
        PackedArray.from_bytes(public, packed.to_bytes(), 0, 7, Packing(16, 2))


def test_overflow_is_detected_not_wrapped(keys: Keys) -> None:
    public, private = keys
    with pytest.raises(OverflowError):
        public.encrypt_encoded(FixedPoint.from_ints([int(public.max_int) + 1], 0))
    big = public.encrypt_encoded(FixedPoint.from_ints([int(public.max_int)], 0))
    with pytest.raises(OverflowError):
        big + big  # the tracked bound already says the sum could wrap
    unknown = EncryptedArray.from_bytes(public, big.to_bytes(), 0)  # no bound from the wire
    assert unknown.bound is None
    with pytest.raises(OverflowError):
        private.decrypt(unknown + unknown)  # caught by the max_int band at decryption


def test_exponent_gap_beyond_the_key_raises(keys: Keys) -> None:
    public, _ = keys
    coarse, fine = public.encrypt([1.0]), public.encrypt([1e-200])
    with pytest.raises(OverflowError):
        coarse + fine  # 1.0 at exponent ~ -717 needs ~717 bits > max_int of a 512-bit key


def test_arrays_under_different_keys_do_not_mix(keys: Keys) -> None:
    public, private = keys
    other_public, _ = generate_keypair(BITS, allow_insecure=True)
    with pytest.raises(ValueError, match="different public keys"):
        public.encrypt([1.0]) + other_public.encrypt([1.0])
    with pytest.raises(ValueError, match="another public key"):
        private.decrypt(other_public.encrypt([1.0]))


# -- obfuscators and the pool ------------------------------------------------------------------


@pytest.mark.parametrize("source_type", [ClassicObfuscator, DJNObfuscator])
def test_pool_never_hands_out_a_value_twice(keys: Keys, source_type: type[ClassicObfuscator | DJNObfuscator]) -> None:
    public, private = keys
    with ObfuscatorPool(source_type(public), capacity=24, batch=8) as pool:
        assert pool.wait_full(timeout=30)
        taken: list[list[mpz]] = [pool.take(40)]  # 24 from the pool, at least 16 inline

        def consume() -> None:
            for _ in range(10):
                taken.append(pool.take(7))

        workers = [threading.Thread(target=consume) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        handed_out = [r for batch in taken for r in batch]
        assert len(handed_out) == 40 + 3 * 10 * 7
        assert len(set(handed_out)) == len(handed_out)
        assert pool.served_from_pool >= 24 and pool.computed_inline >= 16
        assert pool.served_from_pool + pool.computed_inline == len(handed_out)
    # every obfuscator is an n-th residue: a valid encryption of zero
    assert private.decrypt_mantissas(EncryptedArray(public, handed_out[::9], 0)) == [0] * len(handed_out[::9])


def test_encryption_uses_the_pool_and_stays_probabilistic(keys: Keys) -> None:
    public, private = keys
    pool = ObfuscatorPool(DJNObfuscator(public), capacity=10, background=False)
    assert pool.fill() == 10 and len(pool) == 10
    first, second = public.encrypt([1.0] * 6, pool=pool), public.encrypt([1.0] * 6, pool=pool)
    assert len(pool) == 0 and pool.served_from_pool == 10 and pool.computed_inline == 2
    assert len(set(first.ciphertexts + second.ciphertexts)) == 12
    assert private.decrypt(first).tolist() == private.decrypt(second).tolist() == [1.0] * 6
    again = first.rerandomize()
    assert not set(again.ciphertexts) & set(first.ciphertexts)
    assert private.decrypt(again).tolist() == [1.0] * 6


def test_djn_fixed_base_table_matches_direct_power(keys: Keys) -> None:
    public, _ = keys
    source = DJNObfuscator(public)
    for a in [0, 1, 255, 256, 2**256 - 1, secrets.randbits(256), secrets.randbits(256)]:
        assert source.power(a) == gmpy2.powmod(source.h_n, a, public.nsquare)
    with pytest.raises(ValueError):
        DJNObfuscator(public, exponent_bits=128)


# -- wire validation -----------------------------------------------------------------------------


def test_tampered_or_malformed_bytes_are_rejected(keys: Keys) -> None:
    public, private = keys
    width = public.ciphertext_width
    data = public.encrypt([1.0, 2.0, 3.0]).to_bytes()
    assert issubclass(InvalidCiphertextError, ValueError)
    cases = {
        "not a whole number": [data[:-1], data + b"\x00"],
        "not below n\\^2": [data[:width] + b"\xff" * width + data[2 * width :],
                            data[:width] + public.nsquare.to_bytes(width, "big") + data[2 * width :]],
        "not coprime": [data[:width] + bytes(width) + data[2 * width :],
                        data[:width] + public.n.to_bytes(width, "big") + data[2 * width :],
                        data[:width] + (private.p * 12345).to_bytes(width, "big") + data[2 * width :]],
    }
    for message, payloads in cases.items():
        for payload in payloads:
            with pytest.raises(InvalidCiphertextError, match=message):
                EncryptedArray.from_bytes(public, payload, -50)


# -- the encrypted gradient X^T [[d]] ----------------------------------------------------------


def test_encrypted_matrix_vector_product_matches_numpy(keys: Keys) -> None:
    public, private = keys
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 6)) * np.array([1, 10, 0.01, 1, 1, 1])
    x[:, 4] = 0.0  # an all-zero feature
    x[:, 5] = -np.abs(x[:, 5])  # an all-negative feature
    d = rng.normal(size=300)
    encrypted_d = public.encrypt(d)
    gradient = x.T @ encrypted_d
    assert isinstance(gradient, EncryptedArray) and len(gradient) == 6
    # exact in the integers: decrypted mantissas are the integer product of the encodings
    a, m = FixedPoint.encode(x.T, precision=24, trim=True), FixedPoint.encode(d)
    exact = [sum(int(u) * v for u, v in zip(row, m.tolist())) for row in a.mantissas.tolist()]
    assert gradient.exponent == a.exponent + m.exponent and private.decrypt_mantissas(gradient) == exact
    # and within the fixed-point tolerance of the float product
    tolerance = np.abs(d).sum() * 2.0 ** (a.exponent - 1) + np.abs(x).sum(axis=0) * 2.0 ** (m.exponent - 1)
    assert np.all(np.abs(private.decrypt(gradient) - x.T @ d) <= tolerance * (1 + 1e-9))


def test_bucket_multi_power_equals_product_of_powers(keys: Keys) -> None:
    public, _ = keys
    nsquare = public.nsquare
    rng = np.random.default_rng(3)
    bases = [mpz(secrets.randbelow(int(nsquare))) for _ in range(50)]
    for bits, window in [(1, 1), (13, 3), (24, 6), (40, 8)]:
        exponents = rng.integers(0, 2**bits, size=50, dtype=np.int64)
        exponents[::7] = 0
        expected = mpz(1)
        for base, e in zip(bases, exponents.tolist()):
            expected = expected * gmpy2.powmod(base, e, nsquare) % nsquare
        assert _multi_power(bases, exponents, nsquare, window) == expected


# -- fixed-point encoding ------------------------------------------------------------------------


def test_fixed_point_encoding_rules() -> None:
    encoded = FixedPoint.encode([0.25, -0.75], precision=32, trim=True)
    assert (encoded.tolist(), encoded.exponent) == ([1, -3], -2)
    wide = FixedPoint.encode([1e300, -1.0], exponent=-10)  # mantissas far beyond int64
    assert wide.mantissas.dtype == object
    np.testing.assert_array_equal(wide.decode(), [1e300, -1.0])
    assert FixedPoint.from_ints([3 << 2000], -2000).decode().tolist() == [3.0]
    assert FixedPoint.from_ints([1 << 1100], 0).decode().tolist() == [math.inf]
    with pytest.raises(ValueError):
        FixedPoint.encode([1.0, math.nan])
