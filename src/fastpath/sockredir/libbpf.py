"""The syscall edge to BPF: libbpf (Debian libbpf1) through ctypes.

Kernel and library facts this module relies on:
- libbpf >= 1.0 returns NULL and sets errno from bpf_object__open_file, and a negative
  errno from every int-returning call (no more ERR_PTR), so one check covers both.
- A verifier rejection comes back as EACCES/EINVAL from bpf_object__load; the log only
  reaches us through the libbpf_set_print callback, so load() captures it and raises
  VerifierRejected carrying it.
- Percpu map values are read as one value per *possible* CPU, each rounded up to 8 bytes.

Every fd is owned by a kernel.fd.Fd that closes once and forgets its number (fd = -1).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from typing import TypeVar

from fastpath.errors import KernelError, KernelUnsupported, MissingDependency
from fastpath.kernel.fd import Fd

# enum bpf_attach_type (include/uapi/linux/bpf.h)
BPF_CGROUP_SOCK_OPS = 3
BPF_SK_MSG_VERDICT = 7
BPF_ANY = 0
BPF_NOEXIST = 1
# enum bpf_prog_type, enum bpf_map_type, enum bpf_func_id (the same header), for probes
BPF_PROG_TYPE_SOCK_OPS = 13
BPF_PROG_TYPE_SK_MSG = 16
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_SOCKHASH = 18
BPF_MAP_TYPE_SK_STORAGE = 24
BPF_FUNC_msg_redirect_hash = 71
BPF_FUNC_sk_storage_get = 107
BPF_FUNC_probe_read_kernel = 113
BPF_FUNC_get_netns_cookie = 122
# BTF kinds (include/uapi/linux/btf.h)
BTF_KIND_STRUCT = 4
BTF_KIND_FUNC = 12

LIBBPF_NAME = "libbpf.so.1"


class VerifierRejected(KernelError):
    """bpf_object__load failed; `log` holds what libbpf and the verifier printed."""

    def __init__(self, msg: str, *, log: str, **kw) -> None:
        super().__init__(msg, **kw)
        self.log = log

    def __str__(self) -> str:
        tail = "\n".join(self.log.rstrip().splitlines()[-60:])
        return super().__str__() + ("\n--- verifier log (last lines) ---\n" + tail if tail else "")


_lib = None
_lib_lock = threading.RLock()
_print_lines: list[str] | None = None
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


@_PRINT_FN
def _on_print(level, fmt, ap):  # libbpf's printf-style callback; va_list is a pointer on x86-64
    # the verifier log arrives as one "%s" of up to megabytes; a va_list cannot be walked twice
    buf = ctypes.create_string_buffer(1 << 22 if _print_lines is not None else 4096)
    _libc.vsnprintf(buf, len(buf), fmt, ap)
    if _print_lines is not None:
        _print_lines.append(buf.value.decode(errors="replace"))
    return 0


def lib():
    """libbpf, loaded once, with argument types declared and printing captured."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            L = ctypes.CDLL(LIBBPF_NAME, use_errno=True)
        except OSError as e:
            raise MissingDependency(f"cannot load {LIBBPF_NAME}: {e}",
                                    hint="install the Debian package libbpf1") from e
        P, I, U, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p  # noqa: E741
        sigs = {
            "libbpf_set_print": (P, [P]),
            "bpf_object__open_file": (P, [S, P]),
            "bpf_object__load": (I, [P]),
            "bpf_object__close": (None, [P]),
            "bpf_object__find_program_by_name": (P, [P, S]),
            "bpf_object__find_map_by_name": (P, [P, S]),
            "bpf_program__fd": (I, [P]),
            "bpf_map__fd": (I, [P]),
            "bpf_map__reuse_fd": (I, [P, I]),
            "bpf_obj_pin": (I, [I, S]),
            "bpf_obj_get": (I, [S]),
            "bpf_prog_attach": (I, [I, I, U, U]),
            "bpf_prog_detach2": (I, [I, I, U]),
            "bpf_prog_query": (I, [I, U, U, P, P, P]),
            "bpf_prog_get_fd_by_id": (I, [U]),
            "bpf_obj_get_info_by_fd": (I, [I, P, P]),
            "bpf_map_lookup_elem": (I, [I, P, P]),
            "bpf_map_update_elem": (I, [I, P, P, ctypes.c_uint64]),
            "bpf_map_delete_elem": (I, [I, P]),
            "bpf_map_get_next_key": (I, [I, P, P]),
            "libbpf_num_possible_cpus": (I, []),
            "bpf_map_get_next_id": (I, [U, P]),
            "bpf_map_get_fd_by_id": (I, [U]),
            "libbpf_probe_bpf_prog_type": (I, [I, P]),
            "libbpf_probe_bpf_map_type": (I, [I, P]),
            "libbpf_probe_bpf_helper": (I, [I, I, P]),
            "btf__load_vmlinux_btf": (P, []),
            "btf__free": (None, [P]),
            "btf__find_by_name_kind": (I, [P, S, U]),
            "btf__type_by_id": (P, [P, U]),
            "btf__name_by_offset": (S, [P, U]),
        }
        for fname, (res, args) in sigs.items():
            f = getattr(L, fname)
            f.restype, f.argtypes = res, args
        L.libbpf_set_print(ctypes.cast(_on_print, ctypes.c_void_p))
        _lib = L
        return L


def _check(op: str, rc: int) -> int:
    """libbpf 1.x: negative return is -errno."""
    if rc < 0:
        raise KernelError(os.strerror(-rc), op=op, errno=-rc)
    return rc


def obj_get(path: str) -> Fd:
    """Open a pinned program or map (BPF_OBJ_GET)."""
    fd = lib().bpf_obj_get(path.encode())
    return Fd(_check(f"open pinned {path}", fd), path)


def obj_pin(fd: int, path: str) -> None:
    _check(f"pin {path}", lib().bpf_obj_pin(fd, path.encode()))


def prog_attach(prog_fd: int, target_fd: int, attach_type: int, what: str) -> None:
    _check(f"attach {what}", lib().bpf_prog_attach(prog_fd, target_fd, attach_type, 0))


def prog_detach(prog_fd: int, target_fd: int, attach_type: int, what: str) -> None:
    _check(f"detach {what}", lib().bpf_prog_detach2(prog_fd, target_fd, attach_type))


BPF_F_QUERY_EFFECTIVE = 1


def prog_query(target_fd: int, attach_type: int, what: str, effective: bool = False) -> list[int]:
    """IDs of the programs attached to target_fd for attach_type; with `effective`, those
    that run for it (a cgroup's own and the ones it inherits from its ancestors)."""
    ids = (ctypes.c_uint32 * 64)()
    cnt = ctypes.c_uint32(64)
    flags = ctypes.c_uint32(0)
    _check(f"query programs on {what}", lib().bpf_prog_query(
        target_fd, attach_type, BPF_F_QUERY_EFFECTIVE if effective else 0,
        ctypes.byref(flags), ids, ctypes.byref(cnt)))
    return list(ids[: cnt.value])


def prog_get_by_id(prog_id: int) -> Fd:
    fd = lib().bpf_prog_get_fd_by_id(prog_id)
    return Fd(_check(f"open program id {prog_id}", fd), f"prog {prog_id}")


class BpfMapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (include/uapi/linux/bpf.h), as far as fastpath reads
    it; the kernel fills the first `info_len` bytes it knows. tests/sockredir/test_libbpf.py
    checks every offset against the running kernel's BTF."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class BpfProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info: type, then id (checked against BTF likewise)."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32)]


_InfoT = TypeVar("_InfoT", bound=ctypes.Structure)


def _info(fd: int, info: _InfoT, what: str) -> _InfoT:
    n = ctypes.c_uint32(ctypes.sizeof(info))
    _check(f"get {what} info", lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info),
                                                               ctypes.byref(n)))
    return info


def obj_id(fd: int) -> int:
    """The kernel id of a program or map fd (the `id` of bpf_prog_info / bpf_map_info,
    which share their first two fields)."""
    return _info(fd, BpfProgInfo(), "object").id


def map_info(fd: int) -> BpfMapInfo:
    return _info(fd, BpfMapInfo(), "map")


def map_ids(limit: int = 1 << 16) -> list[int]:
    """Every BPF map id on the machine (BPF_MAP_GET_NEXT_ID)."""
    out: list[int] = []
    cur, nxt = 0, ctypes.c_uint32(0)
    while len(out) < limit and lib().bpf_map_get_next_id(cur, ctypes.byref(nxt)) == 0:
        cur = nxt.value
        out.append(cur)
    return out


def map_fd_by_id(map_id: int) -> Fd | None:
    """An fd for map `map_id`, None when it is gone (ENOENT: freed since it was listed)."""
    fd = lib().bpf_map_get_fd_by_id(map_id)
    if fd == -errno.ENOENT:
        return None
    return Fd(_check(f"open map id {map_id}", fd), f"map {map_id}")


def possible_cpus() -> int:
    return _check("count possible CPUs", lib().libbpf_num_possible_cpus())


def _probe(op: str, rc: int) -> bool:
    """libbpf_probe_*: 1 supported, 0 not, negative -errno when the probe itself failed."""
    if rc < 0:
        raise KernelError(os.strerror(-rc), op=op, errno=-rc)
    return rc == 1


def probe_prog_type(prog_type: int) -> bool:
    """Does the kernel load a trivial program of this type? (libbpf_probe_bpf_prog_type)"""
    return _probe(f"probe program type {prog_type}",
                  lib().libbpf_probe_bpf_prog_type(prog_type, None))


def probe_map_type(map_type: int) -> bool:
    return _probe(f"probe map type {map_type}", lib().libbpf_probe_bpf_map_type(map_type, None))


def probe_helper(prog_type: int, helper: int) -> bool:
    """May a program of prog_type call helper? libbpf loads a one-call program and reads the
    verifier's verdict; an unknown program type answers False, not an error."""
    rc = lib().libbpf_probe_bpf_helper(prog_type, helper, None)
    if rc == -errno.EOPNOTSUPP:
        return False
    return _probe(f"probe helper {helper} in program type {prog_type}", rc)


class _BtfType(ctypes.Structure):
    # struct btf_type (include/uapi/linux/btf.h); `size_or_type` is a union
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    # struct btf_member; follows its struct's btf_type, vlen of them
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("offset", ctypes.c_uint32)]


class KernelBtf:
    """The running kernel's own BTF (/sys/kernel/btf/vmlinux, through libbpf), read to learn
    which kfuncs, structs and members it has before choosing a BPF object to load."""

    def __init__(self) -> None:
        ptr = lib().btf__load_vmlinux_btf()
        if not ptr:
            e = ctypes.get_errno() or errno.ENOENT
            raise KernelError(os.strerror(e), op="load the kernel's BTF", errno=e,
                              hint="the kernel needs CONFIG_DEBUG_INFO_BTF")
        self._btf = ptr

    def _find(self, name: str, kind: int) -> int:
        rc = lib().btf__find_by_name_kind(self._btf, name.encode(), kind)
        return rc if rc > 0 else 0

    def has_func(self, name: str) -> bool:
        """A kernel function (kfunc candidates among them) by name."""
        return self._find(name, BTF_KIND_FUNC) > 0

    def members(self, struct: str) -> list[str] | None:
        """Member names of a struct, or None when the kernel has no such struct."""
        offs = self.member_offsets(struct)
        return None if offs is None else list(offs)

    def member_offsets(self, struct: str) -> dict[str, int] | None:
        """Member name -> byte offset (bit offset / 8; fastpath reads no bitfields)."""
        tid = self._find(struct, BTF_KIND_STRUCT)
        if not tid:
            return None
        L = lib()
        tp = L.btf__type_by_id(self._btf, tid)
        t = _BtfType.from_address(tp)
        kflag = t.info >> 31  # with kind_flag, offset's low 24 bits are the bit offset
        out = {}
        for i in range(t.info & 0xFFFF):
            m = _BtfMember.from_address(tp + ctypes.sizeof(_BtfType) + i * ctypes.sizeof(_BtfMember))
            name = L.btf__name_by_offset(self._btf, m.name_off)
            bits = m.offset & 0xFFFFFF if kflag else m.offset
            out[name.decode() if name else ""] = bits // 8
        return out

    def close(self) -> None:
        btf, self._btf = self._btf, None
        if btf:
            lib().btf__free(btf)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_error(obj: str, err: int, log: str) -> KernelError:
    """Sort a failed bpf_object__load by who said no. libbpf resolves externs (kfuncs,
    ksyms) and CO-RE relocations before the verifier runs: a failure there is a missing
    kernel feature, and blaming the verifier log would send the user the wrong way."""
    lines = [x.strip() for x in log.splitlines() if x.strip()]
    missing = [x for x in lines if "not found in kernel" in x or "failed to resolve CO-RE" in x
               or "relo #" in x and "failed" in x]
    if missing:
        return KernelUnsupported(missing[0].removeprefix("libbpf: "), op=f"load {obj}",
                                 errno=err, hint="`fastpath doctor` lists what this kernel lacks")
    if any("processed" in x and "insns" in x for x in lines) or "-- BEGIN PROG LOAD LOG --" in log:
        return VerifierRejected(os.strerror(err), op=f"load {obj}", errno=err, log=log,
                                hint="the verifier refused the program; see its log")
    last = next((x.removeprefix("libbpf: ") for x in reversed(lines)), os.strerror(err))
    return KernelError(last, op=f"load {obj}", errno=err)


class KernelMap:
    """Element access to a map fd, bytes in and out; the edge that maps.py wraps."""

    def __init__(self, fd: Fd, key_size: int, value_size: int, name: str) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.name = name

    def lookup(self, key: bytes) -> bytes | None:
        v = ctypes.create_string_buffer(self.value_size)
        rc = lib().bpf_map_lookup_elem(self.fd.fileno(), key, v)
        if rc == -2:  # ENOENT
            return None
        _check(f"lookup in {self.name}", rc)
        return v.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        _check(f"update {self.name}", lib().bpf_map_update_elem(self.fd.fileno(), key, value, flags))

    def delete(self, key: bytes) -> bool:
        rc = lib().bpf_map_delete_elem(self.fd.fileno(), key)
        if rc == -2:
            return False
        _check(f"delete from {self.name}", rc)
        return True

    def keys(self, limit: int = 1 << 20):
        cur = None
        nxt = ctypes.create_string_buffer(self.key_size)
        for _ in range(limit):
            rc = lib().bpf_map_get_next_key(self.fd.fileno(), cur, nxt)
            if rc == -2:
                return
            _check(f"iterate {self.name}", rc)
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)
            yield nxt.raw

    def close(self) -> None:
        self.fd.close()


class BpfObject:
    """One BPF ELF object opened and loaded by libbpf; closes once."""

    def __init__(self, path: str) -> None:
        self.path = path
        L = lib()
        ptr = L.bpf_object__open_file(path.encode(), None)
        if not ptr:
            e = ctypes.get_errno()
            raise KernelError(os.strerror(e), op=f"open BPF object {path}", errno=e)
        self._obj = ptr

    def _map_ptr(self, name: str):
        p = lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if not p:
            raise KernelError(f"no map {name} in {self.path}", op="find map")
        return p

    def reuse_map(self, name: str, fd: int) -> None:
        """Use an existing map (from another object or a pin) for `name` before load()."""
        _check(f"reuse map {name}", lib().bpf_map__reuse_fd(self._map_ptr(name), fd))

    def load(self) -> None:
        global _print_lines
        with _lib_lock:
            _print_lines = []
            try:
                rc = lib().bpf_object__load(self._obj)
            finally:
                log, _print_lines = "".join(_print_lines), None
        if rc < 0:
            raise load_error(os.path.basename(self.path), -rc, log)

    def prog_fd(self, name: str) -> int:
        p = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not p:
            raise KernelError(f"no program {name} in {self.path}", op="find program")
        return _check(f"fd of program {name}", lib().bpf_program__fd(p))

    def map_fd(self, name: str) -> int:
        return _check(f"fd of map {name}", lib().bpf_map__fd(self._map_ptr(name)))

    def close(self) -> None:
        obj, self._obj = self._obj, None
        if obj:
            lib().bpf_object__close(obj)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
