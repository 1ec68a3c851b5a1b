"""Row alignment of a vertical job: RSA blind-signature PSI between the guest and each host.

fedcore.crypto.psi has the two-party steps; this module runs them over a federation
context with one guest (requester) and any number of hosts (each a signer with its own
fresh RSA key), as FATE's RSA intersection does with several hosts:

    host h -> guest   (n_h, e_h)                              tag.rsa_key
    host h -> guest   sorted tags of the host's own ids        tag.host_tags
    guest -> host h   its ids blinded under host h's key       tag.blinded
    host h -> guest   the blinded ids signed                   tag.signed
    guest             I = guest ids present at every host
    guest -> host h   host h's tags of I, in the canonical order   tag.intersection

Each host learns only the final intersection I (never its pairwise one with the guest)
and nothing of the other hosts. The canonical order is ascending by the first host's
tag: pseudorandom, so it reveals no party's row order (with one host it is exactly
psi.canonical_order). The guest sends every host its tags in that order, so all parties
end with their rows of I in the same order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from fedcore.crypto.psi import (
    DEFAULT_KEY_BITS,
    RsaPsiRequester,
    RsaPsiSigner,
    canonical_order,
    int_width,
    pack_ints,
    pack_tags,
    unpack_ints,
    unpack_tags,
)
from fedcore.federation import FederationContext, ProtocolError


@dataclass(frozen=True)
class Alignment:
    """This party's row indices of the intersection, in the canonical order, and how long PSI took."""

    rows: list[int]
    seconds: float

    @property
    def size(self) -> int:
        """The number of aligned rows."""
        return len(self.rows)


def align_guest(ctx: FederationContext, ids: Sequence[str], host_ids: Sequence[str], *, tag: str = "psi") -> Alignment:
    """The guest's side: blind its ids to every host, intersect, tell each host the result."""
    started = time.monotonic()
    row_of = {identifier: row for row, identifier in enumerate(ids)}
    requesters = {}
    for host in host_ids:
        n, e = _rsa_key(ctx.get(f"{tag}.rsa_key", host, list), host)
        requester = requesters[host] = RsaPsiRequester(n, e)
        ctx.put(f"{tag}.blinded", host, pack_ints(requester.blind(ids), int_width(n)))
    tag_by_id: dict[str, dict[str, bytes]] = {}
    for host, requester in requesters.items():
        n = requester.public_key.n
        host_tags = unpack_tags(ctx.get(f"{tag}.host_tags", host, bytes))
        requester.unblind_and_hash(unpack_ints(ctx.get(f"{tag}.signed", host, bytes), int_width(n), n))
        shared_ids, shared_tags = requester.intersect(host_tags)
        tag_by_id[host] = dict(zip(shared_ids, shared_tags, strict=True))
    common = set(ids).intersection(*tag_by_id.values()) if host_ids else set()
    order = sorted(common, key=lambda identifier: tag_by_id[host_ids[0]][identifier])
    for host in host_ids:
        ctx.put(f"{tag}.intersection", host, pack_tags([tag_by_id[host][identifier] for identifier in order]))
    return Alignment([row_of[identifier] for identifier in order], time.monotonic() - started)


def align_host(
    ctx: FederationContext, ids: Sequence[str], guest_id: str, key_bits: int = DEFAULT_KEY_BITS, *, tag: str = "psi"
) -> Alignment:
    """A host's side: sign the guest's blinded ids with a fresh key, publish own tags, learn the intersection."""
    started = time.monotonic()
    signer = RsaPsiSigner(key_bits)
    n, e = signer.public_key()
    ctx.put(f"{tag}.rsa_key", guest_id, [n, e])
    ctx.put(f"{tag}.host_tags", guest_id, pack_tags(signer.hashed_own_signatures(ids)))
    blinded = unpack_ints(ctx.get(f"{tag}.blinded", guest_id, bytes), int_width(n), n)
    ctx.put(f"{tag}.signed", guest_id, pack_ints(signer.sign_blinded(blinded), int_width(n)))
    shared_tags = unpack_tags(ctx.get(f"{tag}.intersection", guest_id, bytes))
    id_by_tag = dict(zip(canonical_order(shared_tags), signer.intersection_from(shared_tags), strict=True))
    row_of = {identifier: row for row, identifier in enumerate(ids)}
    return Alignment([row_of[id_by_tag[shared]] for shared in shared_tags], time.monotonic() - started)


def _rsa_key(value: list[object], host: str) -> tuple[int, int]:
    """The signer's (n, e) from the list it sent."""
    parts = [part for part in value if isinstance(part, int) and not isinstance(part, bool)]
    if len(parts) != 2 or len(value) != 2:
        raise ProtocolError(f"{host} sent an RSA public key that is not [n, e]")
    return parts[0], parts[1]
