"""Running the redirect self-test on this kernel (the checks are named in selftest.py).

A private netns (`fp-[tag-]selftest-PID`, only `lo`) and a private cgroup of the same name
get their own copies of the programs and maps: nothing is pinned and nothing touches an
accel cgroup in use. One forked child joins the cgroup, enters the netns and runs every
check over loopback; it writes a line `start NAME` before each check and one JSON result
after it, so a check that hangs is named by the parent when the deadline passes. A fork,
not a new interpreter: in a TCG guest a Python start costs seconds.

Order of teardown: the child has exited (its sockets are closed), then sockops is
detached, the objects closed (the maps go with their last reference), the cgroup and the
netns removed. Every step runs even when an earlier one failed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import select
import signal
import socket
import struct
import termios
import threading
import time

from fastpath import naming
from fastpath.errors import KernelError
from fastpath.kernel import netns as NS
from fastpath.kernel import proc
from fastpath.kernel.fd import Fd
from fastpath.sockredir import cgroup as CG
from fastpath.sockredir import features as F
from fastpath.sockredir import keys as K
from fastpath.sockredir import libbpf as B
from fastpath.sockredir import loader
from fastpath.sockredir.maps import Counters
from fastpath.sockredir.selftest import Result, Verdict, judge

# The self-test's own max_queued: small, so the bound check needs little memory.
SELFTEST_MAX_QUEUED = 2 << 20
# Per blocking socket call in the child. Generous: a TCG guest runs 50-70x slower than the
# host, and a working kernel answers at once, so only a broken one waits this long.
OP_TIMEOUT = 20.0
DEFAULT_DEADLINE = 180.0
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def run(bound: F.QueueBound, deadline: float = DEFAULT_DEADLINE) -> Verdict:
    """Run every check against `bound`'s sk_msg build; the verdict, never an exception for
    a failed check (an exception means the test could not be set up)."""
    label = naming.name("selftest", str(os.getpid()))
    cg_path = os.path.join(CG.root(), label)
    results: list[Result] = []
    with contextlib.ExitStack() as undo:
        NS.create(label)
        undo.callback(NS.delete, label)
        CG.create(cg_path)
        undo.callback(CG.remove, cg_path)
        ops, msg = loader.load_objects(bound)
        undo.callback(ops.close)
        undo.callback(msg.close)
        cfg = {**dict.fromkeys(K.CONFIG_FIELDS, 0), "max_queued": SELFTEST_MAX_QUEUED}
        with Fd(os.dup(ops.map_fd("fp_config"))) as cfd:
            B.KernelMap(cfd, 4, K.CONFIG.size, "fp_config").update(loader.ZERO,
                                                                   K.pack_config(**cfg))
        B.prog_attach(msg.prog_fd("fp_sk_msg"), ops.map_fd("fp_sockhash"),
                      B.BPF_SK_MSG_VERDICT, "self-test sk_msg to its sockhash")
        cg_fd = undo.enter_context(Fd(os.open(cg_path, os.O_RDONLY | os.O_DIRECTORY),
                                        cg_path))
        B.prog_attach(ops.prog_fd("fp_sockops"), cg_fd.fileno(), B.BPF_CGROUP_SOCK_OPS,
                      f"self-test sockops to {cg_path}")
        undo.callback(_detach_quietly, ops.prog_fd("fp_sockops"), cg_fd)
        counters_fd = ops.map_fd("fp_counters")
        results = _fork_checks(cg_path, NS.path_of(label), counters_fd, bound, deadline)
    return judge(results)


def sweep_leftovers() -> list[str]:
    """Remove the netns and cgroup of self-tests whose process is gone (an `accel enable`
    killed mid-test leaves them): found by name, `fp-[tag-]selftest-PID`. A running
    self-test's are left alone. Its programs went with its process (nothing was pinned)."""
    prefix = naming.name("selftest") + "-"
    removed: list[str] = []

    def dead(name: str) -> bool:
        pid = name[len(prefix):]
        return pid.isdigit() and not proc.alive(int(pid))

    for ns in NS.list_names():
        if ns.startswith(prefix) and dead(ns) and NS.delete(ns):
            removed.append(f"netns {ns}")
    root = CG.root()
    for entry in sorted(os.listdir(root)):
        if entry.startswith(prefix) and dead(entry):
            removed += CG.remove(os.path.join(root, entry))
    return removed


def _detach_quietly(prog_fd: int, cg_fd: Fd) -> None:
    with contextlib.suppress(KernelError):
        B.prog_detach(prog_fd, cg_fd.fileno(), B.BPF_CGROUP_SOCK_OPS, "self-test sockops")


def _fork_checks(cg_path: str, ns_path: str, counters_fd: int, bound: F.QueueBound,
                 deadline: float) -> list[Result]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        code = 0
        try:
            _child(w, cg_path, ns_path, counters_fd, bound)
        except BaseException as e:  # reported as the running check's failure
            with contextlib.suppress(OSError):
                os.write(w, (json.dumps({"crash": f"{type(e).__name__}: {e}"}) + "\n").encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    results: list[Result] = []
    running = None
    buf = b""
    end = time.monotonic() + deadline
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                if running:
                    results.append(Result(running, False, f"no answer within {deadline:.0f} s "
                                                          "(hung)"))
                break
            ready, _, _ = select.select([r], [], [], left)
            if not ready:
                continue
            chunk = os.read(r, 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "start" in msg:
                    running = msg["start"]
                elif "crash" in msg:
                    if running:
                        results.append(Result(running, False, msg["crash"]))
                    running = None
                else:
                    results.append(Result(**msg))
                    running = None
    finally:
        os.close(r)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return results


# --- the child: one process in the self-test cgroup and netns ---

def _child(w: int, cg_path: str, ns_path: str, counters_fd: int, bound: F.QueueBound) -> None:
    CG.move(0, cg_path)
    fd = os.open(ns_path, os.O_RDONLY)
    try:
        NS.setns(fd, "enter the self-test netns")
    finally:
        os.close(fd)
    _loopback_up()
    counters = Counters(B.KernelMap(Fd(os.dup(counters_fd), "fp_counters"), 4,
                                    K.COUNTERS.size * B.possible_cpus(), "fp_counters"),
                        B.possible_cpus())
    checks = [("redirected", lambda: _redirected(counters)),
              ("intact", _intact),
              ("epoll_wakeup", _epoll_wakeup),
              ("fionread", _fionread),
              ("half_close", _half_close),
              ("peer_close", _peer_close),
              ("queue_bound", lambda: _queue_bound(counters, bound))]
    for name, fn in checks:
        os.write(w, (json.dumps({"start": name}) + "\n").encode())
        try:
            res = fn()
        except (OSError, AssertionError) as e:
            res = Result(name, False, f"{type(e).__name__}: {e}")
        res.name = name
        os.write(w, (json.dumps(res.to_dict()) + "\n").encode())


def _loopback_up() -> None:
    """`ip link set lo up` with one ioctl: importing pyroute2 costs seconds in a guest."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        got = fcntl.ioctl(s, _SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", got)[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair; both ends are in the sockhash once accept returns (sockops
    runs at ACTIVE/PASSIVE_ESTABLISHED, before connect and accept come back)."""
    with socket.create_server(("127.0.0.1", 0)) as ls:
        c = socket.create_connection(ls.getsockname(), timeout=OP_TIMEOUT)
        s, _ = ls.accept()
    s.settimeout(OP_TIMEOUT)
    return c, s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        b = s.recv(min(1 << 20, n - len(out)))
        if not b:
            break
        out += b
    return bytes(out)


def _redirected(counters: Counters) -> Result:
    before = counters.read()
    c, s = _pair()
    with c, s:
        c.sendall(b"r" * 4096)
        got = _recv_exact(s, 4096)
    after = counters.read()
    moved = after["redirected_bytes"] - before["redirected_bytes"]
    passed = after["passed_bytes"] - before["passed_bytes"]
    ok = len(got) == 4096 and moved >= 4096 and passed == 0
    return Result("", ok, f"{moved} bytes redirected, {passed} through the stack")


def _intact() -> Result:
    rng = random.Random(0x5EED)
    data = rng.randbytes(1 << 20)
    c, s = _pair()
    with c, s:
        def send():
            off = 0
            while off < len(data):
                n = rng.randint(1, 65536)
                c.sendall(data[off:off + n])
                off += n
        t = threading.Thread(target=send, daemon=True)
        t.start()
        got = _recv_exact(s, len(data))
        t.join(OP_TIMEOUT)
    ok = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    return Result("", ok, f"{len(got)} of {len(data)} bytes, sha256 "
                          f"{'matches' if ok else 'differs'}")


def _epoll_wakeup() -> Result:
    """Three level-triggered rounds and one edge-triggered round: each time the reader is
    already in epoll_wait when the data is sent (the sender waits 0.2 s first)."""
    c, s = _pair()
    worst = 0.0
    with c, s, select.epoll() as ep:
        for i, mask in enumerate([select.EPOLLIN] * 3 + [select.EPOLLIN | select.EPOLLET]):
            if i == 3:
                ep.modify(s, mask)
            else:
                if i == 0:
                    ep.register(s, mask)
            timer = threading.Timer(0.2, c.sendall, args=(b"e" * 100,))
            t0 = time.monotonic()
            timer.start()
            events = ep.poll(OP_TIMEOUT)
            waited = time.monotonic() - t0
            timer.join()
            if not events:
                return Result("", False, f"round {i + 1}: no wake-up within {OP_TIMEOUT:.0f} s "
                                         "for 100 redirected bytes")
            got = _recv_exact(s, 100)
            if len(got) != 100:
                return Result("", False, f"round {i + 1}: woke, then read {len(got)} bytes")
            worst = max(worst, waited - 0.2)
    return Result("", True, f"4 rounds woke, slowest {max(worst, 0) * 1e3:.1f} ms after send")


def _fionread() -> Result:
    c, s = _pair()
    with c, s, select.epoll() as ep:
        c.sendall(b"f" * 1000)
        ep.register(s, select.EPOLLIN)
        if not ep.poll(OP_TIMEOUT):
            return Result("", False, "the 1000 bytes never became readable")
        buf = struct.pack("i", 0)
        n = struct.unpack("i", fcntl.ioctl(s, termios.FIONREAD, buf))[0]
    return Result("", n == 1000, f"FIONREAD={n} with 1000 redirected bytes unread")


def _half_close() -> Result:
    data = bytes(range(256)) * 256
    c, s = _pair()
    with c, s:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        got = _recv_exact(s, len(data) + 1)
        eof = s.recv(1) == b"" if len(got) == len(data) else False
        s.sendall(b"answer")
        s.close()
        back = _recv_exact(c, 7)
    ok = got == data and eof and back == b"answer"
    return Result("", ok, f"read {len(got)}/{len(data)} then "
                          f"{'EOF' if eof else 'no EOF'}; answer after half-close "
                          f"{'arrived' if back == b'answer' else repr(back)}")


def _peer_close() -> Result:
    c, s = _pair()
    outcome: dict = {}

    def send():
        chunk = b"p" * 65536
        sent = 0
        try:
            while sent < (256 << 20):
                c.sendall(chunk)
                sent += len(chunk)
            outcome["end"] = f"sent {sent >> 20} MiB without an error"
        except (BrokenPipeError, ConnectionResetError) as e:
            outcome["ok"] = errno.errorcode.get(e.errno, str(e.errno))
        except OSError as e:
            outcome["end"] = f"{type(e).__name__}: {e}"

    with c:
        t = threading.Thread(target=send, daemon=True)
        t.start()
        _recv_exact(s, 256 << 10)
        s.close()
        t.join(OP_TIMEOUT * 2)
    if t.is_alive():
        return Result("", False, f"the sender was still blocked {OP_TIMEOUT * 2:.0f} s after "
                                 "its peer closed")
    if "ok" in outcome:
        return Result("", True, f"the sender got {outcome['ok']}")
    return Result("", False, outcome.get("end", "no outcome"))


def _queue_bound(counters: Counters, bound: F.QueueBound) -> Result:
    if bound.mode == "none":
        return Result("", True, "not run: this build has no bound", skipped=True)
    before = counters.read()["backlog_to_stack"]
    limit = 64 << 20
    rng = random.Random(7)
    pattern = rng.randbytes(1 << 16)
    c, s = _pair()
    with c, s:
        c.setblocking(False)
        sent = 0
        end = time.monotonic() + OP_TIMEOUT
        blocked = False
        while sent < limit and time.monotonic() < end:
            try:
                sent += c.send(pattern[sent % len(pattern):])
            except BlockingIOError:
                blocked = True
                break
        moved = counters.read()["backlog_to_stack"] - before
        got = hashlib.sha256()
        n = 0
        while n < sent:
            b = s.recv(min(1 << 20, sent - n))
            if not b:
                break
            got.update(b)
            n += len(b)
    want = hashlib.sha256()
    for off in range(0, sent, len(pattern)):
        want.update(pattern[: min(len(pattern), sent - off)])
    in_order = n == sent and got.digest() == want.digest()
    ok = blocked and moved >= 1 and in_order
    return Result("", ok, f"sender blocked after {sent / (1 << 20):.1f} MiB "
                          f"(max_queued {SELFTEST_MAX_QUEUED >> 20} MiB), moved to the stack "
                          f"{moved}x, {n} bytes read back "
                          f"{'in order' if in_order else 'OUT OF ORDER or short'}"
                  if blocked else f"no back-pressure after {sent >> 20} MiB "
                                  f"(moved to the stack {moved}x)")
