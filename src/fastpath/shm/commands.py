"""`fastpath shm send FILE --to SOCKET` and `fastpath shm recv --listen SOCKET`: move a file
through a sealed memfd region handed over a Unix socket, for people to try fastpath.shm."""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from fastpath.output import add_json_flag

    p = sub.add_parser("shm", help="shared memory between local processes (memfd + SCM_RIGHTS)")
    ssub = p.add_subparsers(dest="shm_command", metavar="SUBCOMMAND", required=True)

    s = ssub.add_parser("send", help="hand FILE to a receiver as a sealed, read-only memfd region")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--to", required=True, metavar="SOCKET", help="the receiver's Unix socket")
    s.add_argument("--writable", action="store_true",
                   help="do not write-seal the region (the receiver still maps it read-only)")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the verdict")
    add_json_flag(s)
    s.set_defaults(func=_send)

    r = ssub.add_parser("recv", help="listen on SOCKET and receive regions from allowed peers")
    r.add_argument("--listen", required=True, metavar="SOCKET", help="Unix socket path to create")
    r.add_argument("--out", metavar="FILE", help="write the payload here (default: only report it)")
    r.add_argument("--allow-uid", type=int, action="append", default=None, metavar="UID",
                   help="allowed peer uid (repeatable; default: our own uid)")
    r.add_argument("--allow-gid", type=int, action="append", default=None, metavar="GID",
                   help="allowed peer gid (repeatable)")
    r.add_argument("--count", type=int, default=1, help="regions to receive before exiting")
    r.add_argument("--timeout", type=float, default=None,
                   help="give up after this many seconds without a region (default: wait)")
    add_json_flag(r)
    r.set_defaults(func=_recv)


def _send(args: argparse.Namespace) -> int:
    import os
    import time

    from fastpath.errors import KernelError, NotFound
    from fastpath.output import emit
    from fastpath.shm.handover import Connection
    from fastpath.shm.memfd import Region

    try:
        fd = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NotFound(f"no such file: {args.file}", op="shm send", errno=e.errno) from e
    except OSError as e:
        raise KernelError.from_oserror(f"open {args.file}", e) from e
    t0 = time.perf_counter()
    try:
        size = os.fstat(fd).st_size
        region = Region.create(size, "fp-shm-send")
        with region:
            region.populate()
            got = 0
            while got < size:  # read(2) straight into the mapping: the only copy
                n = os.readv(fd, [region.buf[got:]])
                if n == 0:
                    break
                got += n
            with Connection.connect(args.to, timeout=args.timeout) as conn:
                conn.send_region(region, got, readonly=not args.writable, timeout=args.timeout)
                peer = conn.peer
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    data = {"file": args.file, "bytes": got, "to": args.to, "sealed": "shrink,grow" +
            ("" if args.writable else ",future_write"), "seconds": round(dt, 6),
            "receiver": {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid}}
    emit(args, data, lambda d: f"sent {d['bytes']} bytes of {d['file']} to {d['to']} "
                               f"(receiver pid {peer.pid}) in {dt * 1e3:.2f} ms")
    return 0


def _recv(args: argparse.Namespace) -> int:
    import errno
    import hashlib
    import signal
    import time

    from fastpath.errors import KernelError, UsageError
    from fastpath.output import emit, print_json, wants_json
    from fastpath.shm.errors import HandoverRefused, PeerDied, PeerNotAllowed
    from fastpath.shm.handover import AllowList, Listener

    if args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.allow_uid is None and args.allow_gid is None:
        allow = AllowList()
    else:
        allow = AllowList(frozenset(args.allow_uid or ()), frozenset(args.allow_gid or ()))
    received: list[dict] = []
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    signal.signal(signal.SIGTERM, _terminated)  # unwind, so the socket file is removed
    with Listener(args.listen, allow) as listener:
        while len(received) < args.count:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                conn = listener.accept(timeout=left)
            except PeerNotAllowed as e:
                print(f"fastpath: refused: {e}", file=sys.stderr)
                continue
            except HandoverRefused as e:
                if e.errno == errno.ETIMEDOUT:
                    raise HandoverRefused(f"{len(received)} of {args.count} regions received in "
                                          f"{args.timeout:g}s", op=f"shm recv on {args.listen}",
                                          errno=errno.ETIMEDOUT) from None
                raise
            with conn:
                t0 = time.perf_counter()
                try:
                    rx = conn.recv_region(timeout=left if left is not None else 30.0)
                except (HandoverRefused, PeerDied) as e:
                    if isinstance(e, HandoverRefused) and e.errno == errno.ETIMEDOUT and left is not None:
                        raise
                    print(f"fastpath: refused: {e}", file=sys.stderr)
                    continue
                with rx:
                    digest = hashlib.sha256(rx.payload).hexdigest()
                    if args.out:
                        _write_out(args.out, rx.payload, KernelError)
                    dt = time.perf_counter() - t0
                    received.append({"bytes": rx.length, "region_bytes": rx.region.size,
                                     "sha256": digest, "out": args.out, "seconds": round(dt, 6),
                                     "sealed": _seal_names(rx.region.seals),
                                     "sender": {"pid": rx.peer.pid, "uid": rx.peer.uid,
                                                "gid": rx.peer.gid}})
    data = received[0] if args.count == 1 else {"received": received}
    if wants_json(args):
        print_json(data)
        return 0
    emit(args, data, lambda d: "\n".join(
        f"received {r['bytes']} bytes from pid {r['sender']['pid']} (uid {r['sender']['uid']}), "
        f"sealed {r['sealed']}, sha256 {r['sha256'][:16]}..."
        + (f", written to {r['out']}" if r["out"] else "") for r in received))
    return 0


def _terminated(signum, frame):
    raise KeyboardInterrupt


def _write_out(path: str, payload: memoryview, KernelError) -> None:
    from fastpath.kernel.files import atomic_write

    try:
        atomic_write(path, payload)
    except OSError as e:
        raise KernelError.from_oserror(f"write {path}", e) from e


def _seal_names(seals: int) -> str:
    from fastpath.shm import memfd

    names = [(memfd.F_SEAL_SEAL, "seal"), (memfd.F_SEAL_SHRINK, "shrink"), (memfd.F_SEAL_GROW, "grow"),
             (memfd.F_SEAL_WRITE, "write"), (memfd.F_SEAL_FUTURE_WRITE, "future_write")]
    return ",".join(n for bit, n in names if seals & bit) or "none"
