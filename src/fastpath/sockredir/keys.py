"""Byte layouts shared with bpf/sockredir.h: the SOCKHASH key, the LPM keys of the
local-peer tries, and the per-CPU counters. Pure: no I/O, tested without root.

struct fp_sock_key (56 bytes): family u32, lport u32, rport u32, pad u32 (ports in host
byte order), laddr[16], raddr[16] (network byte order; IPv4 in the first 4 bytes),
netns u64 (the netns cookie, for loopback peers only; 0 otherwise).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from fastpath.errors import UsageError

AF_INET = socket.AF_INET    # 2, as in the kernel
AF_INET6 = socket.AF_INET6  # 10

SOCK_KEY = struct.Struct("<IIII16s16sQ")
LPM4 = struct.Struct("<I4s")
LPM6 = struct.Struct("<I16s")
LPM_VALUE = struct.Struct("<I")
COUNTER_FIELDS = ("redirected_msgs", "redirected_bytes", "passed_msgs", "passed_bytes",
                  "sockets_added", "sockets_remote", "sockets_failed", "pinned_to_stack",
                  "bulk_to_stack", "backlog_to_stack")
COUNTERS = struct.Struct("<" + "Q" * len(COUNTER_FIELDS))
CONFIG_FIELDS = ("bulk_bytes", "apply_bytes", "cork_bytes", "max_queued")
CONFIG = struct.Struct("<IIII")
assert SOCK_KEY.size == 56 and COUNTERS.size == 80 and CONFIG.size == 16


def is_loopback(addr: str) -> bool:
    return ipaddress.ip_address(addr).is_loopback


@dataclass(frozen=True)
class SockKey:
    """One end of a TCP connection, seen from that end."""

    family: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    netns: int = 0

    @classmethod
    def for_end(cls, family: int, local: tuple, remote: tuple, netns_cookie: int) -> "SockKey":
        """The key sockops gives the socket with these ends; netns only for loopback peers."""
        laddr, raddr = str(local[0]), str(remote[0])
        return cls(family, laddr, int(local[1]), raddr, int(remote[1]),
                   netns_cookie if is_loopback(raddr) else 0)

    def peer(self) -> "SockKey":
        """The key of the other end (what sk_msg looks up)."""
        return SockKey(self.family, self.raddr, self.rport, self.laddr, self.lport, self.netns)

    def pack(self) -> bytes:
        return SOCK_KEY.pack(self.family, self.lport, self.rport, 0,
                             _addr16(self.family, self.laddr), _addr16(self.family, self.raddr),
                             self.netns)

    @classmethod
    def unpack(cls, raw: bytes) -> "SockKey":
        family, lport, rport, _pad, la, ra, netns = SOCK_KEY.unpack(raw)
        return cls(family, _addr_str(family, la), lport, _addr_str(family, ra), rport, netns)

    def __str__(self) -> str:
        fmt = (lambda a, p: f"[{a}]:{p}") if self.family == AF_INET6 else (lambda a, p: f"{a}:{p}")
        s = f"{fmt(self.laddr, self.lport)} -> {fmt(self.raddr, self.rport)}"
        return s + (f" netns={self.netns}" if self.netns else "")


def _addr16(family: int, addr: str) -> bytes:
    packed = socket.inet_pton(family, addr)
    return packed.ljust(16, b"\0")


def _addr_str(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:4] if family == AF_INET else raw)


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A local-peer prefix: `10.1.2.0/24`, `10.0.0.5` (a /32), `fd00::/64`."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise UsageError(f"not an IP prefix: {text!r} ({e})") from e


def lpm_key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, bytes]:
    """(family, packed LPM key) of a prefix for fp_local4 / fp_local6."""
    if net.version == 4:
        return AF_INET, LPM4.pack(net.prefixlen, net.network_address.packed)
    return AF_INET6, LPM6.pack(net.prefixlen, net.network_address.packed)


def lpm_unpack(family: int, raw: bytes) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if family == AF_INET:
        plen, addr = LPM4.unpack(raw)
    else:
        plen, addr = LPM6.unpack(raw)
    return ipaddress.ip_network((ipaddress.ip_address(addr), plen))


def pack_config(bulk_bytes: int = 0, apply_bytes: int = 0, cork_bytes: int = 0,
                max_queued: int = 0) -> bytes:
    for n, v in (("bulk-bytes", bulk_bytes), ("apply-bytes", apply_bytes),
                 ("cork-bytes", cork_bytes), ("max-queued", max_queued)):
        if not 0 <= v < 1 << 32:
            raise UsageError(f"--{n} {v}: must be between 0 and 2^32-1")
    return CONFIG.pack(bulk_bytes, apply_bytes, cork_bytes, max_queued)


def unpack_config(raw: bytes) -> dict[str, int]:
    return dict(zip(CONFIG_FIELDS, CONFIG.unpack(raw)))


def sum_percpu_counters(raw: bytes, ncpus: int) -> dict[str, int]:
    """Add up one fp_counters per possible CPU (each 80 bytes, already 8-aligned)."""
    total = [0] * len(COUNTER_FIELDS)
    for cpu in range(ncpus):
        vals = COUNTERS.unpack_from(raw, cpu * COUNTERS.size)
        total = [a + b for a, b in zip(total, vals)]
    return dict(zip(COUNTER_FIELDS, total))
