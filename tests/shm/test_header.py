import pytest

from fastpath.shm import header as hdr


def test_round_trip_every_field():
    h = hdr.Header(hdr.KIND_CHANNEL, size=1 << 40, flags=hdr.FLAG_PRODUCER, arg0=8, arg1=65536)
    data = h.pack()
    assert len(data) == hdr.HEADER_SIZE == 48
    got, body = hdr.unpack(data + b"why")
    assert got == h and got.nfds == 3 and body == b"why"


def test_default_fd_counts_per_kind():
    assert hdr.Header(hdr.KIND_REGION).nfds == 1
    assert hdr.Header(hdr.KIND_CHANNEL).nfds == 3
    assert hdr.Header(hdr.KIND_REPLY).nfds == 0


def _raw(**kw):
    fields = dict(magic=b"FPSH", version=1, kind=hdr.KIND_REGION, flags=0, nfds=1, pad=0,
                  size=4096, length=10, arg0=0, arg1=0)
    fields.update(kw)
    return hdr._FMT.pack(*fields.values())


@pytest.mark.parametrize("kw, why", [
    (dict(magic=b"XXXX"), "bad magic"),
    (dict(version=2), "version 2"),
    (dict(kind=9), "unknown kind"),
    (dict(flags=1 << 20), "unknown flags"),
    (dict(nfds=300), "carries 1 fds, header says 300"),
    (dict(pad=1), "padding"),
    (dict(length=4097), "exceeds region size"),
    (dict(kind=hdr.KIND_CHANNEL, nfds=3, arg0=0, arg1=64), "no slots"),
])
def test_refuses_what_this_version_did_not_write(kw, why):
    with pytest.raises(hdr.HeaderError, match=why):
        hdr.unpack(_raw(**kw))


def test_refuses_short_and_oversized():
    with pytest.raises(hdr.HeaderError, match="shorter"):
        hdr.unpack(b"FPSH")
    with pytest.raises(hdr.HeaderError, match="body"):
        hdr.unpack(_raw() + b"x" * (hdr.MAX_BODY + 1))
