"""The map wrappers over an in-memory backend with the kernel's byte-level contract."""

import ipaddress
import struct

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
