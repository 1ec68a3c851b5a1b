"""Private set intersection from RSA blind signatures.

The protocol is De Cristofaro & Tsudik 2010, "Practical Private Set Intersection
Protocols with Linear Complexity" (FC 2010), Figure 2 (the RSA blind-signature
PSI), in the form FATE's RSA intersect uses (``RsaIntersectionHost`` and
``RsaIntersectionGuest``, unified mode). This module has only the protocol steps,
as plain functions of plain values. The services carry the messages.

Roles. The *signer* holds an RSA key. The *requester* blinds its ids so the signer
can sign them without seeing them. In fedsuite the **host is the signer and the
guest is the requester**, as in FATE:

* The guest starts a vertical job and holds the labels. It needs the intersection
  before training, and the requester is the side that learns it first (step 4).
  The requester then tells the signer (step 5), just as FATE's guest does when
  ``sync_intersect_ids`` is set.
* Cost fits the usual shape: a guest with fewer labelled rows and a host with a
  larger user base. Each requester id costs two ``width(n)`` values on the wire
  (256 or 512 bytes), and each signer id costs one 32-byte tag. The signer does
  one CRT private-key exponentiation per id of *both* sets. The requester does only
  cheap public-exponent work (e = 65537).

If a deployment has these the other way round, swap the classes. They are
role-neutral.

Messages, with ``H`` the full-domain hash into Z_n and ``H'`` the tag hash::

    requester (ids A)                              signer (ids B, key n, e, d)
                                   <- 1. (n, e)
    2. y_a = H(a) * r_a^e mod n    ->
                                   <- 3. z_a = y_a^d mod n      (same order as y)
                                   <- 3. T_B = sorted{ H'(H(b)^d mod n) : b in B }
    4. s_a = z_a * r_a^-1 = H(a)^d mod n,  t_a = H'(s_a)
       A n B = { a : t_a in T_B }
    5. T = sorted{ t_a : a in A n B } ->
                                      signer maps T back to its own ids

Both sides end with the intersection in the **canonical order**, which is ascending
order of the tag ``H'``. Tags are pseudorandom, so this order reveals neither side's
row order. The signer's tags are sent sorted as well. A sorted list is a function of
the set alone, so it hides the row order as well as a shuffle would, and it is
deterministic.

What each side learns. The signer sees only ``y_a``, which is uniform in Z_n^* for a
fresh uniform r_a, because x -> x^e permutes Z_n^*. Then it sees the tags of the
intersection. The requester sees ``z_a`` and the signer's tags. A tag of an id
outside A is H' of an RSA signature the requester cannot compute, so it reveals
nothing beyond the set's size (RSA assumption, H and H' random oracles).

This is **semi-honest** security, like FATE. A signer with a malformed key
(gcd(e, phi(n)) != 1) could weaken the blinding. A requester could report only part
of the intersection in step 5, and the signer can check only that every tag reported
is one of its own. A requester can get the signature of any id it chooses. That is
the same as having the id in its set, and it is why the signer should sign one batch
per job, no larger than the requester's declared row count. Generate a fresh key
for each job so tags cannot be linked across jobs.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gmpy2
from cryptography.hazmat.primitives.asymmetric import rsa
from gmpy2 import mpz

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_KEY_BITS",
    "TAG_BYTES",
    "PsiError",
    "WireFormatError",
    "InvalidSignatureError",
    "PsiStateError",
    "hash_ids",
    "tag_signatures",
    "canonical_order",
    "RsaPublicKey",
    "RsaPrivateKey",
    "RsaPsiSigner",
    "RsaPsiRequester",
    "int_width",
    "pack_ints",
    "unpack_ints",
    "pack_tags",
    "unpack_tags",
    "PsiResult",
    "run_psi",
]

DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 1024
"""1024 bits is for tests and benchmarks. Jobs use the 2048-bit default."""

PUBLIC_EXPONENT = 65537
TAG_BYTES = 32
"""Size of an H' tag: one SHA-256 digest."""

_HASH_DOMAIN = b"fedsuite/psi/rsa/v1/H\x00"
_TAG_DOMAIN = b"fedsuite/psi/rsa/v1/H'\x00"
_HASH_EXTRA_BYTES = 16
"""H outputs 128 bits more than n has, so the bias of reducing mod n is below 2^-128."""


# --------------------------------------------------------------------------- errors


class PsiError(ValueError):
    """A PSI input or peer message that is not acceptable."""


class WireFormatError(PsiError):
    """A wire blob is malformed: it has the wrong length, or a value is outside 1..n-1."""


class InvalidSignatureError(PsiError):
    """A signature does not verify (s^e != H(id) mod n): the reply was tampered with or is faulty."""


class PsiStateError(RuntimeError):
    """A protocol step was called before the step it depends on. This is a caller bug, not a bad message."""


# --------------------------------------------------------------------------- hashes


def hash_ids(ids: Sequence[str], n: int) -> list[mpz]:
    """Apply H to each id: a full-domain hash of the id into Z_n.

    This is the FDH of Bellare & Rogaway 1996 (De Cristofaro & Tsudik's H). We take
    MGF1-SHA-256 (RFC 8017, B.2.1) of ``domain || utf8(id)``, 16 bytes longer than n,
    and reduce it mod n. The domain prefix keeps H apart from H'. Ids compare as exact
    strings: "007" and "7" differ, and Unicode is not normalised. Lone surrogates are
    encoded with ``surrogatepass``, so every Python str has a hash.
    """
    modulus = mpz(n)
    length = int_width(n) + _HASH_EXTRA_BYTES
    blocks = -(-length // hashlib.sha256().digest_size)
    hashes = []
    for identifier in ids:
        seed = hashlib.sha256(_HASH_DOMAIN)
        seed.update(identifier.encode("utf-8", "surrogatepass"))
        stream = bytearray()
        for counter in range(blocks):
            block = seed.copy()
            block.update(counter.to_bytes(4, "big"))
            stream += block.digest()
        hashes.append(mpz(int.from_bytes(stream[:length], "big")) % modulus)
    return hashes


def tag_signatures(signatures: Sequence[int], n: int) -> list[bytes]:
    """Apply H' to each signature: SHA-256 of ``domain || s``, with s written as width(n) big-endian bytes.

    This is De Cristofaro & Tsudik's H'. The signer sends tags rather than raw
    signatures, so a signature never leaves the party that can recompute it.
    """
    width = int_width(n)
    return [hashlib.sha256(_TAG_DOMAIN + int(s).to_bytes(width, "big")).digest() for s in signatures]


def canonical_order(tags: Iterable[bytes]) -> list[bytes]:
    """Put tags in the order both sides use for the intersection: ascending by tag.

    Tags are pseudorandom, so this order depends on neither side's row order.
    """
    return sorted(tags)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class RsaPublicKey:
    """The signer's public key (n, e). It is all the requester ever sees of the key."""

    n: int
    e: int

    def __post_init__(self) -> None:
        """Reject keys that are plainly wrong. Semi-honest model: a well-formed but malicious key is not detected."""
        if self.n % 2 == 0 or self.n.bit_length() < MIN_KEY_BITS:
            raise PsiError(f"public key rejected: n must be an odd modulus of at least {MIN_KEY_BITS} bits")
        if self.e % 2 == 0 or not 3 <= self.e < self.n:
            raise PsiError("public key rejected: e must be odd and in 3..n-1")

    @property
    def width(self) -> int:
        """Bytes per value of Z_n on the wire."""
        return int_width(self.n)

    def power_e(self, values: Sequence[int]) -> list[mpz]:
        """Return x^e mod n for each x. This is RSA's public operation, used to blind (r^e) and to verify (s^e).

        gmpy2's list powmod does the whole batch in C.
        """
        return gmpy2.powmod_base_list(values, self.e, self.n)

    def check_signatures(self, signatures: Sequence[int], messages: Sequence[int]) -> None:
        """Raise InvalidSignatureError unless s^e = m mod n for every pair (RSAVP1, RFC 8017 5.2.2)."""
        for position, (recovered, message) in enumerate(zip(self.power_e(signatures), messages, strict=True)):
            if recovered != message:
                raise InvalidSignatureError(f"signature at position {position} does not verify")


class RsaPrivateKey:
    """The signer's private exponent d, kept as its CRT parts (p, q, d mod p-1, d mod q-1, q^-1 mod p).

    The key comes from the ``cryptography`` package. The arithmetic is done with gmpy2.
    """

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        numbers = key.private_numbers()
        self.public_key = RsaPublicKey(numbers.public_numbers.n, numbers.public_numbers.e)
        self._p, self._q = mpz(numbers.p), mpz(numbers.q)
        self._d_p, self._d_q = mpz(numbers.dmp1), mpz(numbers.dmq1)
        self._q_inv = mpz(numbers.iqmp)

    @classmethod
    def generate(cls, key_bits: int = DEFAULT_KEY_BITS) -> RsaPrivateKey:
        """Make a fresh key with e = 65537. Generate one per job so tags cannot be linked across jobs."""
        if key_bits < MIN_KEY_BITS:
            raise ValueError(f"key_bits must be at least {MIN_KEY_BITS}, got {key_bits}")
        return cls(rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=key_bits))

    def sign(self, values: Sequence[int]) -> list[int]:
        """Return x^d mod n for each x, computed by CRT and recombined with Garner's formula.

        s = m_q + q * ((m_p - m_q) * q^-1 mod p), where m_p = x^(d mod p-1) mod p and
        m_q = x^(d mod q-1) mod q. Each half costs about an eighth of a full x^d mod n.
        The two halves run in two threads, because gmpy2's list powmod releases the GIL.
        Each signature is checked with s^e before it is returned. A faulty CRT signature
        would reveal a factor of n (Boneh, DeMillo & Lipton 1997), and the check costs
        a few percent of the signing.
        """
        with ThreadPoolExecutor(max_workers=2) as pool:
            half_p = pool.submit(gmpy2.powmod_base_list, values, self._d_p, self._p)
            half_q = pool.submit(gmpy2.powmod_base_list, values, self._d_q, self._q)
            mod_p, mod_q = half_p.result(), half_q.result()
        p, q, q_inv = self._p, self._q, self._q_inv
        signatures = [m_q + ((m_p - m_q) * q_inv % p) * q for m_p, m_q in zip(mod_p, mod_q)]
        self.public_key.check_signatures(signatures, values)
        return [int(s) for s in signatures]


# --------------------------------------------------------------------------- roles


class RsaPsiSigner:
    """The party that holds the RSA key (the host in fedsuite). Steps 1, 3 and the end of step 5.

    It signs the requester's blinded values without learning them. It publishes only
    keyed tags of its own ids. At the end it learns the intersection, from the tags
    the requester reports back.
    """

    def __init__(self, key_bits: int = DEFAULT_KEY_BITS, *, private_key: RsaPrivateKey | None = None) -> None:
        """Generate a key of ``key_bits`` bits, or use ``private_key`` (and ignore ``key_bits``).

        Pass ``private_key`` only to share one key between tests, never between jobs.
        """
        self._key = private_key if private_key is not None else RsaPrivateKey.generate(key_bits)
        self._id_by_tag: dict[bytes, str] | None = None

    def public_key(self) -> tuple[int, int]:
        """Step 1: the (n, e) to send to the requester. d, p and q never leave this object."""
        return self._key.public_key.n, self._key.public_key.e

    def sign_blinded(self, values: Sequence[int]) -> list[int]:
        """Step 3a: return y^d mod n for each blinded y, in the order received.

        The values are uniform in Z_n^*, so this reveals nothing about the requester's
        ids. Values outside 1..n-1 are refused.
        """
        _check_range(values, self._key.public_key.n)
        return self._key.sign(values)

    def hashed_own_signatures(self, ids: Sequence[str]) -> list[bytes]:
        """Step 3b: return the tags H'(H(b)^d mod n) of this signer's ids, sorted so that row order is not revealed.

        No raw id is sent. The tag of each id is remembered so the intersection the
        requester reports can be mapped back to ids (step 5).
        """
        own_ids = _distinct_ids(ids)
        n = self._key.public_key.n
        tags = tag_signatures(self._key.sign(hash_ids(own_ids, n)), n)
        self._id_by_tag = dict(zip(tags, own_ids))
        return canonical_order(tags)

    def intersection_from(self, shared_tags: Iterable[bytes]) -> list[str]:
        """Step 5: map the requester's intersection tags to this signer's ids, in canonical order.

        Every tag must be one of this signer's, and none may repeat. This signer cannot
        check that the requester reported the whole intersection (semi-honest model).
        """
        if self._id_by_tag is None:
            raise PsiStateError("call hashed_own_signatures() before intersection_from()")
        tags = list(shared_tags)
        if len(set(tags)) != len(tags):
            raise PsiError("the intersection repeats a tag")
        unknown = sum(tag not in self._id_by_tag for tag in tags)
        if unknown:
            raise PsiError(f"{unknown} of the {len(tags)} intersection tags are not this signer's")
        return [self._id_by_tag[tag] for tag in canonical_order(tags)]


@dataclass(frozen=True)
class _Blinding:
    """The requester's secrets for one run: its ids, their H values and the unblinders r^-1, all in row order."""

    ids: list[str]
    hashes: list[mpz]
    unblinders: list[mpz]


class RsaPsiRequester:
    """The party that blinds its ids (the guest in fedsuite). Steps 2, 4 and the start of step 5.

    It gets RSA signatures of its ids without revealing them, and it learns the
    intersection first.
    """

    def __init__(self, n: int, e: int) -> None:
        """Take the signer's public key (step 1). Implausible keys are rejected with PsiError."""
        self.public_key = RsaPublicKey(n, e)
        self._blinding: _Blinding | None = None
        self._id_by_tag: dict[bytes, str] | None = None

    def blind(self, ids: Sequence[str]) -> list[int]:
        """Step 2: return H(a) * r_a^e mod n for each id, with a fresh uniform r_a in Z_n^* per id and per run.

        r_a^e is uniform in Z_n^*, so the product hides H(a) perfectly (Chaum 1983).
        Calling this again starts a new run.
        """
        own_ids = _distinct_ids(ids)
        n = mpz(self.public_key.n)
        hashes = hash_ids(own_ids, n)
        factors, unblinders = _random_units(n, len(own_ids))
        blinded = [h * r_e % n for h, r_e in zip(hashes, self.public_key.power_e(factors))]
        self._blinding = _Blinding(own_ids, hashes, unblinders)
        self._id_by_tag = None
        return [int(y) for y in blinded]

    def unblind_and_hash(self, signed: Sequence[int]) -> list[bytes]:
        """Step 4a: recover s_a = z_a * r_a^-1 = H(a)^d mod n, verify it, and return the tags H'(s_a) in row order.

        A reply that was reordered, tampered with or computed with another key fails
        verification (InvalidSignatureError). Without this check it would silently
        produce a wrong intersection. The tags stay here and are never sent.
        """
        if self._blinding is None:
            raise PsiStateError("call blind() before unblind_and_hash()")
        blinding = self._blinding
        if len(signed) != len(blinding.ids):
            raise PsiError(f"expected {len(blinding.ids)} signed values, got {len(signed)}")
        n = mpz(self.public_key.n)
        _check_range(signed, n)
        signatures = [z * u % n for z, u in zip(signed, blinding.unblinders)]
        self.public_key.check_signatures(signatures, blinding.hashes)
        tags = tag_signatures(signatures, n)
        self._id_by_tag = dict(zip(tags, blinding.ids))
        return tags

    def intersect(self, signer_tags: Iterable[bytes]) -> tuple[list[str], list[bytes]]:
        """Step 4b: return the shared ids and their tags, both in canonical order.

        The tags are the message of step 5. The signer can map them to its own ids,
        and they say nothing about this side's other ids.
        """
        if self._id_by_tag is None:
            raise PsiStateError("call unblind_and_hash() before intersect()")
        shared = canonical_order(self._id_by_tag.keys() & set(signer_tags))
        return [self._id_by_tag[tag] for tag in shared], shared


def _distinct_ids(ids: Sequence[str]) -> list[str]:
    """Check that ids are strings without repeats. A repeated id has no single row to align."""
    own_ids = list(ids)
    wrong_type = next((type(i).__name__ for i in own_ids if not isinstance(i, str)), None)
    if wrong_type is not None:
        raise TypeError(f"ids must be str (so 7 and '7' cannot be confused), got {wrong_type}")
    repeats = len(own_ids) - len(set(own_ids))
    if repeats:
        raise PsiError(f"{repeats} ids repeat; the id column must be unique (deduplicate before PSI)")
    return own_ids


def _random_units(n: mpz, count: int) -> tuple[list[mpz], list[mpz]]:
    """Return ``count`` uniform values r of Z_n^* and their inverses r^-1 mod n.

    A draw that is not a unit (probability about 2^-(bits/2)) is drawn again.
    """
    factors: list[mpz] = []
    inverses: list[mpz] = []
    while len(factors) < count:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        try:
            inverse = gmpy2.invert(r, n)
        except ZeroDivisionError:
            continue
        factors.append(r)
        inverses.append(inverse)
    return factors, inverses


# --------------------------------------------------------------------------- wire


def int_width(modulus: int) -> int:
    """Bytes needed for any value below ``modulus``. This is the fixed field width on the wire."""
    return (int(modulus).bit_length() + 7) // 8


def pack_ints(values: Sequence[int], width: int) -> bytes:
    """Write values as one blob of fixed-width big-endian fields. Send ``width`` alongside it."""
    try:
        return b"".join(int(v).to_bytes(width, "big") for v in values)
    except OverflowError:
        raise WireFormatError(f"a value is negative or does not fit in {width} bytes") from None


def unpack_ints(blob: bytes, width: int, modulus: int) -> list[int]:
    """Read a blob written by pack_ints. The width must be that of ``modulus``, and each value must be in 1..modulus-1.

    0 is never an honest blinded value or signature, and values of n or more are not in Z_n.
    """
    if width != int_width(modulus):
        raise WireFormatError(f"field width {width} does not match the modulus (expected {int_width(modulus)})")
    values = [int.from_bytes(field, "big") for field in _fields(blob, width, "value")]
    _check_range(values, modulus)
    return values


def pack_tags(tags: Sequence[bytes]) -> bytes:
    """Write H' tags as one blob of 32-byte fields."""
    if any(len(tag) != TAG_BYTES for tag in tags):
        raise WireFormatError(f"every tag must be {TAG_BYTES} bytes")
    return b"".join(tags)


def unpack_tags(blob: bytes) -> list[bytes]:
    """Read a blob written by pack_tags."""
    return [bytes(field) for field in _fields(blob, TAG_BYTES, "tag")]


def _fields(blob: bytes, width: int, what: str) -> list[memoryview]:
    """Split a blob into fields of ``width`` bytes. A partial field means a truncated or padded message."""
    if width <= 0 or len(blob) % width:
        raise WireFormatError(f"{len(blob)} bytes is not a whole number of {width}-byte {what}s")
    view = memoryview(blob)
    return [view[start : start + width] for start in range(0, len(blob), width)]


def _check_range(values: Sequence[int], n: int) -> None:
    """Raise WireFormatError for the first value not in 1..n-1."""
    position = next((i for i, v in enumerate(values) if not 0 < v < n), None)
    if position is not None:
        raise WireFormatError(f"value at position {position} is outside 1..n-1")


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class PsiResult:
    """What each side ends with. The two lists are equal, in canonical order."""

    requester_ids: list[str]
    signer_ids: list[str]

    @property
    def size(self) -> int:
        """The intersection size."""
        return len(self.requester_ids)


def run_psi(
    requester_ids: Sequence[str],
    signer_ids: Sequence[str],
    *,
    key_bits: int = DEFAULT_KEY_BITS,
    signer: RsaPsiSigner | None = None,
) -> PsiResult:
    """Run both roles in one process, sending every message through the wire format.

    This is the in-memory reference driver for tests, benchmarks and the services that
    will carry these messages. In a job the two roles are different parties. Pass a
    ``signer`` to reuse its key (tests only). Otherwise a fresh ``key_bits`` key is made.
    """
    signer = signer if signer is not None else RsaPsiSigner(key_bits)
    n, e = signer.public_key()
    requester = RsaPsiRequester(n, e)
    width = int_width(n)

    blinded = unpack_ints(pack_ints(requester.blind(requester_ids), width), width, n)
    signed = unpack_ints(pack_ints(signer.sign_blinded(blinded), width), width, n)
    signer_tags = unpack_tags(pack_tags(signer.hashed_own_signatures(signer_ids)))

    requester.unblind_and_hash(signed)
    requester_view, shared_tags = requester.intersect(signer_tags)
    signer_view = signer.intersection_from(unpack_tags(pack_tags(shared_tags)))
    return PsiResult(requester_view, signer_view)
