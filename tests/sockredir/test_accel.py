"""fastpath accel on the real kernel: enable/disable/status, the cgroup, the counters,
redirected connections surviving disable, keys across namespaces, and the proxy's query."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import patience
from tests.sockredir.conftest import POD_CIDR, in_cgroup, pair, recv_exact

pytestmark = pytest.mark.root


def status():
    from fastpath.sockredir import loader
    return loader.status()


def test_cli_enable_status_run_disable(fastpath, instance):
    from fastpath.sockredir import cgroup as CG
    cg = CG.default_path()
    res = json.loads(fastpath("accel", "enable", "--local", POD_CIDR, "--json").stdout)
    try:
        assert res["cgroup"] == cg and os.path.isdir(cg) and res["created_cgroup"]
        assert res["pins"] == f"/sys/fs/bpf/fastpath/{instance}"
        st = json.loads(fastpath("accel", "status", "--json").stdout)
        assert st["enabled"] and st["attached"] and st["sockets"] == 0
        assert POD_CIDR in st["local"]
        # a loopback conversation inside the cgroup, through `accel run`
        code = textwrap.dedent("""
            import socket, json
            from fastpath.sockredir.query import is_accelerated
            ls = socket.create_server(("127.0.0.1", 0))
            c = socket.create_connection(ls.getsockname()); s, _ = ls.accept()
            acc = [is_accelerated(c), is_accelerated(s)]
            c.sendall(b"ping" * 1000)
            got = b""
            while len(got) < 4000: got += s.recv(4000)
            s.sendall(b"pong")
            print(json.dumps({"acc": acc, "ok": got == b"ping" * 1000 and c.recv(4) == b"pong",
                              "cgroup": open("/proc/self/cgroup").read()}))
        """)
        out = json.loads(fastpath("accel", "run", "--", sys.executable, "-c", code).stdout)
        assert out["ok"] and out["acc"] == [True, True]
        assert os.path.basename(cg) in out["cgroup"]
        st = json.loads(fastpath("accel", "status", "--json", "--sockets").stdout)
        assert st["counters"]["redirected_msgs"] >= 2
        assert st["counters"]["redirected_bytes"] >= 4004
        assert st["counters"]["sockets_added"] == 2
        assert st["sockets"] == 0  # closed sockets leave the map
        human = fastpath("accel", "status").stdout
        assert "bytes redirected" in human and "yes" in human
    finally:
        d = json.loads(fastpath("accel", "disable", "--json").stdout)
    assert d["removed_cgroup"] == cg and not os.path.exists(cg)
    assert not os.path.exists(f"/sys/fs/bpf/fastpath/{instance}")
    assert json.loads(fastpath("accel", "status", "--json").stdout)["enabled"] is False


def test_a_kept_cgroup_is_not_reported_as_created_again(fastpath, instance):
    from fastpath.sockredir import cgroup as CG
    cg = CG.default_path()
    fastpath("accel", "enable", "--skip-selftest")
    sleeper = subprocess.Popen([sys.executable, "-m", "fastpath", "accel", "run", "--", "sleep", "60"])
    try:
        wait = time.monotonic() + patience(10)
        while not CG.procs(cg) and time.monotonic() < wait:
            time.sleep(0.05)
        out = fastpath("accel", "disable").stdout
        assert "cgroup kept: 1 processes still in it" in out, out
        again = fastpath("accel", "enable", "--skip-selftest").stdout
        assert "(already there)" in again and "(created)" not in again, again
    finally:
        sleeper.kill()
        sleeper.wait()
    d = json.loads(fastpath("accel", "disable", "--json").stdout)
    assert d["removed_cgroup"] == cg and not os.path.exists(cg)   # still fastpath's to remove


def test_cli_errors_leave_nothing(fastpath, instance):
    from fastpath.sockredir import cgroup as CG
    p = fastpath("accel", "enable", "--cgroup", CG.root(), check=False)
    assert p.returncode == 2 and "root cgroup" in p.stderr
    p = fastpath("accel", "enable", "--cgroup", "/tmp", check=False)
    assert p.returncode == 2 and "not inside the cgroup2" in p.stderr
    p = fastpath("accel", "enable", "--local", "10.0.0.300/8", check=False)
    assert p.returncode == 2 and "not an IP prefix" in p.stderr
    p = fastpath("accel", "disable", check=False)
    assert p.returncode == 2 and "not enabled" in p.stderr
    p = fastpath("accel", "run", "--", "true", check=False)
    assert p.returncode == 2 and "not enabled" in p.stderr
    assert not os.path.exists(f"/sys/fs/bpf/fastpath/{instance}")
    fastpath("accel", "enable")
    try:
        p = fastpath("accel", "enable", check=False)
        assert p.returncode == 2 and "already enabled" in p.stderr
    finally:
        fastpath("accel", "disable")


def test_enable_on_a_given_cgroup(fastpath, instance):
    from fastpath import naming
    from fastpath.sockredir import cgroup as CG
    mine = os.path.join(CG.root(), naming.name("kubepods"))
    os.mkdir(mine)
    try:
        res = json.loads(fastpath("accel", "enable", "--cgroup", os.path.basename(mine),
                                  "--json").stdout)
        assert res["cgroup"] == mine and not res["created_cgroup"]
        with in_cgroup(mine):
            c, s = pair()
        from fastpath.sockredir.query import is_accelerated
        assert is_accelerated(c) and is_accelerated(s)
        c.close(), s.close()
        d = json.loads(fastpath("accel", "disable", "--json").stdout)
        assert d["detached"] == [mine] and d["removed_cgroup"] is None
        assert os.path.isdir(mine)  # not ours to remove
    finally:
        os.rmdir(mine)


def test_verifier_rejection_shows_the_log(tmp_path):
    from fastpath.sockredir import libbpf as B
    from fastpath.sockredir import loader
    loader.object_path("sockops")  # builds build/bpf (and vmlinux.h) when missing
    src = tmp_path / "bad.bpf.c"
    src.write_text(textwrap.dedent("""
        #include "vmlinux.h"
        #include <bpf/bpf_helpers.h>
        SEC("sk_msg")
        int bad(struct sk_msg_md *msg)
        {
            /* reads past the end of the packet without a bounds check */
            return *(char *)(long)msg->data;
        }
        char LICENSE[] SEC("license") = "GPL";
    """))
    obj = tmp_path / "bad.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I", str(loader.object_dir()),
                    "-c", str(src), "-o", str(obj)],
                   check=True)
    with B.BpfObject(str(obj)) as o, pytest.raises(B.VerifierRejected) as ei:
        o.load()
    assert "invalid access to packet" in ei.value.log
    assert "verifier log" in str(ei.value) and "invalid access to packet" in str(ei.value)


def test_disable_keeps_redirected_connections_working(accel):
    from fastpath.sockredir import loader
    from fastpath.sockredir.query import is_accelerated
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    assert is_accelerated(c) and is_accelerated(s)
    inflight = os.urandom(300_000)
    c.sendall(inflight)  # queued in s's psock, unread
    before = status()["counters"]["redirected_bytes"]
    assert before >= len(inflight)
    d = loader.disable()
    assert d["sockets_still_redirected"] == 2
    assert not loader.is_enabled()
    assert recv_exact(s, len(inflight)) == inflight
    more = os.urandom(1 << 20)
    s.sendall(more)
    assert recv_exact(c, len(more)) == more
    c.sendall(b"bye")
    assert s.recv(3) == b"bye"
    # still accelerated: the map outlives its pins while its sockets live
    assert is_accelerated(c) and is_accelerated(s)
    # a new connection is no longer accelerated
    c2, s2 = pair()
    assert not is_accelerated(c2) and not is_accelerated(s2)
    for x in (c, s, c2, s2):
        x.close()


def test_identical_loopback_tuples_in_two_pods_never_cross(accel, pods):
    """127.0.0.1:Q -> 127.0.0.1:P in pod A and in pod B at the same time: equal 4-tuples,
    different netns cookies, no byte crosses."""
    from fastpath.sockredir import loader
    from fastpath.sockredir.query import is_accelerated, socket_key
    a, b = pods.pods
    conns = {}
    with in_cgroup(accel["cgroup"]):
        for pod in (a, b):
            conns[pod.name] = pair(netns=pod.name, server_addr=("127.0.0.1", 47100),
                                   client_bind=("127.0.0.1", 47101))
    ka, kb = (socket_key(conns[p.name][0]) for p in (a, b))
    assert (ka.laddr, ka.lport, ka.raddr, ka.rport) == (kb.laddr, kb.lport, kb.raddr, kb.rport)
    assert ka.netns and kb.netns and ka.netns != kb.netns
    for c, s in conns.values():
        assert is_accelerated(c) and is_accelerated(s)
    p = loader.open_pinned()
    try:
        sh, _, _ = p.views()
        keys = sh.entries()
    finally:
        p.close()
    assert len(keys) == 4 and len({k.netns for k in keys}) == 2
    payload = {a.name: (b"A" * 200_000, b"a" * 150_000), b.name: (b"B" * 200_000, b"b" * 150_000)}
    for name, (c, s) in conns.items():
        up, down = payload[name]
        c.sendall(up)
        s.sendall(down)
    for name, (c, s) in conns.items():
        up, down = payload[name]
        assert recv_exact(s, len(up)) == up
        assert recv_exact(c, len(down)) == down
    for c, s in conns.values():
        s.setblocking(False)
        c.setblocking(False)
        for x in (c, s):
            with pytest.raises(BlockingIOError):
                x.recv(1)
        c.close(), s.close()
    assert status()["counters"]["redirected_bytes"] >= 2 * 350_000


def test_pod_to_pod_across_namespaces_and_remote_peers_stay_out(fastpath, pods):
    from fastpath.sockredir import cgroup as CG
    from fastpath.sockredir import loader
    from fastpath.sockredir.query import is_accelerated, socket_key
    a, b = pods.pods
    fastpath("accel", "enable")  # pod CIDR not yet local: pods count as remote peers
    try:
        with in_cgroup(CG.default_path()):
            c, s = pair(netns=b.name, server_addr=(b.ip, 47200), client_netns=a.name)
        assert not is_accelerated(c) and not is_accelerated(s)
        assert status()["counters"]["sockets_remote"] == 2
        c.close(), s.close()
        out = json.loads(fastpath("accel", "local", "--add", POD_CIDR, "--json").stdout)
        assert POD_CIDR in out["local"]
        with in_cgroup(CG.default_path()):
            c, s = pair(netns=b.name, server_addr=(b.ip, 47201), client_netns=a.name)
        assert is_accelerated(c) and is_accelerated(s)
        k = socket_key(c)
        assert (k.laddr, k.raddr, k.netns) == (a.ip, b.ip, 0)
        data = os.urandom(2 << 20)
        c.sendall(data)
        assert recv_exact(s, len(data)) == data
        s.sendall(b"ok")
        assert c.recv(2) == b"ok"
        assert status()["counters"]["redirected_bytes"] >= len(data)
        c.close(), s.close()
    finally:
        loader.disable()


def test_ipv6_loopback(accel):
    from fastpath.sockredir.query import is_accelerated
    with in_cgroup(accel["cgroup"]):
        c, s = pair(family=socket.AF_INET6, host="::1")
    assert is_accelerated(c) and is_accelerated(s)
    data = os.urandom(500_000)
    c.sendall(data)
    assert recv_exact(s, len(data)) == data
    c.close(), s.close()


def test_query_says_no_for_plain_sockets(accel):
    from fastpath.sockredir.query import is_accelerated
    c, s = pair()  # outside the cgroup
    assert not is_accelerated(c) and not is_accelerated(s)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert not is_accelerated(u)
    t = socket.socket()
    assert not is_accelerated(t)  # not connected
    for x in (c, s, u, t):
        x.close()


def test_sweep_removes_everything(accel, instance):
    from fastpath.sockredir import cgroup as CG
    from fastpath.sockredir import loader, sweep
    p = subprocess.Popen(["sleep", "30"], preexec_fn=lambda: CG.move(0, accel["cgroup"]))
    try:
        assert CG.procs(accel["cgroup"]) == [p.pid]
        removed = sweep.sweep()
        assert any("sockops attachment" in r for r in removed)
        assert not os.path.exists(f"/sys/fs/bpf/fastpath/{instance}")
        assert not os.path.exists(accel["cgroup"]) and not loader.is_enabled()
        assert p.poll() is None  # moved out, not killed
        assert sweep.sweep() == []  # idempotent
    finally:
        p.kill()
        p.wait()


def test_a_socket_that_sent_via_the_stack_keeps_its_order(accel):
    """The race the sk_msg program guards against: the client's first send misses (the
    server end is not in the map yet, as when it beats PASSIVE_ESTABLISHED), so those bytes
    wait in the server's TCP receive queue; then the server end joins the map. tcp_bpf reads
    the psock queue first, so if the client's later sends were redirected they would
    overtake the earlier ones. The client must stay on the stack."""
    import struct as st

    from fastpath.sockredir import loader
    from fastpath.sockredir.query import is_accelerated, socket_key
    ls = socket.create_server(("127.0.0.1", 0))  # outside the cgroup: its children too
    with in_cgroup(accel["cgroup"]):
        c = socket.create_connection(ls.getsockname(), timeout=10)
    s, _ = ls.accept()
    ls.close()
    assert is_accelerated(c) and not is_accelerated(s)
    first = b"A" * 100_000
    c.sendall(first)  # miss: through TCP, unread in s's receive queue
    p = loader.open_pinned()
    try:
        p.sockhash.update(socket_key(s).pack(), st.pack("<Q", s.fileno()))
    finally:
        p.close()
    assert is_accelerated(s)
    second = b"B" * 100_000
    c.sendall(second)
    s.settimeout(10)
    assert recv_exact(s, 200_000) == first + second
    # the server end, never on the stack, is redirected
    before = status()["counters"]["redirected_bytes"]
    s.sendall(b"C" * 1000)
    assert recv_exact(c, 1000) == b"C" * 1000
    c_st = status()["counters"]
    assert c_st["redirected_bytes"] >= before + 1000 and c_st["pinned_to_stack"] >= 1
    c.close(), s.close()


def test_bulk_socket_leaves_the_redirect_in_order(fastpath, accel):
    """--bulk-bytes: after redirected messages, a big one moves the socket to the stack;
    the receiver still gets every byte in order (psock queue drained before TCP's)."""
    from fastpath.sockredir.query import is_accelerated
    cfg = json.loads(fastpath("accel", "tune", "--bulk-bytes", "65536", "--json").stdout)
    assert cfg["bulk_bytes"] == 65536
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    assert is_accelerated(c)
    small = [os.urandom(1000) for _ in range(50)]
    for m in small:
        c.sendall(m)  # redirected, unread
    big = os.urandom(1 << 20)
    c.sendall(big)  # >= bulk_bytes: through TCP from now on
    tail = os.urandom(5000)
    c.sendall(tail)
    assert recv_exact(s, 50_000 + len(big) + len(tail)) == b"".join(small) + big + tail
    st = status()
    assert st["counters"]["bulk_to_stack"] == 1 and st["config"]["bulk_bytes"] == 65536
    assert st["counters"]["redirected_bytes"] >= 50_000
    c.close(), s.close()


def test_a_peer_that_does_not_read_bounds_the_sender(fastpath, accel):
    """The psock queue is bounded by neither SO_RCVBUF nor SO_SNDBUF; max_queued moves a
    sender whose peer holds that much to the stack, whose window stops it. Bytes stay in
    order across the switch."""
    from fastpath.sockredir import loader
    assert status()["config"]["max_queued"] == loader.DEFAULT_MAX_QUEUED
    fastpath("accel", "tune", "--max-queued", str(2 << 20))
    with in_cgroup(accel["cgroup"]):
        c, s = pair()
    c.setblocking(False)
    chunk = bytes(range(256)) * 256  # 64 KiB
    sent = bytearray()
    for _ in range(4096):  # at most 256 MiB, which an unbounded queue would take
        try:
            n = c.send(chunk)
        except BlockingIOError:
            break
        sent += chunk[:n]
    assert 2 << 20 <= len(sent) < 64 << 20
    st = status()["counters"]
    assert st["backlog_to_stack"] == 1 and st["redirected_bytes"] >= 2 << 20
    assert recv_exact(s, len(sent)) == bytes(sent)
    c.setblocking(True)
    c.sendall(b"end")
    assert recv_exact(s, 3) == b"end"
    c.close(), s.close()


def test_ipv4_mapped_sockets_stay_on_the_stack(accel):
    """A dual-stack listener's child of an IPv4 client is AF_INET6 with ::ffff:127.0.0.1:
    the two ends would never agree on a key, so sockops leaves such sockets out (the IPv4
    end alone in the map just misses) and the bytes take the stack intact."""
    from fastpath.sockredir.query import is_accelerated
    with in_cgroup(accel["cgroup"]):
        ls = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        c = socket.create_connection(("127.0.0.1", ls.getsockname()[1]), timeout=10)
    s, _ = ls.accept()
    ls.close()
    assert s.getpeername()[0] == "::ffff:127.0.0.1"
    assert not is_accelerated(s)
    data = os.urandom(300_000)
    c.sendall(data)
    assert recv_exact(s, len(data)) == data
    s.sendall(b"ok")
    assert recv_exact(c, 2) == b"ok"
    assert status()["counters"]["redirected_bytes"] == 0
    c.close(), s.close()
