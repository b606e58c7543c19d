import ipaddress
import socket
import struct

import pytest

from fastpath.errors import UsageError
from fastpath.sockredir import keys as K


def test_key_layout_matches_the_c_struct():
    k = K.SockKey(K.AF_INET, "10.0.0.1", 40000, "10.0.0.2", 8080, 0)
    raw = k.pack()
    assert len(raw) == 56
    family, lport, rport, pad = struct.unpack_from("<IIII", raw)
    assert (family, lport, rport, pad) == (2, 40000, 8080, 0)
    assert raw[16:20] == socket.inet_aton("10.0.0.1") and raw[20:32] == bytes(12)
    assert raw[32:36] == socket.inet_aton("10.0.0.2")
    assert struct.unpack_from("<Q", raw, 48)[0] == 0


def test_roundtrip_v4_and_v6():
    for k in (K.SockKey(K.AF_INET, "127.0.0.1", 1, "127.0.0.1", 65535, 12345),
              K.SockKey(K.AF_INET6, "fd00::1", 5, "fd00::2", 6, 0),
              K.SockKey(K.AF_INET6, "::1", 5, "::1", 6, 7)):
        assert K.SockKey.unpack(k.pack()) == k


def test_peer_swaps_the_ends_and_keeps_the_netns():
    k = K.SockKey(K.AF_INET, "127.0.0.1", 1000, "127.0.0.1", 2000, 99)
    p = k.peer()
    assert (p.laddr, p.lport, p.raddr, p.rport, p.netns) == ("127.0.0.1", 2000, "127.0.0.1", 1000, 99)
    assert p.peer() == k
    assert p.pack() != k.pack()


def test_netns_cookie_only_for_loopback_peers():
    lo = K.SockKey.for_end(K.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2), 42)
    pod = K.SockKey.for_end(K.AF_INET, ("10.244.1.2", 1), ("10.244.1.3", 2), 42)
    v6 = K.SockKey.for_end(K.AF_INET6, ("::1", 1), ("::1", 2), 43)
    assert lo.netns == 42 and v6.netns == 43 and pod.netns == 0
    # same 4-tuple in two namespaces: two different keys
    other = K.SockKey.for_end(K.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2), 77)
    assert other.pack() != lo.pack()


def test_lpm_keys():
    fam, raw = K.lpm_key(ipaddress.ip_network("10.244.3.0/24"))
    assert fam == K.AF_INET and raw == struct.pack("<I", 24) + bytes([10, 244, 3, 0])
    fam6, raw6 = K.lpm_key(ipaddress.ip_network("fd00:1::/64"))
    assert fam6 == K.AF_INET6 and len(raw6) == 20
    assert K.lpm_unpack(fam, raw) == ipaddress.ip_network("10.244.3.0/24")
    assert K.lpm_unpack(fam6, raw6) == ipaddress.ip_network("fd00:1::/64")


def test_parse_cidr():
    assert str(K.parse_cidr("10.1.2.3")) == "10.1.2.3/32"
    assert str(K.parse_cidr("10.1.2.3/24")) == "10.1.2.0/24"
    with pytest.raises(UsageError):
        K.parse_cidr("10.1.2.300/24")
    with pytest.raises(UsageError):
        K.parse_cidr("pods")


def test_percpu_counters_are_summed():
    cpu0 = K.COUNTERS.pack(1, 100, 2, 20, 3, 0, 0, 1, 0, 0)
    cpu1 = K.COUNTERS.pack(4, 400, 0, 0, 1, 5, 0, 0, 2, 3)
    c = K.sum_percpu_counters(cpu0 + cpu1, 2)
    assert c["redirected_msgs"] == 5 and c["redirected_bytes"] == 500
    assert c["passed_msgs"] == 2 and c["sockets_added"] == 4 and c["sockets_remote"] == 5
    assert c["pinned_to_stack"] == 1 and c["bulk_to_stack"] == 2 and c["backlog_to_stack"] == 3


def test_config_pack_and_bounds():
    raw = K.pack_config(bulk_bytes=65536, apply_bytes=0, cork_bytes=7, max_queued=9)
    assert len(raw) == 16 and K.unpack_config(raw) == {"bulk_bytes": 65536, "apply_bytes": 0,
                                                       "cork_bytes": 7, "max_queued": 9}
    with pytest.raises(UsageError):
        K.pack_config(bulk_bytes=-1)
    with pytest.raises(UsageError):
        K.pack_config(apply_bytes=1 << 32)


def test_header_and_python_agree_on_sizes():
    import pathlib
    h = (pathlib.Path(__file__).parents[2] / "bpf" / "sockredir.h").read_text()
    assert "sizeof(struct fp_sock_key) == 56" in h and K.SOCK_KEY.size == 56
    assert "sizeof(struct fp_counters) == 80" in h and K.COUNTERS.size == 80
    assert "sizeof(struct fp_config) == 16" in h and K.CONFIG.size == 16
    for f in K.COUNTER_FIELDS:
        assert f"__u64 {f};" in h
