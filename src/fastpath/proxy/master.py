"""The proxy's master process: owns the config and the listening sockets, forks one
worker per slot, reloads on SIGHUP, drains on SIGTERM.

Decisions:
- Listening sockets belong to the master, one SO_REUSEPORT socket per (service, slot),
  so the kernel spreads connections over the workers (socket(7), SO_REUSEPORT). A reload
  hands the *same* sockets to the new workers, then tells the old ones to drain: no
  listening socket closes while its address is still served, so nothing in an accept
  queue is reset and no established connection is dropped.
- A reload first parses and validates the whole file and binds any new address; if
  either fails, the running generation stays as it is and the reason is logged and
  written to the status (`fastpath proxy reload` prints it).
- The service table (each service's backends) is published by the master in an RCU
  SharedTable (fastpath.rcu, a memfd the workers inherit); workers read it between
  events. A reload that changes backends only is published there and applied in place:
  no new workers, connections, health state and least-connection counts stay.
- Workers are forked (no exec): they start in a few ms with the config already parsed,
  and get SIGTERM when the master dies (PR_SET_PDEATHSIG).
- A worker of the current generation that dies is restarted (at most once a second).

Programmed mode (`proxy run --program`, what a node agent starts): no file and no SIGHUP.
The master listens on `program.sock` in its run directory; a node agent sends it, with
SCM_RIGHTS, the memfd of an RCU SharedTable the agent writes its services into. The
master reads that table every PROGRAM_POLL and applies each new version as a reload:
backends in place, new listeners for new addresses. It is an RCU reader that sleeps
between reads, so it is offline except for the read itself (online, look up, offline): a
reader online while it sleeps holds every grace period up, and the agent's writer runs
out of version buffers after a few publishes. A restarted agent sends a fresh table and
the master switches to it: workers, listeners and connections stay.

The master's own table (its workers read it) must not stop the master either: a publish
that finds no free version buffer is kept pending and retried every loop, and a worker
that holds a grace period up for WORKER_HUNG_AFTER seconds while alive is hung (workers
report a quiescent state every 0.1 s): the master kills it, and the respawn rule starts a
new one. A hung worker serves nothing, as HAProxy's watchdog reasons.

Files, in the run directory `$FASTPATH_STATE_DIR/proxy/fp-[<tag>-]proxy-<name>/`:
`master.json` (pid, config, generation, workers, last reload), `worker-<pid>.json`
(each worker's counters, refreshed twice a second and on SIGUSR1 from `status`),
`program.sock` in programmed mode.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import time
from dataclasses import replace
from pathlib import Path

from fastpath import naming, state
from fastpath.errors import AlreadyExists, FastpathError, KernelError
from fastpath.kernel import netns, proc
from fastpath.kernel.files import atomic_write, socket_path
from fastpath.kernel.libc import libc
from fastpath.proxy import config as configmod
from fastpath.proxy.config import ProxyConfig
from fastpath.proxy.splice import LINGER_ABORT
from fastpath.proxy.worker import TABLE_KEY, Worker
from fastpath.rcu.table import GraceStalled, SharedTable

log = logging.getLogger("fastpath.proxy")
LISTEN_BACKLOG = 4096
PROGRAM_SOCKET = "program.sock"
PROGRAM_KEY = b"services"   # the agent's table: JSON {name: {"listen": .., "backends": [..]}}
PROGRAM_POLL = 0.05         # seconds between reads of the agent's table
WORKER_HUNG_AFTER = 10.0    # seconds a live worker may hold a grace period up
PROGRAM_RETRY = 1.0         # seconds before a refused table of the agent's is tried again


def run_root() -> Path:
    return state.state_dir() / "proxy"


def run_roots() -> list[Path]:
    """Where proxies of this state dir keep their run dirs: its own root, and those of
    node agents that live below it (the demo's agents, one state dir per node under
    `nodes/<scope>/<node>`), so `proxy status` on the machine sees every node's proxy."""
    nested = state.state_dir() / "nodes" / naming.scope().rstrip("-")
    return [run_root(), *sorted(p / "proxy" for p in nested.glob("*") if (p / "proxy").is_dir())]


def run_dir(name: str) -> Path:
    return run_root() / naming.name("proxy", name)


def program_socket(name: str) -> Path:
    return socket_path(run_dir(name) / PROGRAM_SOCKET)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def make_listener(addr: tuple[str, int]) -> socket.socket:
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted ones
        # inherited too: an accepted socket is reset when its worker dies (proxy/splice.py)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
        s.bind(addr)
        s.listen(LISTEN_BACKLOG)
    except OSError as e:
        s.close()
        raise KernelError.from_oserror(f"listen on {addr[0]}:{addr[1]}", e) from None
    return s


TABLE_CAPACITY = 256 << 10   # bytes per table version: thousands of backends as JSON


def _backends_only(old: ProxyConfig, new: ProxyConfig) -> bool:
    """Whether `new` differs from `old` in services' backend lists alone."""
    def strip(c: ProxyConfig) -> ProxyConfig:
        return replace(c, services=tuple(replace(s, backends=()) for s in c.services))
    return strip(old) == strip(new)


def enter_netns(name: str) -> None:
    """Move this process into the named network namespace before any socket exists."""
    netns.join(name)


def _die_with_parent(master: int) -> None:
    """A worker gets SIGTERM (and drains) when its master dies, even by SIGKILL
    (prctl(2) PR_SET_PDEATHSIG), so no orphan keeps serving an old config."""
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != master:  # the master died before prctl: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


class ListenerSet:
    """(address, slot) -> listening socket, kept across generations."""

    def __init__(self) -> None:
        self.socks: dict[tuple[tuple[str, int], int], socket.socket] = {}

    def prepare(self, cfg: ProxyConfig) -> list[dict[str, socket.socket]]:
        """Per slot, service name -> socket; binds what is new, all or nothing."""
        made: list[tuple] = []
        out: list[dict[str, socket.socket]] = []
        try:
            for slot in range(cfg.worker_count()):
                per: dict[str, socket.socket] = {}
                for svc in cfg.services:
                    key = (svc.listen, slot)
                    if key not in self.socks:
                        self.socks[key] = make_listener(svc.listen)
                        made.append(key)
                    per[svc.name] = self.socks[key]
                out.append(per)
        except FastpathError:
            for key in made:
                self.socks.pop(key).close()
            raise
        return out

    def retire_unused(self, cfg: ProxyConfig) -> None:
        keep = {(svc.listen, slot) for slot in range(cfg.worker_count()) for svc in cfg.services}
        for key in [k for k in self.socks if k not in keep]:
            self.socks.pop(key).close()

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        self.socks.clear()


class Master:
    def __init__(self, cfg: ProxyConfig, path: str, name: str,
                 overrides: dict | None = None, program: bool = False) -> None:
        self.overrides = overrides or {}   # command-line settings win over the file's
        self.cfg = replace(cfg, **self.overrides)
        self.path = path
        self.name = name
        self.dir = run_dir(name)
        self.listeners = ListenerSet()
        self.generation = 0
        self.workers: dict[int, tuple[int, int]] = {}   # pid -> (generation, slot)
        self.last_reload: dict = {}
        self.flags: set[str] = set()
        self.respawn_after: dict[int, float] = {}
        self.table: SharedTable | None = None
        self.claimed = False   # the run dir is ours (no other live master of this name)
        self.program = program
        self.control: socket.socket | None = None
        self.source: SharedTable | None = None    # the agent's table (programmed mode)
        self.source_seen: bytes | None = None
        self.retry_program_at = float("inf")
        self.program_backoff = PROGRAM_RETRY
        self.table_pending = False   # a publish to the workers waits for a free buffer
        self.table_stall: str | None = None

    def _claim_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        mj = self.dir / "master.json"
        if mj.exists():
            try:
                old = json.loads(mj.read_text())
            except ValueError:
                old = {}
            if old.get("pid") and old["pid"] != os.getpid() and proc.alive(old["pid"]):
                raise AlreadyExists(f"proxy {self.name!r} is already running (pid {old['pid']})",
                                    hint="fastpath proxy stop, or use --name")
        for f in self.dir.glob("worker-*.json"):
            f.unlink(missing_ok=True)
        self.claimed = True

    def publish(self) -> None:
        write_json(self.dir / "master.json", {
            "name": self.name, "pid": os.getpid(), "config": self.path,
            "generation": self.generation, "instance": naming.instance(),
            "workers": [{"pid": p, "generation": g, "slot": s}
                        for p, (g, s) in sorted(self.workers.items())],
            "last_reload": self.last_reload, "running_config": configmod.to_dict(self.cfg),
            "table_stall": self.table_stall,
        })

    def _spawn(self, slot: int, per_slot: dict[str, socket.socket]) -> int:
        master = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _die_with_parent(master)
                # the other slots' listeners are the master's business
                mine = {s.fileno() for s in per_slot.values()}
                for s in self.listeners.socks.values():
                    if s.fileno() not in mine:
                        s.close()
                w = Worker(self.cfg, per_slot, slot, self.generation,
                           str(self.dir / f"worker-{os.getpid()}.json"),
                           table_fd=self.table.fd if self.table is not None else None)
                code = w.run()
            except BaseException:  # noqa: BLE001 - a worker must never return into the master's code
                log.exception("worker slot %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = (self.generation, slot)
        return pid

    def _start_generation(self, per_slot: list[dict[str, socket.socket]]) -> None:
        self.generation += 1
        for slot, socks in enumerate(per_slot):
            self._spawn(slot, socks)

    def _publish_table(self) -> None:
        """Publish the services' backends to the workers, never waiting: with no free version
        buffer the publish stays pending (the loop retries it), and a live worker that holds
        a grace period up for WORKER_HUNG_AFTER is killed (the respawn rule replaces it)."""
        table = {s.name: [list(b) for b in s.backends] for s in self.cfg.services}
        assert self.table is not None  # start() made it
        try:
            # a short wait: a worker reports every loop (0.1 s at most), a dead one is found
            self.table.publish({TABLE_KEY: json.dumps(table).encode()}, timeout=0.05)
        except GraceStalled as e:
            if not self.table_pending:
                log.warning("service table: %s; publish kept pending", e.msg)
                self.table_stall = e.msg
            self.table_pending = True
            if e.waited >= WORKER_HUNG_AFTER:
                for r in e.readers:
                    if r.pid in self.workers:
                        log.error("worker %d held the service table's grace period up for "
                                  "%.0fs while alive: hung; killing it", r.pid, e.waited)
                        try:
                            os.kill(r.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            return
        if self.table_pending:
            log.info("service table published (the stall is over)")
        self.table_pending = False
        self.table_stall = None

    def start(self) -> None:
        self._claim_dir()
        # one writer (here), one reader slot per worker of up to 4 generations at once
        self.table = SharedTable.create(TABLE_CAPACITY, readers=max(16, 4 * self.cfg.worker_count()),
                                        versions=4, name="proxy")
        self._publish_table()
        if self.program:
            self._open_control()
        per_slot = self.listeners.prepare(self.cfg)
        self._start_generation(per_slot)
        self.last_reload = {"time": time.time(), "ok": True, "generation": self.generation}
        self.publish()
        log.info("proxy %s: %d services, %d workers, mode %s", self.name, len(self.cfg.services),
                 self.cfg.worker_count(), self.cfg.mode)

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply it."""
        try:
            cfg = replace(configmod.load(self.path), **self.overrides)
        except FastpathError as e:
            self._refused(e)
            return
        self.apply(cfg, self.path)

    def _refused(self, e: FastpathError) -> None:
        log.error("reload refused, running config kept: %s", e)
        self.last_reload = {"time": time.time(), "ok": False, "error": str(e),
                            "generation": self.generation}
        self.publish()

    def apply(self, cfg: ProxyConfig, source: str) -> None:
        """Make `cfg` the running config: in place when only backends changed, else a
        new generation of workers on the same (and any new) listeners."""
        old_cfg, self.cfg = self.cfg, cfg
        try:
            per_slot = self.listeners.prepare(cfg)
        except FastpathError as e:
            self.cfg = old_cfg
            self._refused(e)
            return
        if _backends_only(old_cfg, cfg) and self.table is not None:
            # same listeners, workers and settings: the workers take the new backends
            # from the table (RCU), connections and per-worker state stay where they are
            self._publish_table()
            self.last_reload = {"time": time.time(), "ok": True, "generation": self.generation,
                                "in_place": True}
            log.info("reloaded %s in place: backends published to the workers", source)
            self.publish()
            return
        if self.table is not None:
            self._publish_table()
        old = [pid for pid, (g, _) in self.workers.items() if g == self.generation]
        self._start_generation(per_slot)
        for pid in old:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.listeners.retire_unused(cfg)
        self.last_reload = {"time": time.time(), "ok": True, "generation": self.generation}
        log.info("reloaded %s: generation %d, %d services", source, self.generation,
                 len(cfg.services))
        self.publish()

    # ---- programmed mode -----------------------------------------------------------------

    def _open_control(self) -> None:
        path = program_socket(self.name)
        path.unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            s.bind(str(path))
        except OSError as e:
            s.close()
            raise KernelError.from_oserror(f"bind {path}", e) from e
        finally:
            os.umask(old)
        s.listen(4)
        self.control = s

    def _take_tables(self) -> None:
        """Accept table hand-overs: one fd per connection (SCM_RIGHTS), from root only."""
        assert self.control is not None
        while True:
            try:
                conn, _ = self.control.accept()
            except (BlockingIOError, InterruptedError):
                return
            with conn:
                conn.setblocking(True)
                conn.settimeout(2.0)
                try:
                    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
                    _msg, fds, _flags, _addr = socket.recv_fds(conn, 64, 1)
                except OSError as e:
                    log.error("table hand-over failed: %s", e)
                    continue
                if uid != 0 or not fds:
                    for fd in fds:
                        os.close(fd)
                    continue
                try:
                    new = SharedTable.attach(fds[0], reader=True)
                    new.offline()   # online only while reading it (_follow_program)
                except FastpathError as e:
                    log.error("could not attach the handed-over table: %s", e)
                    continue
                finally:
                    os.close(fds[0])
                old, self.source = self.source, new
                self.source_seen = None
                if old is not None:
                    old.close()
                log.info("programmed by pid %d from now on", _peer_pid(conn))
                try:
                    conn.sendall(b"ok\n")
                except OSError:
                    pass

    def _follow_program(self) -> None:
        self._take_tables()
        if self.source is None:
            return
        self.source.online()
        try:
            raw = self.source.get(PROGRAM_KEY)   # a copy: nothing read outlives offline()
        finally:
            self.source.offline()
        if raw is None or (raw == self.source_seen and time.monotonic() < self.retry_program_at):
            return
        again = raw == self.source_seen
        self.source_seen = raw
        self.retry_program_at = float("inf")
        try:
            cfg = configmod.from_program(raw, replace(self.cfg, services=()))
        except FastpathError as e:
            self._refused(e)
            return   # malformed: it stays so until the agent publishes again
        self.apply(cfg, "the agent's table")
        if not self.last_reload.get("ok"):
            # refused (an address not there yet, a port taken): the same table is tried
            # again, after 1 s, then less and less often (up to 30 s), until it applies or
            # the agent publishes another
            self.program_backoff = min(self.program_backoff * 2, 30.0) if again else PROGRAM_RETRY
            self.retry_program_at = time.monotonic() + self.program_backoff

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.workers:
                continue  # not a worker of ours (a check's child): nothing to restart
            gen, slot = self.workers.pop(pid)
            (self.dir / f"worker-{pid}.json").unlink(missing_ok=True)
            if gen == self.generation and "stop" not in self.flags:
                log.error("worker %d (slot %d) exited with status %d; restarting", pid, slot,
                          os.waitstatus_to_exitcode(status))
                self.respawn_after[slot] = time.monotonic() + 1.0
            self.publish()

    def run(self) -> int:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        try:
            self.start()
        except BaseException:
            # e.g. an address in use: nothing was forked; leave no half-made run dir
            self.listeners.close()
            if self.claimed and not self.workers:
                self._forget()
            raise
        try:
            while True:
                if "stop" in self.flags:
                    break
                if "hup" in self.flags:
                    self.flags.discard("hup")
                    self.reload()
                if "chld" in self.flags:
                    self.flags.discard("chld")
                    self._reap()
                now = time.monotonic()
                for slot, when in list(self.respawn_after.items()):
                    if now >= when:
                        del self.respawn_after[slot]
                        if not any(g == self.generation and s == slot
                                   for g, s in self.workers.values()):
                            per_slot = self.listeners.prepare(self.cfg)
                            self._spawn(slot, per_slot[slot])
                            self.publish()
                if self.program:
                    self._follow_program()
                if self.table_pending:
                    self._publish_table()
                    if not self.table_pending:
                        self.publish()
                if not self.flags:
                    # signals interrupt the sleep; their handler sets a flag
                    time.sleep(PROGRAM_POLL if self.program else 0.2)
            return self.shutdown()
        finally:
            self.listeners.close()

    def shutdown(self) -> int:
        """SIGTERM to every worker; they drain; wait drain-timeout + 2 s, then SIGKILL."""
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.listeners.close()
        deadline = time.monotonic() + self.cfg.drain_timeout + 2
        while self.workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in list(self.workers):
            log.error("worker %d did not drain in time; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)
        self._forget()
        log.info("proxy %s stopped", self.name)
        return 0

    def _forget(self) -> None:
        """Close the table, remove the run directory's files and the directory."""
        if self.table is not None:
            self.table.close()
            self.table = None
        if self.source is not None:
            self.source.close()
            self.source = None
        if self.control is not None:
            self.control.close()
            self.control = None
            program_socket(self.name).unlink(missing_ok=True)
        for f in self.dir.glob("*.json"):
            f.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            pass

    def _on_signal(self, signum, _frame) -> None:
        self.flags.add({signal.SIGHUP: "hup", signal.SIGCHLD: "chld"}.get(signum, "stop"))


def _peer_pid(conn: socket.socket) -> int:
    try:
        return struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
    except OSError:
        return 0


def run(path: str | None, name: str, workers: int | None = None, mode: str | None = None,
        drain_timeout: float | None = None) -> int:
    """Run a proxy from the config file `path`, or, with path None, programmed by a node
    agent (no services until it hands over its table)."""
    cfg = configmod.load(path) if path is not None else ProxyConfig(source="program")
    overrides: dict = {}
    if workers is not None:
        overrides["workers"] = workers
    if mode is not None:
        overrides["mode"] = mode
    if drain_timeout is not None:
        overrides["drain_timeout"] = drain_timeout
    return Master(cfg, path or "program", name, overrides, program=path is None).run()
