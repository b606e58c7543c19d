"""The plugin's client half: what it imports before reaching the agent, and the wire format."""

import json
import os
import socket
import subprocess
import sys

import pytest

from fastpath.cni import wire

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(wire.__file__))))


def test_client_imports_nothing_heavy():
    # As the installed launcher starts it: -I -S, the package dir on sys.path.
    code = ("import sys; sys.path.insert(0, %r); import fastpath.cni.client; "
            "print(' '.join(sorted(sys.modules)))" % SRC)
    mods = set(subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                              text=True, check=True).stdout.split())
    heavy = {"socket", "json", "re", "sqlite3", "pyroute2", "rich", "asyncio", "ctypes",
             "subprocess", "ipaddress", "fastpath.errors", "fastpath.state"}
    assert not mods & heavy, mods & heavy
    assert "fastpath.cni.client" in mods


def test_version_needs_nothing(tmp_path):
    from fastpath.cni.install import install
    plugin = install(str(tmp_path))
    p = subprocess.run([plugin], env={"CNI_COMMAND": "VERSION"}, input=b"", capture_output=True)
    assert p.returncode == 0
    assert b'"supportedVersions":["0.4.0","1.0.0","1.1.0"]' in p.stdout


def test_launcher_is_absolute_and_isolated(tmp_path):
    from fastpath.cni.install import install
    text = open(install(str(tmp_path), "fp2")).read()
    first = text.splitlines()[0]
    assert first.startswith("#!/") and first.endswith(" -IS")
    assert os.access(tmp_path / "fp2", os.X_OK)
    assert "fastpath.cni.client" in text


def test_install_errors(tmp_path):
    from fastpath.cni.install import install
    from fastpath.errors import UsageError
    with pytest.raises(UsageError):
        install(str(tmp_path / "missing"))
    with pytest.raises(UsageError):
        install(str(tmp_path), "a/b")


def test_install_command(tmp_path, fastpath):
    import json
    p = fastpath("cni", "install", "--dir", str(tmp_path), "--json")
    assert json.loads(p.stdout)["installed"] == str(tmp_path / "fastpath")


def test_request_roundtrip_with_fds():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    try:
        env = {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=x=y", "FASTPATH_INSTANCE": "ab"}
        stdin = b'{"cniVersion":"1.1.0"}' * 5000  # > one recv
        msg = wire.encode_request(env, stdin, "HP")
        socket.send_fds(a, [msg], [r, w])
        a.shutdown(socket.SHUT_WR)
        got_env, got_stdin, fds = wire.recv_request(b)
        assert got_env == env and got_stdin == stdin and set(fds) == {"H", "P"}
        os.write(fds["P"], b"x")  # the received fds are live duplicates
        assert os.read(r, 1) == b"x"
        for fd in fds.values():
            os.close(fd)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.parametrize("header", [b"HELLO 1 2 -\n", b"FPCNI1 x 2 -\n", b"FPCNI1 1 2 HPX\n",
                                    b"FPCNI1 1 99999999 -\n", b"FPCNI1 1 2 Q\n"])
def test_bad_requests(header):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(header + b"xxx")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(wire.BadRequest):
            wire.recv_request(b)


def test_fd_count_must_match_header():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.sendall(wire.encode_request({}, b"{}", "HP"))  # no fds attached
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(wire.BadRequest):
            wire.recv_request(b)


def test_answer_and_socket_path():
    assert wire.decode_answer(wire.encode_answer(1, b'{"code":7}\n')) == (1, b'{"code":7}\n')
    with pytest.raises(wire.BadRequest):
        wire.decode_answer(b"")
    assert wire.socket_path({}) == "/run/fastpath/fp-agent.sock"
    assert wire.socket_path({"FASTPATH_INSTANCE": "x1"}) == "/run/fastpath/fp-x1-agent.sock"
    assert wire.socket_path({"FASTPATH_AGENT_SOCKET": "/s"}, None) == "/s"
    assert wire.socket_path({"FASTPATH_AGENT_SOCKET": "/s"}, "/c") == "/c"


def test_native_launcher(tmp_path):
    from fastpath.cni.install import install_report
    rep = install_report(str(tmp_path), "fastpath", "native")
    assert rep["launcher"] == "native" and os.path.exists(rep["fallback"])
    p = subprocess.run([rep["installed"]], env={"CNI_COMMAND": "VERSION"}, input=b"",
                       capture_output=True)
    assert p.returncode == 0 and b'"1.1.0"' in p.stdout
    # No agent: it hands the request, stdin included, to the python plugin.
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "x", "CNI_NETNS": "/run/netns/nope",
           "CNI_IFNAME": "eth0", "FASTPATH_AGENT_SOCKET": str(tmp_path / "none.sock")}
    conf = b'{"cniVersion":"1.0.0","name":"n","type":"fastpath","podCIDR":"10.1.0.0/24","mtu":1}'
    p = subprocess.run([rep["installed"]], env=env, input=conf, capture_output=True, timeout=60)
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert doc["code"] == 7 and "mtu" in doc["msg"] and doc["cniVersion"] == "1.0.0"
