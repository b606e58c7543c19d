"""The torture test of socket redirect: many concurrent TCP streams, loopback in two pods
(identical 127.0.0.1 ports in both) and pod-to-pod across namespaces, both directions at
once, messages of 1 byte to 4 MiB, every byte checked against the sender's generator on
arrival and a SHA-256 compared at both ends; accel disabled and re-enabled underneath the
streams, with a small fp_config.max_queued half of the time so that flows also move from
the redirect to the stack mid-stream; some connections reset (SO_LINGER 0) or closed by
one end while the other sends.

Pass: every clean stream arrives complete and identical (no byte lost, reordered or
corrupted); every aborted stream delivers an exact prefix and then an error or EOF; no
end waits past the deadline.

Layout: the checks are pure (streams.py); the orchestrator (`run`) owns the namespaces and
toggles accel; one worker process,
alone in the accel cgroup, runs all the streams (`python -m fastpath.sockredir.torture
--worker SPEC`) and prints its report as JSON.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import math
import random
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time

from fastpath.errors import AlreadyExists
from fastpath.kernel.netns import run_in as in_netns
from fastpath.podnet.pair import PodPair
from fastpath.sockredir import cgroup as CG
from fastpath.sockredir import loader
from fastpath.sockredir.query import is_accelerated
from fastpath.sockredir.streams import (
    HEADER,
    KINDS,
    MODES,
    Checker,
    EndResult,
    Stream,
    TortureReport,
    add_counts,
    judge,
)

LOOP_PORT = 47011
POD_PORT = 47012


def _pump(sock: socket.socket, out: Stream, chk: Checker, deadline: float,
          abort_at: int | None, res: EndResult, sent_sha) -> None:
    """Full duplex on one non-blocking socket until both directions end; `abort_at`: reset
    the connection after sending that many bytes."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    cur, off = out.next(), 0
    send_done = cur is None
    recv_done = False
    if send_done:
        sock.shutdown(socket.SHUT_WR)
        sel.modify(sock, selectors.EVENT_READ)
    try:
        while not (send_done and recv_done):
            if time.monotonic() > deadline:
                res.failure = (f"hang: sent {res.sent}, received {res.received} of "
                               f"{chk.total} when the deadline passed")
                return
            for _key, ev in sel.select(0.5):
                if ev & selectors.EVENT_READ and not recv_done:
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        recv_done = True
                        if send_done:
                            break
                        sel.modify(sock, selectors.EVENT_WRITE)
                    elif data:
                        res.received += len(data)
                        chk.feed(data)
                        if chk.bad:
                            res.failure = chk.bad
                            return
                if ev & selectors.EVENT_WRITE and not send_done:
                    assert cur is not None  # send_done is set when out runs dry
                    try:
                        n = sock.send(memoryview(cur)[off:off + (1 << 22)])
                    except BlockingIOError:
                        n = 0
                    sent_sha.update(memoryview(cur)[off:off + n])
                    off += n
                    res.sent += n
                    if abort_at is not None and res.sent >= abort_at:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                        res.error = "reset by us"
                        return
                    if off == len(cur):
                        cur, off = out.next(), 0
                        if cur is None:
                            send_done = True
                            sock.shutdown(socket.SHUT_WR)
                            if recv_done:
                                break
                            sel.modify(sock, selectors.EVENT_READ)
    except OSError as e:
        res.error = errno.errorcode.get(e.errno or 0, str(e))
    finally:
        sel.close()
        res.complete = chk.complete
        res.recv_sha = chk.sha.hexdigest()
        res.sent_sha = sent_sha.hexdigest()


# --- worker: runs in the accel cgroup -------------------------------------------------

def _worker(spec: dict) -> dict:

    rng = random.Random(spec["seed"])
    pods = spec["pods"]  # [{"netns":..., "ip":...}, ...] a, b
    deadline_all = time.monotonic() + spec["seconds"] + spec["grace"]
    stop_new = time.monotonic() + spec["seconds"]
    lock = threading.Lock()
    pending: dict[int, dict] = {}
    results: list[dict] = []
    headerless: list[int] = []        # server ends that saw EOF/reset before the header
    orphan_failures: list[str] = []   # server ends that failed before knowing their plan

    def listener(ns, addr):
        return in_netns(ns, lambda: socket.create_server(addr, backlog=256))

    listeners = {
        "loop-a": (pods[0]["netns"], listener(pods[0]["netns"], ("127.0.0.1", LOOP_PORT))),
        "loop-b": (pods[1]["netns"], listener(pods[1]["netns"], ("127.0.0.1", LOOP_PORT))),
        "pod-ab": (pods[0]["netns"], listener(pods[1]["netns"], (pods[1]["ip"], POD_PORT))),
        "pod-ba": (pods[1]["netns"], listener(pods[0]["netns"], (pods[0]["ip"], POD_PORT))),
    }
    targets = {"loop-a": ("127.0.0.1", LOOP_PORT), "loop-b": ("127.0.0.1", LOOP_PORT),
               "pod-ab": (pods[1]["ip"], POD_PORT), "pod-ba": (pods[0]["ip"], POD_PORT)}

    def server_end(conn: socket.socket):
        plan: dict | None = None
        hdr = b""
        try:
            conn.settimeout(10)
            try:
                while len(hdr) < HEADER.size:
                    b = conn.recv(HEADER.size - len(hdr))
                    if not b:
                        break
                    hdr += b
            except OSError as e:
                if isinstance(e, TimeoutError):
                    raise
            if len(hdr) < HEADER.size:
                # EOF or reset before the header: a client reset this connection before the
                # server read anything (an RST may discard unread bytes); settled below
                with lock:
                    headerless.append(len(hdr))
                return
            cid, cseed, sseed = HEADER.unpack(hdr)
            with lock:
                plan = pending.pop(cid)
            res = EndResult()
            acc = is_accelerated(conn)
            abort_at = plan["abort_at"] if plan["mode"] == "reset-server" else None
            out = Stream(sseed, plan["sbudget"], spec["max_size"])
            chk = Checker(cseed, plan["cbudget"], spec["max_size"])
            if plan["mode"] == "close-while-sending":
                # stop reading after a prefix, then close with the client still sending
                chk_limit = plan["abort_at"]
                conn.setblocking(True)
                conn.settimeout(5)
                while res.received < chk_limit:
                    try:
                        b = conn.recv(min(1 << 20, chk_limit - res.received))
                    except OSError as e:
                        res.error = errno.errorcode.get(e.errno or 0, str(e))
                        break
                    if not b:
                        break
                    res.received += len(b)
                    chk.feed(b)
                    if chk.bad:
                        res.failure = chk.bad
                        break
                res.error = res.error or "closed by us"
            else:
                _pump(conn, out, chk, deadline_all, abort_at, res, hashlib.sha256())
            plan["server"] = res.__dict__
            plan["server_accelerated"] = acc
        except Exception as e:  # reported, not swallowed: a failure of the run
            phase = "run" if plan else f"header ({len(hdr)} bytes)"
            if plan is None:
                plan = {"id": -1}
                with lock:
                    orphan_failures.append(f"server {phase}: {type(e).__name__}: {e}")
            plan["server"] = {"failure": f"server {phase}: {type(e).__name__}: {e}"}
        finally:
            conn.close()
            if plan is not None:
                with lock:
                    results.append(plan)

    def acceptor(kind):
        ls = listeners[kind][1]
        ls.settimeout(0.5)
        while time.monotonic() < deadline_all and not stopping.is_set():
            try:
                conn, _ = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=server_end, args=(conn,), daemon=True).start()

    def client_end(plan):
        res = EndResult()
        sock = None
        try:
            ns = listeners[plan["kind"]][0]
            sock = in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.settimeout(10)
            sock.connect(targets[plan["kind"]])
            plan["client_accelerated"] = is_accelerated(sock)
            sock.sendall(HEADER.pack(plan["id"], plan["cseed"], plan["sseed"]))
            abort_at = plan["abort_at"] if plan["mode"] == "reset-client" else None
            out = Stream(plan["cseed"], plan["cbudget"], spec["max_size"])
            chk = Checker(plan["sseed"], plan["sbudget"], spec["max_size"])
            _pump(sock, out, chk, deadline_all, abort_at, res, hashlib.sha256())
        except Exception as e:
            res.failure = f"client: {type(e).__name__}: {e}"
        finally:
            if sock is not None:
                sock.close()
            plan["client"] = res.__dict__
            client_done.release()

    stopping = threading.Event()
    acceptors = [threading.Thread(target=acceptor, args=(k,), daemon=True) for k in KINDS]
    for t in acceptors:
        t.start()
    client_done = threading.Semaphore(0)
    started = 0
    clients: list[tuple[dict, threading.Thread]] = []
    running = 0
    while time.monotonic() < stop_new:
        while running < spec["connections"]:
            mode = rng.choice(MODES)
            cb = int(math.exp(rng.uniform(0, math.log(spec["budget"]))))
            sb = int(math.exp(rng.uniform(0, math.log(spec["budget"]))))
            if mode == "close-while-sending":
                sb = 0
                cb = max(cb, 4 << 20)
            plan = {"id": started, "kind": rng.choice(KINDS), "mode": mode,
                    "cseed": rng.getrandbits(63), "sseed": rng.getrandbits(63),
                    "cbudget": cb, "sbudget": sb,
                    "abort_at": rng.randint(0, max(0, min(cb, sb) if mode == "reset-server"
                                                   else cb) // 2)}
            with lock:
                pending[started] = plan
            t = threading.Thread(target=client_end, args=(plan,), daemon=True)
            t.start()
            clients.append((plan, t))
            started += 1
            running += 1
        if client_done.acquire(timeout=0.2):
            running -= 1
    for _, t in clients:
        t.join(max(0.1, deadline_all - time.monotonic()))
    # servers finish after their clients; a stuck one reports itself at deadline_all
    while time.monotonic() < deadline_all + 5:
        with lock:
            if len(results) >= len(clients):
                break
        time.sleep(0.05)
    stopping.set()
    for _, ls in listeners.values():
        ls.close()
    by_id = {p["id"]: p for p, _ in clients}
    for p in by_id.values():
        p.setdefault("client", {"failure": "client end never finished (hang)"})
        if "server" not in p and p["mode"] == "reset-client" and headerless and \
                p["client"].get("error") == "reset by us":
            # this client reset before its server end read the header: nothing to check
            headerless.pop()
            p["server"] = {"sent": 0, "received": 0, "error": "reset before the header",
                           "complete": False, "recv_sha": "", "sent_sha": ""}
        p.setdefault("server", {"failure": "server end never finished (hang)"})
    return {"connections": list(by_id.values()), "orphan_failures": orphan_failures,
            "unmatched_headerless": len(headerless)}


def run(seconds: float = 30.0, connections: int = 24, max_size: int = 4 << 20,
        budget: int = 12 << 20, seed: int | None = None, toggle_every: tuple = (0.5, 2.0),
        grace: float = 30.0) -> TortureReport:

    if loader.is_enabled():
        raise AlreadyExists("accel is enabled in this instance; the torture test toggles it "
                            "itself", hint="fastpath accel disable, or use FASTPATH_INSTANCE")
    seed = random.randrange(1 << 31) if seed is None else seed
    rng = random.Random(seed)
    rep = TortureReport(seconds=seconds, seed=seed)
    pp = PodPair(prefix="tt", cidr="10.244.78.0/24")
    local = [ipaddress.ip_network(pp.cidr)]
    worker = None
    cg = CG.default_path()
    try:
        pp.create()
        # a small max_queued half of the time, so flows also switch redirect -> stack
        # mid-stream when their reader falls behind
        queues = (1 << 20, loader.DEFAULT_MAX_QUEUED)
        loader.enable(cg, local, {"max_queued": rng.choice(queues)})
        spec = {"seed": seed, "seconds": seconds, "grace": grace, "connections": connections,
                "max_size": max_size, "budget": budget,
                "pods": [{"netns": p.name, "ip": p.ip} for p in pp.pods]}
        worker = subprocess.Popen(
            [sys.executable, "-m", "fastpath.sockredir.torture", "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: CG.move(0, cg))
        end = time.monotonic() + seconds
        enabled = True
        while time.monotonic() < end and worker.poll() is None:
            time.sleep(min(rng.uniform(*toggle_every), max(0.0, end - time.monotonic())))
            if time.monotonic() >= end:
                break
            if enabled:
                add_counts(rep.counters, loader.status()["counters"])
                loader.disable()
            else:
                loader.enable(cg, local, {"max_queued": rng.choice(queues)})
            enabled = not enabled
            rep.toggles += 1
        try:
            out, err = worker.communicate(timeout=grace + 20)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, err = worker.communicate()
            rep.worker_error = "worker did not finish in time (hang)"
        if worker.returncode != 0 and rep.worker_error is None:
            rep.worker_error = f"worker exited {worker.returncode}: {err.strip()[-2000:]}"
        if out.strip():
            got = json.loads(out)
            rep.connections = got["connections"]
            rep.failures += got["orphan_failures"]
            if got["unmatched_headerless"]:
                rep.failures.append(f"{got['unmatched_headerless']} server ends saw EOF before "
                                    "the header on connections no client reset")
        for c in rep.connections:
            why = judge(c)
            if why:
                rep.failures.append(f"#{c['id']} {c['kind']} {c['mode']}: {why}")
        if loader.is_enabled():
            add_counts(rep.counters, loader.status()["counters"])
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        if loader.is_enabled():
            loader.disable()
        CG.remove(cg)
        pp.remove()
    return rep


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
    else:
        print("usage: fastpath accel torture [--seconds N]", file=sys.stderr)
        sys.exit(2)
