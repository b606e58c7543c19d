"""`fastpath shm send/recv` as a user runs them: two real processes, one socket."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

from tests.conftest import patience


def _recv(*argv):
    return subprocess.Popen([sys.executable, "-m", "fastpath", "shm", "recv", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc):
    """Until the receiver (one process start) has bound its socket, or has exited."""
    deadline = time.monotonic() + patience(5, starts=2)
    while time.monotonic() < deadline:
        if os.path.exists(path) or proc.poll() is not None:
            return
        time.sleep(0.02)


def test_send_a_file_through_a_sealed_region(fastpath, sock_path, tmp_path):
    src, out = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(os.urandom(3_000_001))
    rx = _recv("--listen", sock_path, "--out", str(out), "--timeout", "30", "--json")
    try:
        _wait_for(sock_path, rx)
        sent = json.loads(fastpath("shm", "send", str(src), "--to", sock_path, "--json").stdout)
        got = json.loads(rx.communicate(timeout=30)[0])
    finally:
        rx.kill()
        rx.wait()
    assert rx.returncode == 0
    assert sent["bytes"] == got["bytes"] == 3_000_001 and sent["receiver"]["pid"] == rx.pid
    assert got["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert out.read_bytes() == src.read_bytes()
    assert "shrink" in got["sealed"] and "future_write" in got["sealed"]
    assert not os.path.exists(sock_path)  # the receiver removed its socket


def test_refused_sender_gets_one_clear_line(fastpath, sock_path, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"hello")
    rx = _recv("--listen", sock_path, "--allow-uid", "4242")
    try:
        _wait_for(sock_path, rx)
        p = fastpath("shm", "send", str(src), "--to", sock_path, check=False)
        rx.send_signal(signal.SIGTERM)  # it would wait for an allowed peer forever
        _, err = rx.communicate(timeout=30)
    finally:
        rx.kill()
        rx.wait()
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "is not allowed (allowed: uid [4242])" in p.stderr
    assert f"refused: accept on {sock_path}: peer pid" in err and rx.returncode == 130


def test_no_receiver_is_a_usage_error(fastpath, sock_path, tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"x")
    p = fastpath("shm", "send", str(src), "--to", sock_path, check=False)
    assert p.returncode == 2 and "no socket at" in p.stderr and "Traceback" not in p.stderr
    p = fastpath("shm", "send", str(tmp_path / "nope"), "--to", sock_path, check=False)
    assert p.returncode == 2 and "no such file" in p.stderr


def test_killed_receiver_leaves_no_socket_and_a_stale_one_is_reused(fastpath, sock_path, tmp_path):
    import socket
    rx = _recv("--listen", sock_path)
    _wait_for(sock_path, rx)
    rx.send_signal(signal.SIGTERM)
    rx.communicate(timeout=10)
    assert rx.returncode == 130 and not os.path.exists(sock_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(sock_path)  # bound, never listening: what a SIGKILLed receiver leaves
    stale.close()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    rx = _recv("--listen", sock_path, "--timeout", "30", "--json", "--out", str(tmp_path / "o"))
    try:
        deadline = time.monotonic() + patience(10, starts=2)
        while time.monotonic() < deadline:  # until the receiver listens where the stale was
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                probe.connect(sock_path)  # the receiver sees a peer leave without sending
                break
            except OSError:
                time.sleep(0.02)
            finally:
                probe.close()
        fastpath("shm", "send", str(empty), "--to", sock_path)
        got = json.loads(rx.communicate(timeout=30)[0])
    finally:
        rx.kill()
        rx.wait()
    assert got["bytes"] == 0 and (tmp_path / "o").read_bytes() == b""
