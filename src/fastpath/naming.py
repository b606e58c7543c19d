"""Names of everything fastpath creates on a machine.

Everything starts with `fp-` (iptables chains with `FP-`), so that `fastpath down` finds
all of it and nothing else. An *instance* tag (FASTPATH_INSTANCE, a few lowercase
letters or digits) scopes the names further, `fp-<instance>-...`: two demo clusters, or
the tests of two packages, can then live on one machine without touching each other,
and `down` of one leaves the other alone. Without a tag the scope is all of `fp-`.

Kernel limits that shape the names: an interface name is at most 15 bytes (IFNAMSIZ 16
with the NUL); netns names are file names under /run/netns; cgroup names are
directory names.
"""

from __future__ import annotations

import hashlib
import os
import re

from fastpath.errors import UsageError

PREFIX = "fp-"
CHAIN_PREFIX = "FP-"
IFNAMSIZ = 15  # usable bytes of an interface name
BPF_PIN_ROOT = "/sys/fs/bpf/fastpath"

_INSTANCE_RE = re.compile(r"^[a-z0-9]{1,8}$")
_PART_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def instance() -> str:
    """The instance tag from FASTPATH_INSTANCE, or "" for the machine-wide scope."""
    tag = os.environ.get("FASTPATH_INSTANCE", "")
    if tag and not _INSTANCE_RE.match(tag):
        raise UsageError(f"FASTPATH_INSTANCE={tag!r}: use 1-8 lowercase letters or digits")
    return tag


def scope() -> str:
    """The prefix every name of this instance starts with: `fp-` or `fp-<tag>-`."""
    tag = instance()
    return f"{PREFIX}{tag}-" if tag else PREFIX


def name(*parts: str) -> str:
    """`fp-[<tag>-]part1-part2`, for netns, cgroups and other long-named objects."""
    for p in parts:
        if not _PART_RE.match(p):
            raise UsageError(f"invalid name part {p!r}: use lowercase letters, digits and '-'")
    return scope() + "-".join(parts)


def owned(candidate: str) -> bool:
    """Whether `candidate` (a netns, cgroup or pin name) belongs to this instance's scope."""
    return candidate.startswith(scope())


def link_name(*seed: str) -> str:
    """A stable interface name within IFNAMSIZ: `fp` + 13 hex digits of a hash of the seed
    (instance included), as Calico names its host-side veths `cali` + a hash."""
    h = hashlib.sha1("\0".join((instance(), *seed)).encode()).hexdigest()
    return ("fp" + h)[:IFNAMSIZ]


def chain(*parts: str) -> str:
    """An iptables chain name: `FP-PART` (upper case, at most 28 characters)."""
    out = CHAIN_PREFIX + "-".join(p.upper() for p in parts)
    if len(out) > 28:
        raise UsageError(f"chain name {out!r} is longer than iptables allows (28)")
    return out


def bpf_pin_dir() -> str:
    """Where this instance pins its BPF programs and maps."""
    tag = instance()
    return f"{BPF_PIN_ROOT}/{tag}" if tag else BPF_PIN_ROOT
