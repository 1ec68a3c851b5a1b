"""Paillier homomorphic encryption over gmpy2, built for whole arrays.

Read top to bottom: key generation, PublicKey (encryption), PrivateKey (CRT decryption),
the two obfuscator sources (classic r^n and Damgard-Jurik-Nielsen short exponents), the
ObfuscatorPool that precomputes them in a background thread, EncryptedArray (the
homomorphic operations, the encrypted matrix-vector product and the wire format), and
Packing (several values in one plaintext so that one decryption yields many values).

References
    [P99]   P. Paillier, "Public-Key Cryptosystems Based on Composite Degree Residuosity
            Classes", EUROCRYPT 1999, LNCS 1592, 223-238.
    [DJN10] I. Damgard, M. Jurik, J. B. Nielsen, "A generalization of Paillier's public-key
            system with applications to electronic voting", Int. J. Inf. Secur. 9 (2010).
    [HAC]   A. Menezes, P. van Oorschot, S. Vanstone, "Handbook of Applied Cryptography",
            ch. 14.6 (exponentiation; fixed-base precomputation, simultaneous multiple
            exponentiation).
    [Pip76] N. Pippenger, "On the evaluation of powers and related problems", FOCS 1976
            (the bucket method for products of many powers).
    [BC20]  C. Zhang et al., "BatchCrypt: Efficient Homomorphic Encryption for Cross-Silo
            Federated Learning", USENIX ATC 2020 (several values per Paillier plaintext).

Conventions: g = n + 1; plaintexts are signed integers m with |m| <= max_int = n//3 - 1,
stored as m mod n (the range between max_int and n - max_int flags overflow, as in
python-paillier); real numbers are fixed-point (fedcore.crypto.fixedpoint). Nothing here
authenticates a ciphertext: Paillier is malleable, so integrity comes from the channel.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import gmpy2
import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from fedcore.crypto.fixedpoint import FLOAT_PRECISION, FixedPoint

#: Computational security parameter (bits) the short DJN exponents are sized for.
KAPPA = 128
DEFAULT_KEY_BITS = 2048
ALLOWED_KEY_BITS = (1024, 2048, 3072)
#: Smallest modulus accepted even with allow_insecure=True (unit tests use 512).
_MIN_INSECURE_BITS = 256
#: Default significant bits of a scalar in EncryptedArray.multiply (its modular-power exponent).
SCALAR_PRECISION = 32
#: Default significant bits of the plaintext matrix in EncryptedArray.rmatmul.
MATRIX_PRECISION = 24


class InvalidCiphertextError(ValueError):
    """Bytes that do not decode to valid ciphertexts: wrong length, c >= n^2, or gcd(c, n) != 1."""


# ---------------------------------------------------------------------------------------------
# Key generation
# ---------------------------------------------------------------------------------------------


def generate_keypair(
    bits: int = DEFAULT_KEY_BITS, *, allow_insecure: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair with n = p q of exactly ``bits`` bits, p != q safe primes of bits/2 bits.

    Safe primes (p = 2p' + 1, p' prime) make p, q = 3 mod 4, so h = -x^2 mod n generates
    the Jacobi-symbol-1 subgroup, of order 2p'q', with overwhelming probability, as the DJN
    obfuscators assume [DJN10]. Both primes have
    their top two bits set, so n >= (3/4)^2 2^bits >= 2^(bits-1): n has exactly ``bits`` bits.
    ``bits`` must be one of ALLOWED_KEY_BITS unless ``allow_insecure`` (tests only).
    """
    _check_key_bits(bits, allow_insecure)
    while True:
        p, q = _safe_prime(bits // 2), _safe_prime(bits // 2)
        if p != q and (p * q).bit_length() == bits:
            public_key = PublicKey(p * q, allow_insecure=allow_insecure)
            return public_key, PrivateKey(public_key, p, q)


def _check_key_bits(bits: int, allow_insecure: bool) -> None:
    if bits in ALLOWED_KEY_BITS:
        return
    if allow_insecure and bits >= _MIN_INSECURE_BITS and bits % 2 == 0:
        return
    raise ValueError(f"Paillier modulus of {bits} bits not allowed; use one of {ALLOWED_KEY_BITS}")


_SIEVE_WINDOW = 1 << 15


def _safe_prime(bits: int) -> mpz:
    """A uniformly started search for a safe prime p = 2q + 1 with p in [3 * 2^(bits-2), 2^bits).

    Candidates q0, q0 + 2, ... are sieved so that neither q nor 2q + 1 has a factor below
    2^16, then filtered by a base-2 Fermat test on p and confirmed by 25 Miller-Rabin
    rounds on both q and p (gmpy2.is_prime).
    """
    low, high = 3 << (bits - 3), 1 << (bits - 1)
    while True:
        q0 = mpz(low + secrets.randbelow(high - low - 2 * _SIEVE_WINDOW)) | 1
        alive = np.ones(_SIEVE_WINDOW, dtype=bool)
        for prime in _small_odd_primes():
            half = (prime + 1) // 2  # the inverse of 2 mod prime
            residue = int(q0 % prime)
            alive[(-residue * half) % prime :: prime] = False  # prime | q0 + 2i
            alive[((-half - residue) * half) % prime :: prime] = False  # prime | 2(q0 + 2i) + 1
        for i in np.flatnonzero(alive).tolist():
            q = q0 + 2 * i
            p = 2 * q + 1
            if gmpy2.powmod(2, p - 1, p) == 1 and gmpy2.is_prime(q, 25) and gmpy2.is_prime(p, 25):
                return p


_SMALL_PRIMES: list[int] = []


def _small_odd_primes() -> list[int]:
    """Odd primes below 2^16 (sieve of Eratosthenes, computed once)."""
    if not _SMALL_PRIMES:
        sieve = np.ones(1 << 16, dtype=bool)
        sieve[:2] = False
        for i in range(2, 1 << 8):
            if sieve[i]:
                sieve[i * i :: i] = False
        _SMALL_PRIMES.extend(np.flatnonzero(sieve)[1:].tolist())
    return _SMALL_PRIMES


# ---------------------------------------------------------------------------------------------
# Public key: encryption
# ---------------------------------------------------------------------------------------------


class PublicKey:
    """The modulus n of a Paillier key; everything public follows from n (g = n + 1).

    Encryption [P99] with g = n + 1 needs no exponentiation for g^m, because by the
    binomial theorem (1 + n)^m = 1 + m n (mod n^2):

        c = (1 + m n) * r^n  mod n^2,      r^n taken from an obfuscator source or pool.
    """

    def __init__(self, n: int, *, allow_insecure: bool = False) -> None:
        n = mpz(n)
        _check_key_bits(n.bit_length(), allow_insecure)
        if n % 2 == 0 or gmpy2.is_square(n) or gmpy2.gcd(n, _small_primorial()) != 1 or gmpy2.is_prime(n):
            raise ValueError("not a Paillier modulus: n must be a product of two distinct large primes")
        self.n: mpz = n
        self.nsquare: mpz = n * n
        self.max_int: mpz = n // 3 - 1
        self._obfuscator: DJNObfuscator | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_n(cls, n: bytes | int, *, allow_insecure: bool = False) -> PublicKey:
        """The public key from n alone, as an int or as big-endian bytes (see n_bytes)."""
        if isinstance(n, bytes | bytearray):
            n = int.from_bytes(n, "big")
        return cls(n, allow_insecure=allow_insecure)

    def n_bytes(self) -> bytes:
        """n as big-endian bytes of length ceil(bits / 8): all the arbiter has to send."""
        return self.n.to_bytes((self.key_bits + 7) // 8, "big")

    @property
    def key_bits(self) -> int:
        """The bit length of n (1024, 2048 or 3072 outside tests)."""
        return self.n.bit_length()

    @property
    def ciphertext_width(self) -> int:
        """Bytes of one serialised ciphertext: the byte length of n^2."""
        return (self.nsquare.bit_length() + 7) // 8

    @property
    def obfuscator(self) -> DJNObfuscator:
        """This process's default obfuscator source for the key (DJN, table built on first use)."""
        with self._lock:
            if self._obfuscator is None:
                self._obfuscator = DJNObfuscator(self)
            return self._obfuscator

    def encrypt(
        self,
        values: npt.ArrayLike,
        *,
        precision: int = FLOAT_PRECISION,
        exponent: int | None = None,
        pool: ObfuscatorPool | None = None,
    ) -> EncryptedArray:
        """Encrypt a 1-D float array: fixed-point encode (FixedPoint.encode), then encrypt_encoded."""
        encoded = FixedPoint.encode(np.atleast_1d(np.asarray(values, dtype=np.float64)),
                                    precision=precision, exponent=exponent)
        return self.encrypt_encoded(encoded, pool=pool)

    def encrypt_encoded(self, encoded: FixedPoint, *, pool: ObfuscatorPool | None = None) -> EncryptedArray:
        """Encrypt fixed-point mantissas; obfuscators come from ``pool`` or, if None, self.obfuscator."""
        if encoded.mantissas.ndim != 1:
            raise ValueError(f"EncryptedArray is 1-D; got shape {encoded.mantissas.shape}")
        bound = self._checked_bound(encoded.max_abs())
        if pool is not None and pool.public_key != self:
            raise ValueError("the obfuscator pool belongs to another public key")
        obfuscators = (pool.take if pool is not None else self.obfuscator.generate)(len(encoded))
        return EncryptedArray(self, self.raw_encrypt(encoded.tolist(), obfuscators), encoded.exponent, bound)

    def raw_encrypt(self, plaintexts: Sequence[int], obfuscators: Sequence[mpz]) -> list[mpz]:
        """c_i = (1 + (m_i mod n) n) * obfuscator_i mod n^2 for signed integers m_i [P99]."""
        n, nsquare = self.n, self.nsquare
        return [(m % n * n + 1) * r % nsquare for m, r in zip(plaintexts, obfuscators, strict=True)]

    def _checked_bound(self, magnitude: int) -> int:
        """``magnitude`` if it is at most max_int, else OverflowError (the value could wrap mod n)."""
        if magnitude > self.max_int:
            raise OverflowError(f"values of up to {int(magnitude).bit_length()} bits could exceed max_int "
                                f"({self.max_int.bit_length()} bits) of this key and wrap")
        return magnitude

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(int(self.n))

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.key_bits}, n=0x{int(self.n) & 0xFFFFFFFF:08x}...)"


_PRIMORIAL: list[mpz] = []


def _small_primorial() -> mpz:
    """The product of all primes below 2^16: gcd(n, it) != 1 means n has a small factor."""
    if not _PRIMORIAL:
        _PRIMORIAL.append(mpz(2) * math.prod(mpz(p) for p in _small_odd_primes()))
    return _PRIMORIAL[0]


# ---------------------------------------------------------------------------------------------
# Private key: CRT decryption
# ---------------------------------------------------------------------------------------------


class PrivateKey:
    """The factors p, q of n, with what CRT decryption precomputes from them [P99].

    With L_p(x) = (x - 1) / p and h_p = L_p(g^(p-1) mod p^2)^(-1) mod p (likewise for q):

        m_p = L_p(c^(p-1) mod p^2) h_p mod p,   m_q = L_q(c^(q-1) mod q^2) h_q mod q,
        m   = m_p + p ((m_q - m_p) p^(-1) mod q)            (Chinese remaindering).

    Two half-size exponentiations modulo p^2 and q^2 replace one of c^lambda mod n^2.
    """

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p, q = mpz(p), mpz(q)
        if p == q or p * q != public_key.n:
            raise ValueError("p and q must be the two distinct factors of the public key's n")
        self.public_key = public_key
        self.p, self.q = p, q
        self.psquare, self.qsquare = p * p, q * q
        g = public_key.n + 1
        self.hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self.psquare) - 1) // p, p)
        self.hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self.qsquare) - 1) // q, q)
        self.p_inverse = gmpy2.invert(p, q)

    def raw_decrypt(self, ciphertexts: Sequence[mpz]) -> list[mpz]:
        """The plaintexts in [0, n) of raw ciphertexts, by the CRT formula of the class docstring."""
        p, q = self.p, self.q
        xp = gmpy2.powmod_base_list(list(ciphertexts), p - 1, self.psquare)
        xq = gmpy2.powmod_base_list(list(ciphertexts), q - 1, self.qsquare)
        hp, hq, p_inverse = self.hp, self.hq, self.p_inverse
        return [
            mp + p * ((mq - mp) * p_inverse % q)
            for mp, mq in zip(
                [(x - 1) // p * hp % p for x in xp], [(x - 1) // q * hq % q for x in xq], strict=True
            )
        ]

    def decrypt_mantissas(self, array: EncryptedArray) -> list[int]:
        """Signed integer plaintexts: m if m <= max_int, m - n if m >= n - max_int, else OverflowError."""
        self._check_key(array.public_key)
        n, max_int = self.public_key.n, self.public_key.max_int
        signed = []
        for m in self.raw_decrypt(array.ciphertexts):
            if m <= max_int:
                signed.append(int(m))
            elif m >= n - max_int:
                signed.append(int(m - n))
            else:
                raise OverflowError("decrypted value overflowed: a result exceeded max_int = n//3 - 1")
        return signed

    def decrypt(self, array: EncryptedArray) -> np.ndarray:
        """The float64 values of an EncryptedArray: mantissas * 2**exponent."""
        return FixedPoint.from_ints(self.decrypt_mantissas(array), array.exponent).decode()

    def decrypt_packed_mantissas(self, packed: PackedArray) -> list[int]:
        """The signed slot values of a PackedArray: one decryption per ``slots`` values."""
        self._check_key(packed.public_key)
        n = self.public_key.n
        plaintexts = [int(m) if m <= n // 2 else int(m - n) for m in self.raw_decrypt(packed.ciphertexts)]
        return packed.packing.unpack_ints(plaintexts, packed.count)

    def decrypt_packed(self, packed: PackedArray) -> np.ndarray:
        """The float64 values of a PackedArray."""
        return FixedPoint.from_ints(self.decrypt_packed_mantissas(packed), packed.exponent).decode()

    def _check_key(self, public_key: PublicKey) -> None:
        if public_key != self.public_key:
            raise ValueError("ciphertexts were made under another public key")

    def __repr__(self) -> str:
        return f"PrivateKey(bits={self.public_key.key_bits})"


# ---------------------------------------------------------------------------------------------
# Obfuscators: the r^n factor of a ciphertext
# ---------------------------------------------------------------------------------------------


class Obfuscator(Protocol):
    """A source of fresh n-th residues mod n^2 (each a valid encryption of 0) for one key."""

    public_key: PublicKey

    def generate(self, count: int) -> list[mpz]:
        """``count`` fresh obfuscators, never returned before."""
        ...


class ClassicObfuscator:
    """r^n mod n^2 with r uniform in Z_n^* [P99]: one full-length exponentiation each.

    Generated with gmpy2.powmod_base_list, which releases the GIL, so a pool thread filling
    these runs in parallel with Python code on another core.
    """

    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key

    def generate(self, count: int) -> list[mpz]:
        n = self.public_key.n
        bases = []
        while len(bases) < count:
            r = mpz(secrets.randbelow(int(n) - 1) + 1)
            if gmpy2.gcd(r, n) == 1:
                bases.append(r)
        return gmpy2.powmod_base_list(bases, n, self.public_key.nsquare) if bases else []


class DJNObfuscator:
    """Short-exponent obfuscators (h^n)^a mod n^2 of Damgard, Jurik and Nielsen [DJN10].

    Following [DJN10] (the s = 1 case of its h_s = h^(n^s) mod n^(s+1) variant): pick
    x uniform in Z_n^*, set h = -x^2 mod n and h_n = h^n mod n^2, once; then each
    obfuscator is

        r_n = h_n^a mod n^2,    a uniform in [0, 2^(2 kappa)),

    an n-th residue like r^n, so c = (1 + m n) r_n is a Paillier ciphertext any decryptor
    handles unchanged. [DJN10] draws a from ceil(k/2) bits; we use 2 kappa = 256 bits, the
    length at which the best known attacks on a short exponent (baby-step giant-step and
    Pollard's lambda, ~2^(bits/2) work) reach 2^kappa. The encryptor picks h itself, so the
    wire still carries n alone.

    Because h_n is fixed, a fixed-base table [HAC 14.6.3] T[t][d] = h_n^(d 2^(8t)) for the
    byte positions t of a (32 for 256 bits) and digits d < 256 turns each power into a
    product of one table entry per byte: 31 multiplications mod n^2 instead of the
    ~1.2 log2(n) of a windowed r^n. The table (32 x 255 entries of n^2 size, 4 MiB at 2048
    bits) costs 8160 multiplications, once per key and process.
    """

    WINDOW_BITS = 8

    def __init__(self, public_key: PublicKey, *, exponent_bits: int = 2 * KAPPA) -> None:
        if exponent_bits < 2 * KAPPA or exponent_bits % self.WINDOW_BITS:
            raise ValueError(f"exponent_bits must be a multiple of 8 and >= {2 * KAPPA}")
        self.public_key = public_key
        self.exponent_bits = exponent_bits
        n, nsquare = public_key.n, public_key.nsquare
        while True:
            x = mpz(secrets.randbelow(int(n) - 2) + 2)
            if gmpy2.gcd(x, n) == 1:
                break
        self.h_n = gmpy2.powmod(n - x * x % n, n, nsquare)
        self._table: list[list[mpz]] = []
        base = self.h_n
        for _ in range(exponent_bits // self.WINDOW_BITS):
            row = [mpz(1), base]
            for _ in range(2, 1 << self.WINDOW_BITS):
                row.append(row[-1] * base % nsquare)
            self._table.append(row)
            base = row[-1] * base % nsquare  # h_n^(2^(8(t+1)))

    def power(self, a: int) -> mpz:
        """h_n^a mod n^2 for 0 <= a < 2^exponent_bits, one table entry per byte of a."""
        nsquare = self.public_key.nsquare
        result = None
        for row, digit in zip(self._table, a.to_bytes(self.exponent_bits // 8, "little"), strict=True):
            if digit:
                result = row[digit] if result is None else result * row[digit] % nsquare
        return mpz(1) if result is None else result

    def generate(self, count: int) -> list[mpz]:
        return [self.power(secrets.randbits(self.exponent_bits)) for _ in range(count)]


class ObfuscatorPool:
    """Obfuscators computed ahead of time by a background thread, each handed out once.

    take(k) pops k values from the queue (deque.popleft: atomic, so no value can be handed
    out twice, even to concurrent callers); whatever the queue lacks is computed inline by
    the source, never reused from anywhere. The thread refills up to ``capacity`` in
    batches of ``batch`` and then sleeps until take() wakes it.
    """

    def __init__(self, source: Obfuscator, capacity: int = 4096, *, batch: int = 64, background: bool = True) -> None:
        if capacity < 1 or batch < 1:
            raise ValueError("capacity and batch must be positive")
        self.source = source
        self.public_key = source.public_key
        self.capacity = capacity
        self.batch = batch
        self.served_from_pool = 0
        self.computed_inline = 0
        self._ready: deque[mpz] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._filled = threading.Condition()
        self._counts = threading.Lock()
        self._thread: threading.Thread | None = None
        if background:
            self.start()

    def start(self) -> None:
        """Start the background filler (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="paillier-obfuscator-pool", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the filler and discard what it precomputed."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._ready.clear()

    def fill(self) -> int:
        """Fill to capacity in the calling thread; returns how many were added."""
        added = 0
        while (room := self.capacity - len(self._ready)) > 0:
            self._extend(self.source.generate(min(room, self.batch)))
            added += min(room, self.batch)
        return added

    def wait_full(self, timeout: float | None = None) -> bool:
        """Block until the background filler has reached capacity (True) or timeout (False)."""
        with self._filled:
            return self._filled.wait_for(lambda: len(self._ready) >= self.capacity, timeout)

    def take(self, count: int) -> list[mpz]:
        """``count`` obfuscators never handed out before: from the pool first, then inline."""
        taken: list[mpz] = []
        pop = self._ready.popleft
        try:
            for _ in range(count):
                taken.append(pop())
        except IndexError:
            pass
        served = len(taken)
        if served < count:
            taken.extend(self.source.generate(count - served))
        with self._counts:
            self.served_from_pool += served
            self.computed_inline += count - served
        self._wake.set()
        return taken

    def __len__(self) -> int:
        return len(self._ready)

    def __enter__(self) -> ObfuscatorPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _extend(self, values: list[mpz]) -> None:
        with self._filled:
            self._ready.extend(values)
            self._filled.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            room = self.capacity - len(self._ready)
            if room <= 0:
                self._wake.wait()
                self._wake.clear()
                continue
            self._extend(self.source.generate(min(room, self.batch)))


# ---------------------------------------------------------------------------------------------
# Encrypted arrays: homomorphic operations and the wire format
# ---------------------------------------------------------------------------------------------


class EncryptedArray:
    """A 1-D array of ciphertexts sharing a fixed-point exponent: c_i = Enc(m_i), x_i = m_i 2^e.

    Homomorphic identities [P99], all mod n^2:
        Enc(a) Enc(b) = Enc(a + b),  Enc(a) (1 + b n) = Enc(a + b),
        Enc(a)^k = Enc(k a) (k < 0: (Enc(a)^-1)^|k|),  Enc(a)^(2^s) = Enc(2^s a).
    Exponents are aligned down to the smaller one with 2^s-th powers.

    ``bound`` is an upper bound on every |m_i| (None: unknown, e.g. read from the wire without
    one). Each operation carries it forward and raises OverflowError as soon as it could
    exceed max_int, instead of letting a result wrap modulo n; Packing needs a known bound.
    With an unknown bound, only decryption's max_int band catches (most) overflows.

    numpy operands work on either side (``x + enc``, ``k * enc``, ``X.T @ enc``) because
    __array_ufunc__ = None makes numpy defer to these methods.
    """

    __array_ufunc__ = None

    def __init__(self, public_key: PublicKey, ciphertexts: list[mpz], exponent: int, bound: int | None = None) -> None:
        self.public_key = public_key
        self.ciphertexts = ciphertexts
        self.exponent = int(exponent)
        self.bound = None if bound is None else int(public_key._checked_bound(bound))

    # -- wire format ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Each ciphertext big-endian in exactly public_key.ciphertext_width bytes, concatenated.

        The exponent (and bound, if the receiver needs it) travel beside the bytes.
        """
        return _ciphertexts_to_bytes(self.public_key, self.ciphertexts)

    @classmethod
    def from_bytes(
        cls, public_key: PublicKey, data: bytes, exponent: int, bound: int | None = None
    ) -> EncryptedArray:
        """Parse to_bytes output; InvalidCiphertextError on a wrong length, c = 0, c >= n^2 or gcd(c, n) != 1."""
        return cls(public_key, _ciphertexts_from_bytes(public_key, data), exponent, bound)

    # -- homomorphic arithmetic ----------------------------------------------------------------

    def __add__(self, other: EncryptedArray | FixedPoint | npt.ArrayLike) -> EncryptedArray:
        """Enc(a) + Enc(b) -> Enc(a) Enc(b); Enc(a) + b -> Enc(a) (1 + b n)."""
        nsquare = self.public_key.nsquare
        if isinstance(other, EncryptedArray):
            self._check_compatible(other)
            exponent = min(self.exponent, other.exponent)
            a, b = self.rescale(exponent), other.rescale(exponent)
            cts = [x * y % nsquare for x, y in zip(a.ciphertexts, b.ciphertexts, strict=True)]
            return EncryptedArray(self.public_key, cts, exponent, _add_bounds(a.bound, b.bound))
        plain = other if isinstance(other, FixedPoint) else FixedPoint.encode(other, exponent=self.exponent)
        a = self.rescale(min(self.exponent, plain.exponent))
        mantissas = self._broadcast(_shift_to(plain, a.exponent).tolist())
        largest = self.public_key._checked_bound(max(map(abs, mantissas), default=0))
        n = self.public_key.n
        cts = [c * (m % n * n + 1) % nsquare for c, m in zip(a.ciphertexts, mantissas, strict=True)]
        return EncryptedArray(self.public_key, cts, a.exponent, _add_bounds(a.bound, largest))

    __radd__ = __add__

    def __neg__(self) -> EncryptedArray:
        """Enc(-a) = Enc(a)^(-1) mod n^2."""
        nsquare = self.public_key.nsquare
        return EncryptedArray(self.public_key, [gmpy2.invert(c, nsquare) for c in self.ciphertexts],
                              self.exponent, self.bound)

    def __sub__(self, other: EncryptedArray | FixedPoint | npt.ArrayLike) -> EncryptedArray:
        if isinstance(other, EncryptedArray):
            return self + (-other)
        if isinstance(other, FixedPoint):
            return self + FixedPoint(-other.mantissas, other.exponent)
        return self + (-np.asarray(other, dtype=np.float64))

    def __rsub__(self, other: FixedPoint | npt.ArrayLike) -> EncryptedArray:
        return (-self) + other

    def multiply(self, scalars: FixedPoint | npt.ArrayLike, *, precision: int = SCALAR_PRECISION) -> EncryptedArray:
        """Element-wise Enc(a_i) * k_i = Enc(a_i)^(k_i) mod n^2 (a scalar k broadcasts).

        Scalars are fixed-point with ``precision`` significant bits relative to max|k| and
        trimmed (FixedPoint.encode(trim=True)), so each modular power has an exponent of at
        most ``precision`` bits; a negative k uses the inverse, (c^-1)^|k| (gmpy2.powmod with
        a negative exponent), never the n-bit exponent n - |k|. Rounding the scalars costs at
        most |a_i| max|k| 2^-precision per element (an absolute, not relative, error: pass
        precision=53, or a FixedPoint, to multiply by floats exactly).
        """
        ks = scalars if isinstance(scalars, FixedPoint) else FixedPoint.encode(scalars, precision=precision, trim=True)
        exponents = self._broadcast(ks.tolist())
        nsquare = self.public_key.nsquare
        cts = [gmpy2.powmod(c, k, nsquare) for c, k in zip(self.ciphertexts, exponents, strict=True)]
        bound = _scale_bound(self.bound, max(map(abs, exponents), default=0))
        return EncryptedArray(self.public_key, cts, self.exponent + ks.exponent, bound)

    def __mul__(self, scalars: FixedPoint | npt.ArrayLike) -> EncryptedArray:
        return self.multiply(scalars)

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> EncryptedArray:
        return self.multiply(1.0 / np.asarray(scalar, dtype=np.float64))

    def rmatmul(self, matrix: npt.ArrayLike, *, precision: int = MATRIX_PRECISION) -> EncryptedArray:
        """matrix @ self for a plaintext (rows x len(self)) matrix: Enc(sum_i A_ji d_i) per row j.

        This is the gradient X^T [[d]] of vertical logistic regression (pass X.T, or write
        ``X.T @ enc_d``). A is fixed-point with ``precision`` bits relative to max|A| and one
        shared exponent, so the result has exponent e_d + e_A and absolute error at most
        sum_i |d_i| 2^(e_A - 1) per row from rounding A. Each row is a product of powers

            prod_i c_i^(|A_ji|) over c_i = Enc(d_i) for A_ji >= 0 and Enc(d_i)^-1 otherwise,

        computed with Pippenger's bucket method [Pip76] in windows of w bits (w minimising
        ceil(b/w)(N + 2^(w+1)) for b-bit exponents): about N + 2^(w+1) multiplications per
        window instead of a b-bit exponentiation per element.
        """
        encoded = FixedPoint.encode(np.asarray(matrix, dtype=np.float64), precision=precision, trim=True)
        a = encoded.mantissas
        if a.ndim != 2 or a.shape[1] != len(self):
            raise ValueError(f"matrix of shape {a.shape} cannot multiply an encrypted vector of length {len(self)}")
        if a.dtype != np.int64:
            raise ValueError(f"rmatmul precision must be < 62 bits, got {precision}")
        nsquare = self.public_key.nsquare
        negative_columns = np.any(a < 0, axis=0).tolist()
        inverses = [gmpy2.invert(c, nsquare) if neg else c for c, neg in zip(self.ciphertexts, negative_columns)]
        magnitudes = np.abs(a)
        window = _bucket_window(int(magnitudes.max(initial=0)).bit_length(), a.shape[1])
        cts = [
            _multi_power(
                [c if k >= 0 else inv for c, inv, k in zip(self.ciphertexts, inverses, row.tolist())],
                magnitude_row, nsquare, window,
            )
            for row, magnitude_row in zip(a, magnitudes)
        ]
        largest_row_sum = int(max(magnitudes.sum(axis=1, dtype=object), default=0))
        return EncryptedArray(self.public_key, cts, self.exponent + encoded.exponent,
                              _scale_bound(self.bound, largest_row_sum))

    def __rmatmul__(self, matrix: npt.ArrayLike) -> EncryptedArray:
        return self.rmatmul(matrix)

    def sum(self) -> EncryptedArray:
        """Enc(sum_i a_i) = prod_i Enc(a_i) mod n^2, as a length-1 array."""
        nsquare, total = self.public_key.nsquare, mpz(1)
        for c in self.ciphertexts:
            total = total * c % nsquare
        return EncryptedArray(self.public_key, [total], self.exponent, _scale_bound(self.bound, len(self)))

    def rescale(self, exponent: int) -> EncryptedArray:
        """The same values at a lower (or equal) exponent: Enc(m)^(2^s) = Enc(2^s m), s = e - exponent."""
        shift = self.exponent - exponent
        if shift < 0:
            raise ValueError("an encrypted array can only move to a lower exponent (more fractional bits)")
        if shift == 0:
            return self
        cts = gmpy2.powmod_base_list(self.ciphertexts, mpz(1) << shift, self.public_key.nsquare)
        return EncryptedArray(self.public_key, cts, exponent, _scale_bound(self.bound, 1 << shift))

    def rerandomize(self, pool: ObfuscatorPool | None = None) -> EncryptedArray:
        """Enc(m) r'^n with fresh obfuscators: the same plaintexts, unlinkable to the inputs.

        Use before sending a result derived from someone else's ciphertexts back to them:
        the encryptor knows its own r, and Enc(a)^k (1 + b n) still carries r^k.
        """
        source = pool.take if pool is not None else self.public_key.obfuscator.generate
        nsquare = self.public_key.nsquare
        cts = [c * r % nsquare for c, r in zip(self.ciphertexts, source(len(self)), strict=True)]
        return EncryptedArray(self.public_key, cts, self.exponent, self.bound)

    @classmethod
    def concatenate(cls, arrays: Sequence[EncryptedArray]) -> EncryptedArray:
        """One array of all elements, at the smallest exponent among the parts."""
        if not arrays:
            raise ValueError("nothing to concatenate")
        exponent = min(part.exponent for part in arrays)
        parts = [part.rescale(exponent) for part in arrays]
        for part in parts[1:]:
            parts[0]._check_compatible(part, same_length=False)
        cts = [c for part in parts for c in part.ciphertexts]
        bounds = [part.bound for part in parts]
        return cls(arrays[0].public_key, cts, exponent, None if None in bounds else max(bounds))

    # -- container protocol --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ciphertexts)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> EncryptedArray:
        """A sub-array (an int gives length 1; index arrays select rows, e.g. a mini-batch)."""
        if isinstance(index, slice):
            cts = self.ciphertexts[index]
        elif isinstance(index, int | np.integer):
            cts = [self.ciphertexts[index]]
        else:
            cts = [self.ciphertexts[i] for i in np.asarray(index, dtype=np.int64).tolist()]
        return EncryptedArray(self.public_key, cts, self.exponent, self.bound)

    def __repr__(self) -> str:
        return f"EncryptedArray(len={len(self)}, exponent={self.exponent}, key={self.public_key!r})"

    def _check_compatible(self, other: EncryptedArray, *, same_length: bool = True) -> None:
        if other.public_key != self.public_key:
            raise ValueError("encrypted arrays under different public keys")
        if same_length and len(other) != len(self):
            raise ValueError(f"length mismatch: {len(self)} and {len(other)}")

    def _broadcast(self, values: list[int]) -> list[int]:
        if len(values) == 1 and len(self) != 1:
            return values * len(self)
        if len(values) != len(self):
            raise ValueError(f"length mismatch: {len(self)} ciphertexts and {len(values)} plaintexts")
        return values


def _add_bounds(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _scale_bound(bound: int | None, factor: int) -> int | None:
    return None if bound is None else bound * factor


def _shift_to(encoded: FixedPoint, exponent: int) -> FixedPoint:
    """Exact re-expression of a plaintext at a lower (or equal) exponent."""
    shift = encoded.exponent - exponent
    if shift < 0:
        raise ValueError("internal: plaintext exponent below the target")
    return FixedPoint.from_ints([m << shift for m in encoded.tolist()], exponent)


def _ciphertexts_to_bytes(public_key: PublicKey, ciphertexts: Sequence[mpz]) -> bytes:
    width = public_key.ciphertext_width
    return b"".join(c.to_bytes(width, "big") for c in ciphertexts)


def _ciphertexts_from_bytes(public_key: PublicKey, data: bytes) -> list[mpz]:
    width, n, nsquare = public_key.ciphertext_width, public_key.n, public_key.nsquare
    if len(data) % width:
        raise InvalidCiphertextError(
            f"{len(data)} bytes is not a whole number of {width}-byte ciphertexts for a {public_key.key_bits}-bit key")
    cts = [mpz.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]
    for index, c in enumerate(cts):
        if c >= nsquare:
            raise InvalidCiphertextError(f"ciphertext {index} is not below n^2")
        if gmpy2.gcd(c, n) != 1:
            raise InvalidCiphertextError(f"ciphertext {index} is not coprime to n (zero or tampered)")
    return cts


def _bucket_window(exponent_bits: int, count: int) -> int:
    """The window w minimising ceil(b/w) (count + 2^(w+1)): Pippenger's cost in multiplications."""
    if exponent_bits == 0:
        return 1
    return min(range(1, 17), key=lambda w: -(-exponent_bits // w) * (count + (2 << w)))


def _multi_power(bases: Sequence[mpz], exponents: np.ndarray, modulus: mpz, window: int) -> mpz:
    """prod_i bases[i]^exponents[i] mod modulus (exponents >= 0, int64) by the bucket method [Pip76].

    For each w-bit window t from the top: bucket B_d collects the bases whose digit is d;
    prod_d B_d^d comes from two running products (running = prod_{d' >= d} B_d', total *=
    running); the result is squared w times between windows.
    """
    top = int(exponents.max(initial=0)).bit_length()
    mask = (1 << window) - 1
    result: mpz | None = None
    for shift in range(((top - 1) // window) * window if top else -1, -1, -window):
        if result is not None:
            result = gmpy2.powmod(result, 1 << window, modulus)
        buckets: list[mpz | None] = [None] * (mask + 1)
        for base, digit in zip(bases, ((exponents >> shift) & mask).tolist()):
            if digit:
                held = buckets[digit]
                buckets[digit] = base if held is None else held * base % modulus
        running: mpz | None = None
        total: mpz | None = None
        for held in reversed(buckets[1:]):
            if held is not None:
                running = held if running is None else running * held % modulus
            if running is not None:
                total = running if total is None else total * running % modulus
        if total is not None:
            result = total if result is None else result * total % modulus
    return mpz(1) if result is None else result


# ---------------------------------------------------------------------------------------------
# Packing: several values per plaintext, one decryption for all of them
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packing:
    """k slots of B bits in one plaintext [BC20]: P = sum_j v_j 2^(jB), j = 0 .. k-1.

    Homomorphically, Enc(P) = prod_j Enc(v_j)^(2^(jB)), by Horner's rule from the top slot:
    acc <- acc^(2^B) Enc(v_j), (k-1) B squarings per packed ciphertext. One decryption then
    yields k values, so the arbiter decrypts a masked gradient k times faster.

    Slot bound / overflow rule: every slot value must satisfy |v| < 2^(B-1), and
    k B <= bits(n) - 2, so |P| < 2^(kB-1) (1 + 2^-B + ...) <= n/4 < n/2 and P is recovered
    from P mod n by sign, then slots from the bottom with a borrow for negative ones. A
    value outside its slot silently corrupts its neighbours, so pack() refuses arrays whose
    tracked ``bound`` is unknown (ValueError) or does not fit (OverflowError). For
    statistically masked values (|v| < 2^b plus a mask below 2^(b+sigma)) B = b + sigma + 2.
    """

    slot_bits: int
    slots: int

    def __post_init__(self) -> None:
        if self.slot_bits < 2 or self.slots < 1:
            raise ValueError("a packing needs slot_bits >= 2 and at least one slot")

    @classmethod
    def for_key(cls, public_key: PublicKey, slot_bits: int) -> Packing:
        """As many B-bit slots as the rule k B <= bits(n) - 2 allows."""
        slots = (public_key.key_bits - 2) // slot_bits
        if slots < 1:
            raise ValueError(f"{slot_bits}-bit slots do not fit a {public_key.key_bits}-bit key")
        return cls(slot_bits, slots)

    @classmethod
    def for_array(cls, array: EncryptedArray) -> Packing:
        """The narrowest slots that hold every value of ``array`` (B = bits(bound) + 1), as many as fit."""
        if array.bound is None:
            raise ValueError("the array's bound is unknown; pass bound= when reading it, or choose slot_bits")
        return cls.for_key(array.public_key, int(array.bound).bit_length() + 1)

    def pack(self, array: EncryptedArray) -> PackedArray:
        """Enc(sum_j v_j 2^(jB)) per group of ``slots`` consecutive elements of ``array``."""
        key = array.public_key
        if self.slots * self.slot_bits > key.key_bits - 2:
            raise ValueError(f"{self.slots} x {self.slot_bits}-bit slots exceed a {key.key_bits}-bit key")
        if array.bound is None:
            raise ValueError("cannot pack an array whose bound is unknown: pass bound= to from_bytes")
        if array.bound >= 1 << (self.slot_bits - 1):
            raise OverflowError(f"values up to {int(array.bound).bit_length()} bits do not fit "
                                f"{self.slot_bits}-bit signed slots")
        nsquare, scale = key.nsquare, mpz(1) << self.slot_bits
        packed = []
        for start in range(0, len(array), self.slots):
            group = array.ciphertexts[start : start + self.slots]
            acc = group[-1]
            for c in reversed(group[:-1]):
                acc = gmpy2.powmod(acc, scale, nsquare) * c % nsquare
            packed.append(acc)
        return PackedArray(key, packed, array.exponent, len(array), self)

    def pack_ints(self, values: Sequence[int]) -> list[int]:
        """The plaintext-side packing: sum_j v_j 2^(jB) per group (checks each slot bound)."""
        half = 1 << (self.slot_bits - 1)
        if any(abs(v) >= half for v in values):
            raise OverflowError(f"a value does not fit a {self.slot_bits}-bit signed slot")
        return [
            sum(int(v) << (j * self.slot_bits) for j, v in enumerate(values[start : start + self.slots]))
            for start in range(0, len(values), self.slots)
        ]

    def unpack_ints(self, plaintexts: Sequence[int], count: int) -> list[int]:
        """Inverse of pack_ints for signed plaintexts: the first ``count`` slot values."""
        mask, half = (1 << self.slot_bits) - 1, 1 << (self.slot_bits - 1)
        values: list[int] = []
        for plaintext in plaintexts:
            for _ in range(min(self.slots, count - len(values))):
                slot = plaintext & mask
                if slot >= half:
                    slot -= 1 << self.slot_bits
                values.append(slot)
                plaintext = (plaintext - slot) >> self.slot_bits
        if len(values) != count:
            raise ValueError(f"{len(plaintexts)} packed plaintexts hold fewer than {count} values")
        return values


@dataclass(frozen=True)
class PackedArray:
    """Ciphertexts of packed plaintexts, with what the decryptor needs to unpack them."""

    public_key: PublicKey
    ciphertexts: list[mpz]
    exponent: int
    count: int
    packing: Packing

    def to_bytes(self) -> bytes:
        """Same fixed-width format as EncryptedArray.to_bytes; exponent, count and packing travel beside."""
        return _ciphertexts_to_bytes(self.public_key, self.ciphertexts)

    @classmethod
    def from_bytes(cls, public_key: PublicKey, data: bytes, exponent: int, count: int, packing: Packing) -> PackedArray:
        """Parse and validate (InvalidCiphertextError), checking ``count`` matches the ciphertexts."""
        cts = _ciphertexts_from_bytes(public_key, data)
        if len(cts) != -(-count // packing.slots):
            raise InvalidCiphertextError(f"{len(cts)} packed ciphertexts cannot hold exactly {count} values")
        return cls(public_key, cts, exponent, count, packing)
