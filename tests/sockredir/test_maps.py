"""The map wrappers: over an in-memory backend with the kernel's byte-level contract (every
case, no root), and over the kernel's own maps (the LPM tries, with root)."""

import ipaddress
import struct

import pytest

from fastpath.sockredir import keys as K
from fastpath.sockredir.maps import Counters, LocalNets, SockHash


class DictMap:
    def __init__(self, key_size, value_size):
        self.d = {}
        self.key_size, self.value_size = key_size, value_size

    def lookup(self, key):
        assert len(key) == self.key_size
        return self.d.get(key)

    def update(self, key, value, flags=0):
        assert len(key) == self.key_size and len(value) == self.value_size
        self.d[key] = value

    def delete(self, key):
        return self.d.pop(key, None) is not None

    def keys(self):
        yield from list(self.d)


def test_sockhash_entries_and_cookie():
    m = DictMap(56, 8)
    sh = SockHash(m)
    k = K.SockKey(K.AF_INET, "127.0.0.1", 1, "127.0.0.1", 2, 9)
    m.update(k.pack(), struct.pack("<Q", 0xABCDEF))
    assert sh.cookie(k) == 0xABCDEF
    assert sh.cookie(k.peer()) is None
    assert sh.entries() == [k] and len(sh) == 1


def test_local_nets_add_list_remove():
    ln = LocalNets(DictMap(8, 4), DictMap(20, 4))
    for n in ("10.244.1.0/24", "192.0.2.2/32", "fd00::2/128"):
        ln.add(ipaddress.ip_network(n))
    assert [str(n) for n in ln.list()] == ["10.244.1.0/24", "192.0.2.2/32", "fd00::2/128"]
    assert ln.remove(ipaddress.ip_network("192.0.2.2/32"))
    assert not ln.remove(ipaddress.ip_network("192.0.2.2/32"))
    assert [str(n) for n in ln.list()] == ["10.244.1.0/24", "fd00::2/128"]


def test_counters_read_sums_cpus_and_handles_empty():
    m = DictMap(4, 80 * 3)
    c = Counters(m, 3)
    assert c.read()["redirected_bytes"] == 0
    m.update(struct.pack("<I", 0), K.COUNTERS.pack(1, 10, 0, 0, 0, 0, 0, 0, 0, 0) * 3)
    r = c.read()
    assert r["redirected_msgs"] == 3 and r["redirected_bytes"] == 30


@pytest.mark.root
def test_local_nets_on_the_kernels_lpm_tries(accel):
    """The key layout (prefixlen, then the address in network order) against the kernel's
    longest-prefix match, on the tries sockops reads."""
    from fastpath.sockredir import loader
    p = loader.open_pinned()
    try:
        _, _, ln = p.views()
        for n in ("10.99.0.0/16", "10.99.7.0/24", "fd00:99::/64"):
            ln.add(ipaddress.ip_network(n))
        listed = [str(n) for n in ln.list()]
        assert {"10.99.0.0/16", "10.99.7.0/24", "fd00:99::/64"} <= set(listed)

        def hit(addr: str) -> bool:
            fam, key = K.lpm_key(ipaddress.ip_network(addr))
            m = p.local4 if fam == K.AF_INET else p.local6
            return m.lookup(key) == K.LPM_VALUE.pack(1)

        assert hit("10.99.7.9/32") and hit("10.99.200.1/32") and hit("fd00:99::5/128")
        assert not hit("10.98.0.1/32") and not hit("fd00:98::5/128")
        assert ln.remove(ipaddress.ip_network("10.99.0.0/16"))
        assert hit("10.99.7.9/32") and not hit("10.99.200.1/32")  # the /24 still matches
        assert ln.remove(ipaddress.ip_network("10.99.7.0/24"))
        assert not hit("10.99.7.9/32")
    finally:
        p.close()
