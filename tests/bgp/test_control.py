from datetime import datetime
from pathlib import Path

import pytest

from fastpath.bgp.control import BirdError, is_last, parse_lines, parse_protocols

DATA = Path(__file__).parent / "data"


def reply(name):
    raw = (DATA / name).read_text().splitlines()
    assert raw[0].startswith("0001 BIRD")
    return parse_lines(raw[1:])


def test_parse_lines_codes_and_continuations():
    r = parse_lines(["1002-p1  BGP  ---  up  2026-01-01 00:00:00  Established",
                     " p2  BGP  ---  start  2026-01-01 00:00:01  Active", "0000 "])
    assert [c for c, _ in r.lines] == [1002, 1002, 0]
    assert r.ok and r.code == 0
    assert is_last("0000 ") and not is_last("1002-x") and not is_last(" 0000 x")
    with pytest.raises(ValueError):
        parse_lines(["garbage"])


def test_established_sessions():
    protos = {p.name: p for p in parse_protocols(reply("protocols_all_established.txt"))}
    assert set(protos) == {"device1", "fp_block", "fp_kernel", "fp_peer_x"}
    p = protos["fp_peer_x"]
    assert p.proto == "BGP" and p.state == "up" and p.established
    assert p.bgp_state == "Established" and p.neighbor_address == "10.99.0.2"
    assert p.neighbor_id == "10.99.0.2"
    assert (p.imported, p.exported, p.preferred) == (1, 1, 1)
    assert p.since == datetime(2026, 11, 22, 11, 8, 15)
    k = protos["fp_kernel"]
    assert (k.imported, k.exported) == (0, 1) and k.bgp_state is None


def test_peer_gone():
    p = {p.name: p for p in parse_protocols(reply("protocols_all_peer_gone.txt"))}["fp_peer_x"]
    assert p.state == "start" and p.bgp_state == "Active" and not p.established
    assert "Connection refused" in p.info
    assert p.imported is None  # a down session has no channel counters


def test_since_with_milliseconds_and_errors():
    r = parse_lines(["2002-Name       Proto      Table      State  Since         Info",
                     "1002-fp_peer_node2 BGP        ---        start  2026-11-22 11:10:19.896  Idle"
                     "          Received: Hold timer expired",
                     "1006-  BGP state:          Idle",
                     "    Neighbor address: 10.237.0.2",
                     "    Last error:       Received: Hold timer expired",
                     "0000 "])
    (p,) = parse_protocols(r)
    assert p.since == datetime(2026, 11, 22, 11, 10, 19, 896000)
    assert p.last_error == "Received: Hold timer expired"
    assert p.info.startswith("Idle")


def test_error_reply_raises_birds_message():
    r = parse_lines(["9001 syntax error, unexpected CF_SYM_UNDEFINED"])
    assert not r.ok and r.message() == "syntax error, unexpected CF_SYM_UNDEFINED"
    with pytest.raises(BirdError, match="syntax error"):
        parse_protocols(r)


def serve(sock_path, replies):
    """A stand-in BIRD on a real Unix socket: greets, then answers each command line
    with the next canned reply (raw BIRD lines)."""
    import socket
    import threading

    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock_path))
    srv.listen(1)

    def run():
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"0001 BIRD 2.0.12 ready.\n")
            f = conn.makefile("rb")
            for r in replies:
                if not f.readline():
                    return
                # in small pieces: the client must reassemble lines across reads
                data = r.encode()
                for i in range(0, len(data), 7):
                    conn.sendall(data[i:i + 7])
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_client_over_a_unix_socket(tmp_path):
    from fastpath.bgp.control import BirdControl

    captured = (DATA / "protocols_all_established.txt").read_text().split("\n", 1)[1]
    t = serve(tmp_path / "b.ctl", [captured, "9001 syntax error, unexpected CF_SYM_UNDEFINED\n"])
    with BirdControl(str(tmp_path / "b.ctl")) as ctl:
        assert ctl.greeting.message() == "BIRD 2.0.12 ready."
        protos = ctl.protocols()
        assert [p.name for p in protos] == ["device1", "fp_block", "fp_kernel", "fp_peer_x"]
        with pytest.raises(BirdError, match="syntax error"):
            ctl.check("bogus")
    t.join(2)


def test_client_names_a_missing_bird(tmp_path):
    from fastpath.bgp.control import BirdControl
    from fastpath.errors import KernelError

    with pytest.raises(KernelError, match="BIRD is not running"):
        BirdControl(str(tmp_path / "none.ctl"))


def test_hold_timer_expired():
    # captured from node1 3.3 s after node2's underlay link went down
    (p,) = parse_protocols(reply("protocol_hold_expired.txt"))
    assert p.name == "fp_peer_node2" and p.state == "start"
    assert p.bgp_state == "Idle" and not p.established
    assert p.info.endswith("BGP Error: Hold timer expired")
    assert p.last_error == "BGP Error: Hold timer expired"
    assert p.since == datetime(2026, 11, 22, 11, 29, 33, 160000)
