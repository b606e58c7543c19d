"""The torture test's own checks must catch what they claim to: lost, reordered and
corrupted bytes."""

from fastpath.sockredir.streams import Checker, Stream, judge


def stream_bytes(seed, budget, max_size):
    s, out = Stream(seed, budget, max_size), []
    while (b := s.next()) is not None:
        out.append(b)
    return b"".join(out)


def test_stream_is_deterministic_and_sized():
    a = stream_bytes(7, 100_000, 4096)
    assert a == stream_bytes(7, 100_000, 4096) and len(a) == 100_000
    assert a != stream_bytes(8, 100_000, 4096)


def test_checker_accepts_any_chunking():
    data = stream_bytes(1, 50_000, 1000)
    c = Checker(1, 50_000, 1000)
    for i in range(0, len(data), 333):
        c.feed(data[i:i + 333])
    assert c.complete and c.bad is None


def test_checker_catches_corruption_reordering_and_extra_bytes():
    data = bytearray(stream_bytes(2, 20_000, 500))
    bad = bytearray(data)
    bad[12345] ^= 1
    c = Checker(2, 20_000, 500)
    c.feed(bytes(bad))
    assert c.bad == "wrong byte at offset 12345"
    swapped = data[:1000] + data[2000:3000] + data[1000:2000] + data[3000:]
    c = Checker(2, 20_000, 500)
    c.feed(bytes(swapped))
    assert c.bad and c.bad.startswith("wrong byte at offset")
    c = Checker(2, 20_000, 500)
    c.feed(bytes(data) + b"x")
    assert c.bad and "past the end" in c.bad


def test_checker_sees_lost_bytes_as_incomplete():
    data = stream_bytes(3, 10_000, 100)
    c = Checker(3, 10_000, 100)
    c.feed(data[:-1])
    assert not c.complete and c.bad is None


def _end(**kw):
    d = {"sent": 0, "received": 0, "sent_sha": "s", "recv_sha": "s", "error": None,
         "failure": None, "complete": True}
    d.update(kw)
    return d


def test_judge():
    ok = {"mode": "clean", "client": _end(), "server": _end()}
    assert judge(ok) is None
    lost = {"mode": "clean", "client": _end(complete=False), "server": _end()}
    assert "lost" in judge(lost)
    reset = {"mode": "clean", "client": _end(error="ECONNRESET"), "server": _end()}
    assert judge(reset)
    aborted = {"mode": "reset-client", "client": _end(complete=False, error="reset by us"),
               "server": _end(complete=False, error="ECONNRESET")}
    assert judge(aborted) is None
    hang = {"mode": "reset-server", "client": _end(failure="hang: ..."), "server": _end()}
    assert "hang" in judge(hang)
