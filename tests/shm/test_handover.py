"""Region hand-over between real processes: the happy path and every fault the receiver
must survive without SIGBUS, fd leaks or mappings of what it refused."""

from __future__ import annotations

import errno
import os
import signal
import socket

import pytest

from fastpath.shm import header as hdr
from fastpath.shm.errors import HandoverRefused, PeerNotAllowed
from fastpath.shm.handover import AllowList, Connection, Listener, send_message
from fastpath.shm.memfd import F_SEAL_GROW, F_SEAL_SHRINK, Region, add_seals, memfd_create

from .conftest import fd_count, map_count, memfd_maps


def _send_file_like(path, payload):
    with Connection.connect(path) as c, Region.create(len(payload) + 100, "fp-t-send") as r:
        r.buf[: len(payload)] = payload
        c.send_region(r, len(payload), readonly=True)
    os._exit(0)


def test_region_hand_over_is_sealed_read_only_and_in_place(sock_path, peers):
    payload = os.urandom(100_000)
    with Listener(sock_path) as lis:
        p = peers.start(_send_file_like, sock_path, payload)
        conn = lis.accept(timeout=10)
        with conn, conn.recv_region() as rx:
            assert bytes(rx.payload) == payload and rx.length == len(payload)
            assert rx.peer.pid == p.pid and rx.peer.uid == os.geteuid()
            assert rx.flags & hdr.FLAG_READONLY and not rx.region.writable
            with pytest.raises(TypeError):
                rx.payload[0] = 1  # read-only mapping
    p.join(5)
    assert p.exitcode == 0
    assert not os.path.exists(sock_path)


def _raw_client(path):
    """Connect, wait for the greeting, and return the bare socket (no library checks)."""
    c = Connection.connect(path)
    return c


def _send_unsealed_then_truncate(path):
    c = _raw_client(path)
    fd = memfd_create("fp-t-unsealed")
    os.ftruncate(fd, 1 << 20)
    send_message(c.sock, hdr.Header(hdr.KIND_REGION, size=1 << 20, length=1 << 20), [fd])
    os.ftruncate(fd, 0)  # what would SIGBUS a receiver that mapped it
    try:
        c.wait_reply(10, "send")
    except HandoverRefused as e:
        os._exit(0 if "F_SEAL_SHRINK" in str(e) else 3)
    os._exit(4)


def test_unsealed_region_is_refused_before_mapping(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_send_unsealed_then_truncate, sock_path)
        before = fd_count()
        with lis.accept(timeout=10) as conn:
            with pytest.raises(HandoverRefused, match="F_SEAL_SHRINK") as ei:
                conn.recv_region()
            assert ei.value.errno == errno.EPERM
            assert not any("fp-t-unsealed" in m for m in memfd_maps())
            assert fd_count() == before + 1  # the connection, nothing else
        p.join(10)
        assert p.exitcode == 0  # the sender heard why
        assert fd_count() == before


def _send_sealed_then_try_truncate(path, q):
    with Connection.connect(path) as c, Region.create(1 << 20, "fp-t-sealed") as r:
        r.buf[:] = b"\xab" * (1 << 20)
        c.send_region(r)
        try:
            os.ftruncate(r.fd, 0)
            q.put("truncated")
        except OSError as e:
            q.put(errno.errorcode[e.errno])
    os._exit(0)


def test_sealed_region_cannot_be_truncated_after_sending(sock_path, peers, report):
    with Listener(sock_path) as lis:
        p = peers.start(_send_sealed_then_try_truncate, sock_path, report)
        with lis.accept(timeout=10) as conn, conn.recv_region() as rx:
            assert rx.region.seals & F_SEAL_SHRINK
            assert report.get() == "EPERM"
            p.join(5)
            # the sender is gone and tried to shrink it: every byte is still readable
            assert rx.payload[0] == rx.payload[-1] == 0xAB and len(rx.payload) == 1 << 20


def _map_and_read_forever(fd, ready_w):
    import faulthandler
    faulthandler.disable()  # the SIGBUS below is expected; keep its traceback out of the log
    r = Region(fd, 1 << 20, writable=False)
    os.write(ready_w, b"x")
    while True:
        _ = r.buf[(1 << 20) - 1]


def test_why_the_seal_matters_unsealed_truncation_kills_reader_with_sigbus(peers):
    """The hazard the checks exist for, measured: a reader of an unsealed memfd that its
    owner truncates dies with SIGBUS, and Python cannot catch it."""
    fd = memfd_create("fp-t-hazard")
    os.ftruncate(fd, 1 << 20)
    rd, wr = os.pipe()
    p = peers.start(_map_and_read_forever, fd, wr)
    assert os.read(rd, 1) == b"x"
    os.ftruncate(fd, 0)
    p.join(10)
    os.close(fd), os.close(rd), os.close(wr)
    assert p.exitcode == -signal.SIGBUS


def _send_lying_header(path, claimed, actual):
    c = _raw_client(path)
    fd = memfd_create("fp-t-liar")
    os.ftruncate(fd, actual)
    add_seals(fd, F_SEAL_SHRINK | F_SEAL_GROW)
    send_message(c.sock, hdr.Header(hdr.KIND_REGION, size=claimed, length=0), [fd])
    try:
        c.wait_reply(10, "send")
    except HandoverRefused as e:
        os._exit(0 if f"header says {claimed} bytes, the memfd has {actual}" in str(e) else 3)
    os._exit(4)


@pytest.mark.parametrize("claimed, actual", [(1 << 20, 4096), (4096, 1 << 20)])
def test_header_lying_about_size_is_refused(sock_path, peers, claimed, actual):
    with Listener(sock_path) as lis:
        p = peers.start(_send_lying_header, sock_path, claimed, actual)
        before_maps = map_count()
        with lis.accept(timeout=10) as conn:
            with pytest.raises(HandoverRefused, match=f"header says {claimed} bytes"):
                conn.recv_region()
        assert map_count() == before_maps
        assert not any("fp-t-liar" in m for m in memfd_maps())
        p.join(10)
        assert p.exitcode == 0


def _try_connect(path, q):
    try:
        Connection.connect(path)
        q.put("accepted")
    except PeerNotAllowed as e:  # typed on the client side too
        q.put(str(e))
    os._exit(0)


def test_peer_not_on_allow_list_is_refused_with_a_reason(sock_path, peers, report):
    with Listener(sock_path, AllowList(frozenset({4242}), frozenset({4343}))) as lis:
        p = peers.start(_try_connect, sock_path, report)
        before = fd_count(), map_count()
        with pytest.raises(PeerNotAllowed, match=f"pid {p.pid} uid {os.geteuid()}"):
            lis.accept(timeout=10)
        assert (fd_count(), map_count()) == before
        reason = report.get()
        assert "is not allowed (allowed: uid [4242] or gid [4343])" in reason


def _connect_as(path, uid, gid, q):
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    _try_connect(path, q)


@pytest.mark.root
@pytest.mark.parametrize("allow, verdict", [
    (AllowList(frozenset({0})), "not allowed"),
    (AllowList(frozenset(), frozenset({65534})), "accepted"),
])
def test_allow_list_against_another_real_uid(sock_path, peers, report, allow, verdict):
    os.chmod(os.path.dirname(sock_path), 0o755)
    with Listener(sock_path, allow) as lis:
        os.chmod(sock_path, 0o777)
        peers.start(_connect_as, sock_path, 65534, 65534, report)
        try:
            lis.accept(timeout=10).close()
        except PeerNotAllowed as e:
            assert "uid 65534" in str(e)
        assert verdict in report.get()


def _flood_fds(path, rounds, per_message):
    """Send `rounds` messages with `per_message` fds each (SCM_MAX_FD is 253)."""
    c = _raw_client(path)
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(per_message)]
    h = hdr.Header(hdr.KIND_REGION, size=4096)
    for _ in range(rounds):
        send_message(c.sock, h, fds)
    os._exit(0)


def test_peer_sending_hundreds_of_fds_leaks_none(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_flood_fds, sock_path, 4, 250)   # 1000 fds in all
        before = fd_count()  # after the start: multiprocessing keeps a sentinel fd per child
        with lis.accept(timeout=10) as conn:
            for _ in range(4):
                with pytest.raises(HandoverRefused, match="more than 8 fds") as ei:
                    conn.recv_region()
                assert ei.value.errno == errno.EMSGSIZE
                assert fd_count() == before + 1   # only the connection itself
        p.join(10)
        assert fd_count() == before


def test_extra_fds_within_the_buffer_are_closed(sock_path, peers):
    with Listener(sock_path) as lis:
        p = peers.start(_flood_fds, sock_path, 1, 3)
        before = fd_count()  # after the start: multiprocessing keeps a sentinel fd per child
        with lis.accept(timeout=10) as conn:
            with pytest.raises(HandoverRefused, match="promises 1 fds, 3 arrived"):
                conn.recv_region()
            assert fd_count() == before + 1
        p.join(10)
        assert fd_count() == before


def _send_many(path, n):
    with Connection.connect(path) as c:
        for i in range(n):
            with Region.create(4096, "fp-t-many") as r:
                r.buf[:8] = i.to_bytes(8, "little")
                c.send_region(r, 8)
    os._exit(0)


def test_10000_hand_overs_leak_no_fd_or_mapping(sock_path, peers):
    n = 10_000
    with Listener(sock_path) as lis:
        p = peers.start(_send_many, sock_path, n)
        with lis.accept(timeout=10) as conn:
            fds, maps = fd_count(), map_count()
            for i in range(n):
                with conn.recv_region() as rx:
                    assert int.from_bytes(rx.payload, "little") == i
            assert (fd_count(), map_count()) == (fds, maps)
        p.join(10)
        assert p.exitcode == 0


def test_plain_stream_socket_clients_are_refused(sock_path):
    with Listener(sock_path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(OSError):
            s.connect(sock_path)
        s.close()


def _connect_and_die(path):
    Connection.connect(path)
    os.kill(os.getpid(), signal.SIGKILL)


def test_sender_dying_before_its_message_is_reported_not_a_hang(sock_path, peers):
    from fastpath.shm.errors import PeerDied
    with Listener(sock_path) as lis:
        p = peers.start(_connect_and_die, sock_path)
        with lis.accept(timeout=10) as conn:
            with pytest.raises(PeerDied, match="closed the connection before sending"):
                conn.recv_region(timeout=10)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL


def _send_sparse(path, size, rep):
    with Connection.connect(path) as c, Region.create(size, "fp-t-sparse") as r:
        try:
            c.send_region(r)
            rep.put("accepted")
        except HandoverRefused as e:
            rep.put(str(e))
    os._exit(0)


def test_region_over_the_size_limit_is_refused(sock_path, peers, report):
    with Listener(sock_path) as lis:
        peers.start(_send_sparse, sock_path, 1 << 30, report)  # sparse: costs no memory
        with lis.accept(timeout=10) as conn:
            with pytest.raises(HandoverRefused, match="exceeds the 1048576-byte limit"):
                conn.recv_region(max_size=1 << 20)
        assert "limit" in report.get()


def _send_not_a_memfd(path, rep):
    c = _raw_client(path)
    fd = os.open("/proc/self/exe", os.O_RDONLY)
    send_message(c.sock, hdr.Header(hdr.KIND_REGION, size=os.fstat(fd).st_size), [fd])
    try:
        c.wait_reply(10, "send")
        rep.put("accepted")
    except HandoverRefused as e:
        rep.put(str(e))
    os._exit(0)


def test_a_file_that_is_not_a_memfd_is_refused(sock_path, peers, report):
    with Listener(sock_path) as lis:
        peers.start(_send_not_a_memfd, sock_path, report)
        with lis.accept(timeout=10) as conn:
            before = fd_count()
            with pytest.raises(HandoverRefused, match="not a sealable memfd"):
                conn.recv_region()
            assert fd_count() == before
        assert "not a sealable memfd" in report.get()


def test_listener_refuses_a_live_socket_or_a_plain_file(sock_path, tmp_path):
    from fastpath.errors import KernelError
    with Listener(sock_path):
        with pytest.raises(KernelError, match="another receiver is listening there"):
            Listener(sock_path)
    plain = tmp_path / "plain"
    plain.write_text("keep me")
    with pytest.raises(KernelError, match="EADDRINUSE"):
        Listener(str(plain))
    assert plain.read_text() == "keep me"
    assert os.listdir(os.path.dirname(sock_path)) == []  # no temporary socket left either
