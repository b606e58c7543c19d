"""The libbpf edge: struct layouts fastpath reads from the kernel are checked against the
running kernel's own BTF, never trusted as hard-coded offsets."""

from __future__ import annotations

import ctypes
import os

import pytest

from fastpath.sockredir import libbpf as B

pytestmark = pytest.mark.root


@pytest.mark.parametrize("struct, cls", [("bpf_map_info", B.BpfMapInfo),
                                         ("bpf_prog_info", B.BpfProgInfo)])
def test_info_structs_match_the_kernels_btf(struct, cls):
    with B.KernelBtf() as btf:
        offs = btf.member_offsets(struct)
    assert offs is not None, f"no struct {struct} in the kernel's BTF"
    for name, *_ in cls._fields_:
        assert getattr(cls, name).offset == offs[name], (struct, name)


def test_map_info_and_ids_of_a_real_map(accel):
    fd = B.obj_get(os.path.join(B_pins(), "map_sockhash"))
    try:
        info = B.map_info(fd.fileno())
        assert info.name == b"fp_sockhash" and info.key_size == 56 and info.value_size == 8
        assert info.id == B.obj_id(fd.fileno()) and info.id in B.map_ids()
        again = B.map_fd_by_id(info.id)
        assert again is not None and B.map_info(again.fileno()).name == b"fp_sockhash"
        again.close()
    finally:
        fd.close()
    assert B.map_fd_by_id(0xFFFFFFF0) is None
    assert ctypes.sizeof(B.BpfMapInfo) == 40


def B_pins() -> str:
    from fastpath.sockredir import loader
    return loader.pin_dir()
