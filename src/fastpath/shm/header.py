"""The hand-over header: what travels next to the fds of one SCM_RIGHTS message.

Pure data, no I/O. Every message on a fastpath shm socket is one SOCK_SEQPACKET datagram:
a fixed 48-byte header, then `body` bytes (a reason text in a reply), with exactly
`nfds` descriptors attached. The receiver trusts nothing in it: the header only says what
the sender claims, and `fastpath.shm.handover` checks each claim against the kernel (seals,
st_size, fd types) before it maps anything.

Layout, little-endian (offsets in bytes):
    0  magic    4s   b"FPSH"
    4  version  u16  1; a receiver refuses any other (no silent best effort)
    6  kind     u16  REGION, CHANNEL or REPLY
    8  flags    u32  READONLY, PRODUCER (CHANNEL: the sender produces), OK (REPLY)
   12  nfds     u16  descriptors attached to this very message
   14  (pad)    u16  zero
   16  size     u64  REGION/CHANNEL: bytes of the memfd; the receiver requires st_size == size
   24  length   u64  REGION: payload bytes used in the region (<= size)
   32  arg0     u64  CHANNEL: slot count; REPLY: errno of a refusal
   40  arg1     u64  CHANNEL: slot capacity in bytes
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"FPSH"
VERSION = 1

KIND_REGION = 1
KIND_CHANNEL = 2
KIND_REPLY = 3
KINDS = {KIND_REGION: "region", KIND_CHANNEL: "channel", KIND_REPLY: "reply"}

FLAG_READONLY = 1 << 0   # the region is write-sealed; map it read-only
FLAG_PRODUCER = 1 << 1   # CHANNEL: the sender is the producer, the receiver consumes
FLAG_OK = 1 << 2         # REPLY: accepted
FLAGS_KNOWN = FLAG_READONLY | FLAG_PRODUCER | FLAG_OK

# How many fds each kind carries: a memfd; a memfd and two eventfds; none.
NFDS = {KIND_REGION: 1, KIND_CHANNEL: 3, KIND_REPLY: 0}

_FMT = struct.Struct("<4sHHIHHQQQQ")
HEADER_SIZE = _FMT.size  # 48
MAX_BODY = 4096          # reply reasons are one line; anything longer is refused
MAX_MESSAGE = HEADER_SIZE + MAX_BODY


class HeaderError(ValueError):
    """The bytes are not a header this version understands."""


@dataclass(frozen=True)
class Header:
    kind: int
    size: int = 0
    flags: int = 0
    nfds: int | None = None
    length: int = 0
    arg0: int = 0
    arg1: int = 0
    version: int = VERSION

    def __post_init__(self) -> None:
        if self.nfds is None:
            object.__setattr__(self, "nfds", NFDS.get(self.kind, 0))

    def pack(self) -> bytes:
        return _FMT.pack(MAGIC, self.version, self.kind, self.flags, self.nfds, 0,
                         self.size, self.length, self.arg0, self.arg1)

    @property
    def kind_name(self) -> str:
        return KINDS.get(self.kind, f"kind {self.kind}")


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse one message: (header, body). Refuses anything this version did not write."""
    if len(data) < HEADER_SIZE:
        raise HeaderError(f"message of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, kind, flags, nfds, pad, size, length, arg0, arg1 = _FMT.unpack_from(data)
    if magic != MAGIC:
        raise HeaderError(f"bad magic {magic!r}, not a fastpath shm message")
    if version != VERSION:
        raise HeaderError(f"header version {version}, this fastpath speaks {VERSION}")
    if kind not in KINDS:
        raise HeaderError(f"unknown kind {kind}")
    if flags & ~FLAGS_KNOWN:
        raise HeaderError(f"unknown flags {flags & ~FLAGS_KNOWN:#x}")
    if nfds != NFDS[kind]:
        raise HeaderError(f"{KINDS[kind]} carries {NFDS[kind]} fds, header says {nfds}")
    if pad:
        raise HeaderError("non-zero padding")
    if kind == KIND_REGION and length > size:
        raise HeaderError(f"payload length {length} exceeds region size {size}")
    if kind == KIND_CHANNEL and (arg0 == 0 or arg1 == 0):
        raise HeaderError("channel with no slots or zero slot capacity")
    body = bytes(data[HEADER_SIZE:])
    if len(body) > MAX_BODY:
        raise HeaderError(f"body of {len(body)} bytes exceeds {MAX_BODY}")
    return Header(kind=kind, size=size, flags=flags, nfds=nfds, length=length, arg0=arg0,
                  arg1=arg1, version=version), body
