"""Typed views of the sockredir maps over any element backend with lookup/update/delete/
keys on bytes (libbpf.KernelMap in production, a dict-backed fake in unit tests)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from typing import Protocol

from fastpath.sockredir import keys as K


class MapBackend(Protocol):
    def lookup(self, key: bytes) -> bytes | None: ...
    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def keys(self) -> Iterator[bytes]: ...


class SockHash:
    """fp_sockhash: SockKey -> socket. From user space a lookup returns the socket's cookie
    (SO_COOKIE), which is how a process can tell that one of its sockets is in the map."""

    def __init__(self, backend: MapBackend) -> None:
        self.m = backend

    def cookie(self, key: K.SockKey) -> int | None:
        raw = self.m.lookup(key.pack())
        return None if raw is None else struct.unpack("<Q", raw[:8])[0]

    def entries(self) -> list[K.SockKey]:
        return [K.SockKey.unpack(k) for k in self.m.keys()]

    def __len__(self) -> int:
        return sum(1 for _ in self.m.keys())


class LocalNets:
    """fp_local4 + fp_local6: the prefixes whose peers count as on this node."""

    def __init__(self, v4: MapBackend, v6: MapBackend) -> None:
        self.by_family: dict[int, MapBackend] = {K.AF_INET: v4, K.AF_INET6: v6}

    def add(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        family, key = K.lpm_key(net)
        self.by_family[family].update(key, K.LPM_VALUE.pack(1))

    def remove(self, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        family, key = K.lpm_key(net)
        return self.by_family[family].delete(key)

    def list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        out = []
        for family, m in self.by_family.items():
            out += [K.lpm_unpack(family, k) for k in m.keys()]
        return sorted(out, key=lambda n: (n.version, n))


class Counters:
    """fp_counters: one struct per possible CPU, summed on read."""

    def __init__(self, backend: MapBackend, ncpus: int) -> None:
        self.m = backend
        self.ncpus = ncpus

    def read(self) -> dict[str, int]:
        raw = self.m.lookup(struct.pack("<I", 0))
        if raw is None:
            return dict.fromkeys(K.COUNTER_FIELDS, 0)
        return K.sum_percpu_counters(raw, self.ncpus)
