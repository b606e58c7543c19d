"""Which block of a pool a node takes next. Pure: the datastore's compare-and-swap
(create only if absent) decides who wins a block; this only proposes candidates."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

from fastpath.cluster.objects import Pool


def candidates(pool: Pool, taken: set[str], avoid: Sequence[str] = ()) -> Iterator[str]:
    """Free blocks of `pool` in address order: not taken, overlapping nothing in `avoid`
    (pod CIDRs nodes were configured with, outside any pool)."""
    net = ipaddress.IPv4Network(pool.cidr)
    avoid_nets = [ipaddress.IPv4Network(a) for a in avoid]
    for b in net.subnets(new_prefix=pool.block_prefix):
        if str(b) in taken or any(b.overlaps(a) for a in avoid_nets):
            continue
        yield str(b)
