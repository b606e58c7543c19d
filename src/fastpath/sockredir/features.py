"""Which kernel features socket redirect needs, and which sk_msg build a kernel takes.

Kernel facts (each checked in a qemu guest on Debian 12's 6.1.0-57 and 6.12.117, and on 6.18):
- sockops, sk_msg, SOCKHASH, LPM tries and sk_storage exist on every kernel fastpath
  supports (5.x and later); so do bpf_get_netns_cookie in sockops and bpf_sk_storage_get
  in sk_msg. Without any of them accel cannot keep its promises and is refused.
- The peer-queue bound (fp_config.max_queued) reads the peer's psock from sk_msg:
  - 6.12 and 6.18 have the kfunc bpf_rdonly_cast (6.2+) and sk_psock.msg_tot_len:
    sk_msg.bpf.o reads the count in O(1);
  - 6.1 has neither, but lets sk_msg call bpf_probe_read_kernel: sk_msg_walk.bpf.o walks
    the peer's ingress_msg list (at most 64 messages; longer counts as full);
  - a kernel without both: sk_msg_nobound.bpf.o, and one line says the queue is unbounded.
- CO-RE needs the kernel's BTF (/sys/kernel/btf/vmlinux) to relocate field offsets.

`choose()` is pure (tests feed it facts); `probe()` asks the running kernel through libbpf.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from fastpath import features as F
from fastpath.errors import MissingDependency
from fastpath.sockredir import cgroup as CG
from fastpath.sockredir import libbpf as B

MECH = "accel"


@dataclass(frozen=True)
class BpfFacts:
    cgroup2: str        # where cgroup v2 is mounted, "" when it is not
    btf: bool
    sockops: bool
    sk_msg: bool
    sockhash: bool
    lpm_trie: bool
    sk_storage: bool
    netns_cookie_in_sockops: bool
    sk_storage_in_sk_msg: bool
    probe_read_in_sk_msg: bool
    rdonly_cast: bool
    msg_tot_len: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QueueBound:
    """The sk_msg build a kernel takes, and how it bounds the peer's queue."""

    obj: str            # the object's name under build/bpf, without .bpf.o
    mode: str           # "msg_tot_len", "ingress-walk" or "none"
    degraded: str = ""  # one line when the bound is weaker than the best build's

    def to_dict(self) -> dict:
        return asdict(self)


TOT_LEN = QueueBound("sk_msg", "msg_tot_len")
WALK = QueueBound("sk_msg_walk", "ingress-walk",
                  "peer queue bounded by walking at most 64 queued messages (no "
                  "bpf_rdonly_cast or sk_psock.msg_tot_len on this kernel)")
NONE = QueueBound("sk_msg_nobound", "none",
                  "peer queue unbounded on this kernel (sk_msg can neither cast nor "
                  "probe-read the peer's psock); a peer that never reads can hold "
                  "unlimited memory")


def choose(f: BpfFacts) -> QueueBound:
    if f.rdonly_cast and f.msg_tot_len:
        return TOT_LEN
    if f.probe_read_in_sk_msg:
        return WALK
    return NONE


def findings(f: BpfFacts) -> list[F.Finding]:
    """One finding per feature accel uses; refusals first decide whether accel can run."""
    out = []
    need = [
        ("cgroup v2", bool(f.cgroup2), f.cgroup2 or "not mounted",
         "sockops attaches to a cgroup v2, never the machine's root"),
        ("BTF", f.btf, "/sys/kernel/btf/vmlinux", "CO-RE relocation of the BPF objects needs it"),
        ("sockmap, sk_msg and sockops", f.sockops and f.sk_msg and f.sockhash,
         f"sockops={_yn(f.sockops)} sk_msg={_yn(f.sk_msg)} sockhash={_yn(f.sockhash)}",
         "socket redirect is built on them"),
        ("LPM trie and sk_storage maps", f.lpm_trie and f.sk_storage,
         f"lpm_trie={_yn(f.lpm_trie)} sk_storage={_yn(f.sk_storage)}",
         "local peers and the byte-order guard live in them"),
        ("bpf_get_netns_cookie in sockops", f.netns_cookie_in_sockops, "helper 122",
         "loopback keys carry the netns cookie, or two pods' 127.0.0.1 would be joined"),
        ("bpf_sk_storage_get in sk_msg", f.sk_storage_in_sk_msg, "helper 107",
         "the guard that keeps byte order when a socket falls back to TCP needs it"),
    ]
    for name, ok, detail, why in need:
        out.append(F.used(name, MECH, detail) if ok else F.refused(name, MECH, detail, why))
    qb = choose(f)
    kf = "kfunc bpf_rdonly_cast and sk_psock.msg_tot_len"
    kdetail = f"bpf_rdonly_cast={_yn(f.rdonly_cast)} msg_tot_len={_yn(f.msg_tot_len)}"
    if qb is TOT_LEN:
        out.append(F.used(kf, MECH, kdetail))
    else:
        out.append(F.fallback(kf, MECH, kdetail,
                              "peer queue bound by ingress-list walk (sk_msg_walk.bpf.o)"
                              if qb is WALK else "peer queue unbounded (sk_msg_nobound.bpf.o)"))
    if f.probe_read_in_sk_msg:
        out.append(F.used("bpf_probe_read_kernel in sk_msg", MECH,
                          "helper 113" if qb is WALK else
                          "helper 113; only the walk build calls it, not loaded here"))
    else:
        out.append(F.fallback("bpf_probe_read_kernel in sk_msg", MECH, "helper 113",
                              "no ingress-list walk" if qb is NONE else
                              "not needed: msg_tot_len is read through the kfunc"))
    return out


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def probe() -> BpfFacts:
    """Ask the running kernel (libbpf's probes load tiny programs; BTF is read, not loaded)."""
    btf_ok, rdonly, tot_len = os.path.exists("/sys/kernel/btf/vmlinux"), False, False
    if btf_ok:
        with B.KernelBtf() as btf:
            rdonly = btf.has_func("bpf_rdonly_cast")
            tot_len = "msg_tot_len" in (btf.members("sk_psock") or [])
    sk_msg = B.probe_prog_type(B.BPF_PROG_TYPE_SK_MSG)
    sockops = B.probe_prog_type(B.BPF_PROG_TYPE_SOCK_OPS)
    try:
        cg = CG.root()
    except MissingDependency:
        cg = ""
    return BpfFacts(
        cgroup2=cg, btf=btf_ok, sockops=sockops, sk_msg=sk_msg,
        sockhash=B.probe_map_type(B.BPF_MAP_TYPE_SOCKHASH),
        lpm_trie=B.probe_map_type(B.BPF_MAP_TYPE_LPM_TRIE),
        sk_storage=B.probe_map_type(B.BPF_MAP_TYPE_SK_STORAGE),
        netns_cookie_in_sockops=sockops and B.probe_helper(B.BPF_PROG_TYPE_SOCK_OPS,
                                                           B.BPF_FUNC_get_netns_cookie),
        sk_storage_in_sk_msg=sk_msg and B.probe_helper(B.BPF_PROG_TYPE_SK_MSG,
                                                       B.BPF_FUNC_sk_storage_get),
        probe_read_in_sk_msg=sk_msg and B.probe_helper(B.BPF_PROG_TYPE_SK_MSG,
                                                       B.BPF_FUNC_probe_read_kernel),
        rdonly_cast=rdonly, msg_tot_len=tot_len)
