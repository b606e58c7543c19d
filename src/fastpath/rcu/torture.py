"""rcutorture for fastpath: prove that readers never see a torn, half-written or reclaimed
entry, while a writer changes the table as fast as it can and readers die at random.

One supervisor process is the writer (single-threaded, so it may fork). It forks:
- reader processes, each with `threads` reader threads (one SharedTable slot each) that
  look up random keys constantly, in snapshots of a few lookups between quiescent states;
  every value carries a CRC32 of itself and its key, and at the end of each snapshot the
  reader checks that the version it read is still the one it started with;
- one process that tortures the in-process Domain the same way (section and QSBR readers,
  an updater that retires objects with call_rcu and poisons them in the callback).
The writer replaces, inserts and deletes entries, in single updates and batches, and now and
then republishes the whole table. Every reclaimed version buffer is poisoned (0xDE) before
reuse, so a reader of reclaimed memory fails its checksum or its bounds checks loudly.
Every `kill_every` seconds a random reader process is SIGKILLed (possibly inside a read
section, online) and replaced; grace periods must go on without it.

Counts live in a small shared region, so a killed reader's reads still count; the first
bad reads are described on a pipe. Bounded: everything stops by `seconds` plus a few
seconds of reaping.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import zlib

from fastpath._atomic import AtomicView
from fastpath.rcu import registry
from fastpath.rcu.domain import Domain, Protected
from fastpath.rcu.layout import TornRead
from fastpath.rcu.table import SharedTable
from fastpath.rcu.values import check_value, key_of, make_value
from fastpath.shm.memfd import PAGE_SIZE, Region

MAX_PROCS = 500
_MAX_REPORTS = 3


class _Counters:
    """Per-process counters [reads, bad, snapshots] in a shared region."""

    def __init__(self, region: Region) -> None:
        self.av = AtomicView(region.buf)

    def add(self, proc: int, reads: int, bad: int = 0, snaps: int = 0) -> None:
        b = proc * 32
        self.av.fetch_add(b, reads)
        if bad:
            self.av.fetch_add(b + 8, bad)
        if snaps:
            self.av.fetch_add(b + 16, snaps)

    def totals(self, nprocs: int) -> tuple[int, int, int]:
        r = b = s = 0
        for p in range(nprocs):
            r += self.av.load(p * 32)
            b += self.av.load(p * 32 + 8)
            s += self.av.load(p * 32 + 16)
        return r, b, s


def _report(wfd: int, lock: threading.Lock, sent: list, msg: str) -> None:
    with lock:
        if sent[0] >= _MAX_REPORTS:
            return
        sent[0] += 1
    os.write(wfd, (msg[:400].replace("\n", " ") + "\n").encode())


def _reader_thread(table, counters: _Counters, proc: int, nkeys: int, deadline: float,
                   wfd: int, lock, sent, seed: int) -> None:
    rnd = random.Random(seed)
    r = table.reader()
    try:
        while time.monotonic() < deadline:
            reads = bad = 0
            for _ in range(64):
                try:
                    snap = r.snapshot()
                    for _ in range(rnd.randint(1, 8)):
                        k = key_of(rnd.randrange(nkeys))
                        v = snap.lookup(k)
                        reads += 1
                        if v is not None and (err := check_value(k, v)):
                            bad += 1
                            _report(wfd, lock, sent, f"pid {os.getpid()}: {err}")
                    if not snap.intact():
                        bad += 1
                        _report(wfd, lock, sent, f"pid {os.getpid()}: version at {snap.base} "
                                "changed under a reader (reclaimed inside a grace period)")
                except TornRead as e:
                    bad += 1
                    _report(wfd, lock, sent, f"pid {os.getpid()}: {e}")
                r.quiescent()
                if rnd.random() < 0.0002:   # an event loop blocking now and then
                    r.offline()
                    time.sleep(rnd.random() * 0.002)
                    r.online()
            counters.add(proc, reads, bad, 64)
    finally:
        r.close()


def _reader_process(fd: int, counters_region: Region, proc: int, threads: int, nkeys: int,
                    deadline: float, wfd: int, seed: int) -> None:
    counters = _Counters(counters_region)
    table = SharedTable.attach(fd, reader=False)
    lock = threading.Lock()
    sent = [0]
    ts = [threading.Thread(target=_reader_thread, args=(table, counters, proc, nkeys, deadline,
                                                        wfd, lock, sent, seed * 100 + i))
          for i in range(threads - 1)]
    for t in ts:
        t.start()
    _reader_thread(table, counters, proc, nkeys, deadline, wfd, lock, sent, seed * 100 + threads)
    for t in ts:
        t.join()


class _Res:
    """A resource the GC does not manage (think: an fd): usable until retired + a grace period."""

    __slots__ = ("serial", "alive", "checksum")

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.alive = True
        self.checksum = zlib.crc32(serial.to_bytes(8, "little"))


def _poison(res: _Res) -> None:
    res.alive = False
    res.checksum = 0xDEDEDEDE


def _domain_process(counters_region: Region, proc: int, threads: int, deadline: float,
                    wfd: int, name: str) -> None:
    """Torture the in-process Domain: readers must never see a retired (poisoned) object."""
    counters = _Counters(counters_region)
    d = Domain(name, export_stats=True)
    # listed by `fastpath rcu stats` while it runs
    note = registry.register(name, os.getpid(), d.stats_fd, PAGE_SIZE, "domain")
    refs = [Protected(d, _Res(i)) for i in range(4)]
    lock, sent = threading.Lock(), [0]

    def check(res: _Res) -> int:
        if not res.alive or res.checksum != zlib.crc32(res.serial.to_bytes(8, "little")):
            _report(wfd, lock, sent, f"domain: object {res.serial} used after its grace period")
            return 1
        return 0

    def section_reader(seed: int) -> None:
        rnd = random.Random(seed)
        sec = d.read()
        while time.monotonic() < deadline:
            reads = bad = 0
            for _ in range(256):
                with sec:
                    res = refs[rnd.randrange(4)].get()
                    for _ in range(rnd.randint(1, 4)):
                        bad += check(res)
                        reads += 1
            counters.add(proc, reads, bad, 256)

    def qsbr_reader(seed: int) -> None:
        rnd = random.Random(seed)
        d.online()
        while time.monotonic() < deadline:
            reads = bad = 0
            for _ in range(256):
                res = refs[rnd.randrange(4)].get()
                bad += check(res)
                reads += 1
                d.quiescent()
            counters.add(proc, reads, bad, 256)
        d.offline()

    ts = [threading.Thread(target=section_reader if i % 2 == 0 else qsbr_reader, args=(i,))
          for i in range(threads)]
    for t in ts:
        t.start()
    serial = 4
    while time.monotonic() < deadline:
        refs[serial % 4].replace(_Res(serial), retire=_poison)
        serial += 1
        if serial % 64 == 0:
            time.sleep(0.001)  # let the callbacks' grace periods end now and then
    for t in ts:
        t.join()
    d.barrier(timeout=10)
    registry.unregister(note)
    d.close()
    st = d.stats()
    os.write(wfd, ("domain-stats " + json.dumps({k: st[k] for k in (
        "grace_periods", "gp_mean_ms", "gp_max_ms", "callbacks_run", "callback_errors",
        "pending_callbacks")}) + "\n").encode())


def run(seconds: float = 10.0, *, readers: int = 3, threads: int = 2, nkeys: int = 512,
        kill_every: float = 0.5, seed: int | None = None, name: str = "torture",
        domain_threads: int = 2, on_progress=None) -> dict:
    """Run the torture for `seconds`; returns counts and grace-period statistics."""

    seed = random.randrange(1 << 30) if seed is None else seed
    rnd = random.Random(seed)
    capacity = 32 + 8 * 2048 + nkeys * 400 + 4096
    table = SharedTable.create(capacity, readers=max(64, readers * threads * 4), versions=32,
                               name=name, poison=True, stall_after=2.0)
    note = registry.register(name, os.getpid(), table.fd, table.size, "table")
    counters_region = Region.create(MAX_PROCS * 32, "fp-rcu-torture-counters")
    counters = _Counters(counters_region)
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    t0 = time.monotonic()
    deadline = t0 + seconds
    procs: dict[int, int] = {}      # pid -> counter index
    nprocs = 0
    started = killed = 0
    writer_ops = 0
    gen = 0

    def spawn(target, args) -> int:
        nonlocal nprocs, started
        if nprocs >= MAX_PROCS:
            raise RuntimeError(f"torture: {MAX_PROCS} processes started; readers keep dying")
        idx = nprocs
        nprocs += 1
        pid = os.fork()
        if pid == 0:   # child: never returns into the supervisor's code
            code = 0
            try:
                os.close(rfd)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                target(*args(idx))
            except BaseException as e:  # noqa: BLE001 - a child reports, then exits
                code = 1
                try:
                    os.write(wfd, f"pid {os.getpid()}: crashed: {e!r}\n".encode()[:400])
                except OSError:
                    pass
            finally:
                os._exit(code)
        procs[pid] = idx
        started += 1
        return pid

    def spawn_reader() -> int:
        return spawn(_reader_process, lambda idx: (table.fd, counters_region, idx, threads, nkeys,
                                                   deadline, wfd, rnd.randrange(1 << 30)))

    errors: list[str] = []
    crashed = 0
    try:
        # Initial table, then the readers.
        data = {}
        for i in range(0, nkeys, 2):
            gen += 1
            data[key_of(i)] = make_value(key_of(i), gen, rnd)
        table.publish(data)
        dom_pid = None
        if domain_threads:
            dom_pid = spawn(_domain_process, lambda idx: (counters_region, idx, domain_threads,
                                                          deadline, wfd, name))
        for _ in range(readers):
            spawn_reader()
        next_kill = time.monotonic() + kill_every * (0.5 + rnd.random())
        next_progress = time.monotonic() + 1.0
        present = set(data)
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            op = rnd.random()
            if op < 0.02:   # republish everything
                gen += 1
                data = {k: make_value(k, gen, rnd) for k in list(present)}
                table.publish(data)
            elif op < 0.12:  # a batch
                puts: dict[bytes, bytes] = {}
                dels: list[bytes] = []
                for _ in range(rnd.randint(2, 16)):
                    k = key_of(rnd.randrange(nkeys))
                    if k in present and rnd.random() < 0.4:
                        dels.append(k)
                        puts.pop(k, None)
                    else:
                        gen += 1
                        puts[k] = make_value(k, gen, rnd)
                        if k in dels:
                            dels.remove(k)
                table.apply(puts, dels)
                present.difference_update(dels)
                present.update(puts)
            else:
                k = key_of(rnd.randrange(nkeys))
                if k in present and op < 0.40:
                    table.delete(k)
                    present.discard(k)
                else:   # replace or insert
                    gen += 1
                    table.update(k, make_value(k, gen, rnd))
                    present.add(k)
            writer_ops += 1
            # Reap the dead (crashes are errors; our own kills are not).
            while procs:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                procs.pop(pid, None)
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                    crashed += 1     # reported on the pipe; not replaced
                elif pid != dom_pid and time.monotonic() < deadline - 0.2:
                    spawn_reader()   # one we killed
            if now >= next_kill:
                victims = [p for p in procs if p != dom_pid]
                if victims:
                    os.kill(rnd.choice(victims), signal.SIGKILL)   # reaped and replaced above
                    killed += 1
                next_kill = now + kill_every * (0.5 + rnd.random())
            if on_progress and now >= next_progress:
                next_progress = now + 1.0
                r, b, _ = counters.totals(nprocs)
                on_progress({"elapsed": round(now - t0, 1), "reads": r, "bad_reads": b,
                             "writer_ops": writer_ops, "killed": killed})
    finally:
        # Bounded teardown: readers stop at the deadline by themselves; wait a little,
        # then kill what is left.
        limit = time.monotonic() + 10.0
        while procs and time.monotonic() < limit:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.01)
                continue
            procs.pop(pid, None)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                crashed += 1
        for pid in list(procs):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            errors.append(f"pid {pid}: did not stop by the deadline; killed")
        os.close(wfd)
        domain_stats = {}
        try:
            for line in os.read(rfd, 1 << 16).decode(errors="replace").splitlines():
                if line.startswith("domain-stats "):
                    domain_stats = json.loads(line.split(" ", 1)[1])
                else:
                    errors.append(line)
        except BlockingIOError:
            pass
        os.close(rfd)
        table.reclaim()
        stats = table.stats()
        registry.unregister(note)
        table.close()
        reads, bad, snaps = counters.totals(nprocs)
        counters.av.release()
        counters_region.close()

    return {
        "seconds": round(time.monotonic() - t0, 2), "seed": seed, "reader_processes": readers,
        "threads_per_reader": threads, "keys": nkeys, "reads": reads, "snapshots": snaps,
        "bad_reads": bad, "crashed": crashed, "writer_ops": writer_ops,
        "publishes": stats["publishes"], "readers_started": started - (1 if domain_threads else 0),
        "readers_killed": killed, "grace_periods": stats["grace_periods"],
        "gp_mean_ms": stats["gp_mean_ms"], "gp_max_ms": stats["gp_max_ms"],
        "dead_readers_reclaimed": stats["dead_readers"], "stalls": stats["stalls"],
        "domain": domain_stats,
        "errors": errors, "ok": bad == 0 and crashed == 0 and not errors and reads > 0,
    }
