"""Loading, pinning and attaching the sockredir programs (the BPF edge of `fastpath accel`).

Pins, under naming.bpf_pin_dir() (/sys/fs/bpf/fastpath[/tag]):
    prog_sockops  prog_sk_msg  map_sockhash  map_counters  map_local4  map_local6  map_config
The sockops program is attached to one cgroup v2; sk_msg to the sockhash.

Why disable can unpin while redirected connections keep working (kernel 6.x, checked by
tests/sockredir): each socket in the map holds its psock, the psock holds the sk_msg
program, and the program holds fp_sockhash (it names it in bpf_msg_redirect_hash). When
the last pin goes, the map loses its user references and drops its attached programs
(sock_map_release_progs), but the map object lives on until its last socket closes, and
those sockets keep redirecting. New sockets are no longer added: sockops is detached.

Order of enable: load both objects (sk_msg reuses the sockops object's maps), fill the
local-peer tries, attach sk_msg to the map, pin, and attach sockops to the cgroup last:
nothing is redirected until everything else is in place, and a failure undoes it all.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from fastpath import naming, state
from fastpath.errors import AlreadyExists, KernelError, MissingDependency, NotFound
from fastpath.kernel.fd import Fd
from fastpath.sockredir import cgroup as CG
from fastpath.sockredir import features as F
from fastpath.sockredir import keys as K
from fastpath.sockredir import libbpf as B
from fastpath.sockredir.maps import Counters, LocalNets, SockHash

BPFFS = "/sys/fs/bpf"
PROG_SOCKOPS, PROG_SK_MSG = "prog_sockops", "prog_sk_msg"
MAP_SOCKHASH, MAP_COUNTERS, MAP_LOCAL4, MAP_LOCAL6, MAP_CONFIG = (
    "map_sockhash", "map_counters", "map_local4", "map_local6", "map_config")
SHARED_MAPS = ("fp_sockhash", "fp_counters", "fp_local4", "fp_local6", "fp_config",
               "fp_sk_addr", "fp_sk_state")
# fp_config.max_queued unless told otherwise: a peer may hold this many unread redirected
# bytes before its sender moves to the TCP stack. Without a bound a sender whose peer does
# not read queues without limit (256 MiB accepted here in a test, until tcp_mem pressure).
DEFAULT_MAX_QUEUED = 16 << 20


ZERO = b"\0\0\0\0"
# objects built from another object's source (the Makefile passes -DFP_PEER_QUEUE)
SOURCE_OF = {"sk_msg_walk": "sk_msg", "sk_msg_nobound": "sk_msg"}


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def object_dir() -> Path:
    return Path(os.environ.get("FASTPATH_BPF_DIR") or repo_root() / "build" / "bpf")


def object_path(name: str) -> str:
    """build/bpf/NAME.bpf.o. Objects are built by `make bpf` (during set-up), never at run
    time: a missing or stale object is an error that says so."""
    obj = object_dir() / f"{name}.bpf.o"
    if not obj.exists():
        raise MissingDependency(f"{obj} is missing", op="find BPF object",
                                hint="run `make bpf` (needs clang and bpftool: make setup)")
    if "FASTPATH_BPF_DIR" not in os.environ:
        src_dir = repo_root() / "bpf"
        srcs = [src_dir / f"{SOURCE_OF.get(name, name)}.bpf.c", *src_dir.glob("*.h")]
        if any(s.stat().st_mtime > obj.stat().st_mtime for s in srcs):
            raise MissingDependency(f"{obj} is older than its sources in {src_dir}",
                                    op="find BPF object", hint="run `make bpf`")
    return str(obj)


def load_objects(bound: F.QueueBound) -> tuple[B.BpfObject, B.BpfObject]:
    """Load sockops.bpf.o and the sk_msg build `bound` names, sharing one set of maps.
    The caller closes both (pins and attachments hold their own references)."""
    ops = B.BpfObject(object_path("sockops"))
    try:
        ops.load()
        msg = B.BpfObject(object_path(bound.obj))
        try:
            for m in SHARED_MAPS:
                msg.reuse_map(m, ops.map_fd(m))
            msg.load()
        except BaseException:
            msg.close()
            raise
    except BaseException:
        ops.close()
        raise
    return ops, msg


def ensure_bpffs() -> None:
    """Mount bpffs at /sys/fs/bpf when it is not (pins need it)."""
    with open("/proc/mounts") as f:
        if any(line.split()[1] == BPFFS and line.split()[2] == "bpf" for line in f):
            return
    p = subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], capture_output=True, text=True)
    if p.returncode != 0:
        raise KernelError(p.stderr.strip() or "mount failed", op=f"mount bpffs at {BPFFS}")


def pin_dir() -> str:
    return naming.bpf_pin_dir()


def pin_path(name: str, base: str | None = None) -> str:
    return os.path.join(base or pin_dir(), name)


def is_enabled() -> bool:
    return os.path.exists(pin_path(PROG_SOCKOPS))


@dataclass
class Pinned:
    """Open fds of the pinned programs and maps of one instance."""

    sockops: B.Fd
    sk_msg: B.Fd
    sockhash: B.KernelMap
    counters: B.KernelMap
    local4: B.KernelMap
    local6: B.KernelMap
    config: B.KernelMap

    def close(self) -> None:
        for x in (self.sockops, self.sk_msg, self.sockhash, self.counters, self.local4,
                  self.local6, self.config):
            x.close()

    def read_config(self) -> dict[str, int]:
        raw = self.config.lookup(ZERO)
        return K.unpack_config(raw) if raw else dict.fromkeys(K.CONFIG_FIELDS, 0)

    def write_config(self, **changes: int) -> dict[str, int]:
        cfg = {**self.read_config(), **{k: v for k, v in changes.items() if v is not None}}
        self.config.update(ZERO, K.pack_config(**cfg))
        return cfg

    def views(self):
        return (SockHash(self.sockhash), Counters(self.counters, B.possible_cpus()),
                LocalNets(self.local4, self.local6))


def open_sockhash(base: str) -> B.KernelMap:
    return B.KernelMap(B.obj_get(pin_path(MAP_SOCKHASH, base)), K.SOCK_KEY.size, 8,
                       "fp_sockhash")


def open_counters(base: str) -> B.KernelMap:
    ncpu = B.possible_cpus()
    return B.KernelMap(B.obj_get(pin_path(MAP_COUNTERS, base)), 4, K.COUNTERS.size * ncpu,
                       "fp_counters")


def open_pinned() -> Pinned:
    if not is_enabled():
        raise NotFound("accel is not enabled in this instance", hint="fastpath accel enable")
    d = pin_dir()
    return Pinned(
        sockops=B.obj_get(pin_path(PROG_SOCKOPS, d)),
        sk_msg=B.obj_get(pin_path(PROG_SK_MSG, d)),
        sockhash=open_sockhash(d),
        counters=open_counters(d),
        local4=B.KernelMap(B.obj_get(pin_path(MAP_LOCAL4, d)), K.LPM4.size, 4, "fp_local4"),
        local6=B.KernelMap(B.obj_get(pin_path(MAP_LOCAL6, d)), K.LPM6.size, 4, "fp_local6"),
        config=B.KernelMap(B.obj_get(pin_path(MAP_CONFIG, d)), 4, K.CONFIG.size, "fp_config"),
    )


def node_prefixes() -> list:
    """This netns's own addresses (as /32 and /128), loopback excluded (handled in BPF)."""

    out = []
    with IPRoute() as ipr:
        for a in ipr.get_addr():
            addr = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            if not addr:
                continue
            ip = ipaddress.ip_address(addr.split("%")[0])
            if ip.is_loopback or ip.is_link_local:
                continue
            out.append(ipaddress.ip_network(ip))
    return sorted(set(out), key=lambda n: (n.version, n))


def unlink_pins(base: str) -> list[str]:
    removed: list[str] = []
    if not os.path.isdir(base):
        return removed
    for name in sorted(os.listdir(base)):
        p = os.path.join(base, name)
        if os.path.isdir(p):
            continue
        try:
            os.unlink(p)
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def remove_pin_dir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTEMPTY):
            return False
        raise


def enable(cgroup_path: str, extra_local: list, config: dict | None = None,
           bound: F.QueueBound | None = None, selftest: dict | None = None) -> dict:
    """Load, fill, pin and attach; undo everything on failure. `bound` is the sk_msg build
    (default: the one this kernel takes, from features.probe()); `selftest` is recorded."""

    ensure_bpffs()
    if is_enabled():
        raise AlreadyExists(f"accel is already enabled (pins in {pin_dir()})",
                            hint="fastpath accel disable first")
    made = False
    objs: list[B.BpfObject] = []
    pinned: list[str] = []
    cg_fd = None
    attached_ops = False
    if bound is None:
        bound = F.choose(F.probe())
    try:
        ops, msg = load_objects(bound)
        objs += [ops, msg]

        lmap4 = B.KernelMap(Fd(os.dup(ops.map_fd("fp_local4"))), K.LPM4.size, 4, "fp_local4")
        lmap6 = B.KernelMap(Fd(os.dup(ops.map_fd("fp_local6"))), K.LPM6.size, 4, "fp_local6")
        local = LocalNets(lmap4, lmap6)
        nets = sorted(set(node_prefixes()) | set(extra_local), key=lambda n: (n.version, n))
        for n in nets:
            local.add(n)
        for fam_map in (lmap4, lmap6):
            fam_map.close()
        cfg = {**dict.fromkeys(K.CONFIG_FIELDS, 0), "max_queued": DEFAULT_MAX_QUEUED,
               **(config or {})}
        with Fd(os.dup(ops.map_fd("fp_config"))) as cfd:
            B.KernelMap(cfd, 4, K.CONFIG.size, "fp_config").update(ZERO, K.pack_config(**cfg))

        sockhash_fd = ops.map_fd("fp_sockhash")
        B.prog_attach(msg.prog_fd("fp_sk_msg"), sockhash_fd, B.BPF_SK_MSG_VERDICT,
                      "sk_msg to fp_sockhash")

        os.makedirs(pin_dir(), exist_ok=True)
        # sockops last: is_enabled() tests for its pin
        for path, fd in ((MAP_SOCKHASH, sockhash_fd),
                         (MAP_COUNTERS, ops.map_fd("fp_counters")),
                         (MAP_LOCAL4, ops.map_fd("fp_local4")),
                         (MAP_LOCAL6, ops.map_fd("fp_local6")),
                         (MAP_CONFIG, ops.map_fd("fp_config")),
                         (PROG_SK_MSG, msg.prog_fd("fp_sk_msg")),
                         (PROG_SOCKOPS, ops.prog_fd("fp_sockops"))):
            B.obj_pin(fd, pin_path(path))
            pinned.append(pin_path(path))

        # the default cgroup is fastpath's own: disable removes it once empty, even when an
        # earlier enable made it
        owned = cgroup_path == CG.default_path()
        made = CG.create(cgroup_path) if owned else False
        cg_fd = Fd(os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY), cgroup_path)
        B.prog_attach(ops.prog_fd("fp_sockops"), cg_fd.fileno(), B.BPF_CGROUP_SOCK_OPS,
                      f"sockops to cgroup {cgroup_path}")
        attached_ops = True
        prog_id = B.obj_id(ops.prog_fd("fp_sockops"))
        # recorded as fastpath's to remove (owned), reported as made now or found (made):
        # a cgroup that an earlier disable kept is fastpath's, but not created by this call
        _record(cgroup_path, owned, prog_id, bound, selftest)
        return {"cgroup": cgroup_path, "created_cgroup": made, "owned_cgroup": owned,
                "pins": pin_dir(),
                "sockops_prog_id": prog_id, "local": [str(n) for n in nets], "config": cfg,
                "peer_queue": bound.to_dict(), "selftest": selftest}
    except BaseException:
        if attached_ops and cg_fd is not None:
            try:
                B.prog_detach(objs[0].prog_fd("fp_sockops"), cg_fd.fileno(),
                              B.BPF_CGROUP_SOCK_OPS, "sockops")
            except KernelError:
                pass
        for p in pinned:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        remove_pin_dir(pin_dir())
        if made:
            CG.remove(cgroup_path)
        forget()
        raise
    finally:
        if cg_fd is not None:
            cg_fd.close()
        for o in objs:  # pins and attachments hold their own references
            o.close()


# --- state: which cgroup an instance's sockops is attached to ---

_DDL = """
CREATE TABLE IF NOT EXISTS sockredir_attach (
    pin_dir TEXT PRIMARY KEY,
    cgroup TEXT NOT NULL,
    created_cgroup INTEGER NOT NULL,
    prog_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sockredir_kernel (
    pin_dir TEXT PRIMARY KEY,
    peer_queue TEXT NOT NULL,
    selftest TEXT
)
"""


def _db():
    conn = state.connect()
    state.ensure_schema(conn, "sockredir", 2, _DDL)
    return conn


def _record(cgroup_path: str, created: bool, prog_id: int, bound: F.QueueBound,
            selftest: dict | None) -> None:
    with _db() as conn:
        conn.execute("INSERT OR REPLACE INTO sockredir_attach VALUES (?, ?, ?, ?)",
                     (pin_dir(), cgroup_path, int(created), prog_id))
        conn.execute("INSERT OR REPLACE INTO sockredir_kernel VALUES (?, ?, ?)",
                     (pin_dir(), json.dumps(bound.to_dict()),
                      json.dumps(selftest) if selftest is not None else None))


def forget() -> None:
    try:
        conn = _db()
        with conn:
            conn.execute("DELETE FROM sockredir_attach WHERE pin_dir=?", (pin_dir(),))
            conn.execute("DELETE FROM sockredir_kernel WHERE pin_dir=?", (pin_dir(),))
        conn.close()
    except Exception:
        pass


def attachment() -> dict | None:
    conn = _db()
    try:
        row = conn.execute("SELECT * FROM sockredir_attach WHERE pin_dir=?",
                           (pin_dir(),)).fetchone()
        return dict(row) if row else None
    finally:
        conn.close()


def kernel_record() -> dict:
    """The sk_msg build and self-test result recorded by enable, {} when none."""
    conn = _db()
    try:
        row = conn.execute("SELECT * FROM sockredir_kernel WHERE pin_dir=?",
                           (pin_dir(),)).fetchone()
        if not row:
            return {}
        return {"peer_queue": json.loads(row["peer_queue"]),
                "selftest": json.loads(row["selftest"]) if row["selftest"] else None}
    finally:
        conn.close()


def detach_from(cgroup_path: str, prog_fd: int) -> bool:
    """Detach our sockops from a cgroup; False if it was not attached there."""
    if not os.path.isdir(cgroup_path):
        return False
    with Fd(os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY), cgroup_path) as cg:
        try:
            B.prog_detach(prog_fd, cg.fileno(), B.BPF_CGROUP_SOCK_OPS,
                          f"sockops from cgroup {cgroup_path}")
            return True
        except KernelError as e:
            if e.errno in (errno.ENOENT, errno.EINVAL):
                return False
            raise


def attached_ids(cgroup_path: str) -> list[int]:
    if not os.path.isdir(cgroup_path):
        return []
    with Fd(os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY), cgroup_path) as cg:
        return B.prog_query(cg.fileno(), B.BPF_CGROUP_SOCK_OPS, cgroup_path)


def disable() -> dict:
    """Detach sockops from its cgroup, unpin everything, remove the cgroup fastpath made
    (when no process is left in it). Connections already redirected keep working."""

    if not is_enabled():
        raise NotFound("accel is not enabled in this instance")
    att = attachment()
    p = open_pinned()
    try:
        sockets = len(SockHash(p.sockhash))
        detached = []
        targets = [att["cgroup"]] if att else []
        if CG.default_path() not in targets:
            targets.append(CG.default_path())
        for cg in targets:
            if detach_from(cg, p.sockops.fileno()):
                detached.append(cg)
    finally:
        p.close()
    unpinned = unlink_pins(pin_dir())
    remove_pin_dir(pin_dir())
    removed_cgroup = None
    left = []
    if att and att["created_cgroup"]:
        left = CG.procs(att["cgroup"])
        if not left:
            CG.remove(att["cgroup"])
            removed_cgroup = att["cgroup"]
    forget()
    return {"detached": detached, "unpinned": unpinned, "removed_cgroup": removed_cgroup,
            "processes_left_in_cgroup": left, "sockets_still_redirected": sockets}


def status() -> dict:
    if not is_enabled():
        return {"enabled": False, "pins": pin_dir()}
    att = attachment() or {}
    p = open_pinned()
    try:
        sh, ctr, local = p.views()
        my_id = B.obj_id(p.sockops.fileno())
        cg = att.get("cgroup")
        attached = bool(cg) and my_id in attached_ids(str(cg))
        entries = sh.entries()
        return {"enabled": True, "pins": pin_dir(), "cgroup": cg, "attached": attached,
                "sockops_prog_id": my_id, "sk_msg_prog_id": B.obj_id(p.sk_msg.fileno()),
                "processes_in_cgroup": len(_cgroup_procs(cg)) if cg else 0,
                "sockets": len(entries), "socket_keys": [str(k) for k in entries],
                "local": [str(n) for n in local.list()], "config": p.read_config(),
                "counters": ctr.read(), **kernel_record()}
    finally:
        p.close()


def _cgroup_procs(path: str) -> list[int]:
    return CG.procs(path)


def tune(**changes: int) -> dict[str, int]:
    p = open_pinned()
    try:
        return p.write_config(**changes)
    finally:
        p.close()


def set_local(add: list, remove: list) -> list[str]:
    return change_local(add, remove)[0]


def change_local(add: list, remove: list) -> tuple[list[str], list[str]]:
    """Add and remove local prefixes; (the set now, the prefixes to remove that were not
    in it)."""
    p = open_pinned()
    try:
        _, _, local = p.views()
        for n in add:
            local.add(n)
        absent = [str(n) for n in remove if not local.remove(n)]
        return [str(n) for n in local.list()], absent
    finally:
        p.close()


def local_nets() -> list:
    """The prefixes counted as on this node, as ip_network objects."""
    p = open_pinned()
    try:
        return p.views()[2].list()
    finally:
        p.close()
