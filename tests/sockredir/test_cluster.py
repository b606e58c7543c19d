"""The demo cluster with accel: `fastpath up --accel`, pod processes started with
`fastpath exec` are accelerated pod to pod, `fastpath down` leaves nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import run_fastpath

pytestmark = [pytest.mark.root, pytest.mark.slow]

SERVER = textwrap.dedent("""
    import socket, sys, json
    from fastpath.sockredir.query import is_accelerated
    ls = socket.create_server((sys.argv[1], 47300))
    print("ready", flush=True)
    s, _ = ls.accept()
    data = b""
    while len(data) < 1 << 20:
        b = s.recv(1 << 20)
        if not b: break
        data += b
    s.sendall(data[::-1][:1000])
    print(json.dumps({"acc": is_accelerated(s), "n": len(data),
                      "cgroup": open("/proc/self/cgroup").read()}), flush=True)
""")
CLIENT = textwrap.dedent("""
    import socket, sys, json
    from fastpath.sockredir.query import is_accelerated
    c = socket.create_connection((sys.argv[1], 47300), timeout=10)
    data = bytes(range(256)) * 4096
    c.sendall(data)
    back = b""
    while len(back) < 1000:
        back += c.recv(1000)
    print(json.dumps({"acc": is_accelerated(c), "ok": back == data[::-1][:1000]}))
""")


@pytest.fixture
def down():
    yield
    run_fastpath("down", check=False)


def test_up_accel_exec_down(down, instance):
    from fastpath.sockredir import cgroup as CG
    up = json.loads(run_fastpath("up", "--nodes", "1", "--pods", "2", "--accel", "--json").stdout)
    assert up["accel"]["cgroup"] == CG.default_path()
    node = up["nodes"][0]
    assert node["pod_cidr"] in up["accel"]["local"]
    p1, p2 = up["pods"][:2]
    srv = subprocess.Popen([sys.executable, "-m", "fastpath", "exec", p1["name"], "--",
                            sys.executable, "-c", SERVER, p1["ip"]],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        cli = run_fastpath("exec", p2["name"], "--", sys.executable, "-c", CLIENT, p1["ip"])
        c = json.loads(cli.stdout)
        s = json.loads(srv.stdout.readline())
        assert c["ok"] and s["n"] == 1 << 20
        assert c["acc"] and s["acc"], (c, s)
        assert CG.default_path().rsplit("/", 1)[1] in s["cgroup"]
    finally:
        srv.kill()
        srv.wait()
    st = json.loads(run_fastpath("accel", "status", "--json").stdout)
    assert st["counters"]["redirected_bytes"] >= 1 << 20
    run_fastpath("down")
    assert not json.loads(run_fastpath("accel", "status", "--json").stdout)["enabled"]


def _ours() -> list[str]:
    from fastpath import naming
    from fastpath.kernel import netns
    return [n for n in netns.list_names() if naming.owned(n)]


def test_up_accel_on_a_refused_kernel_makes_nothing(down, monkeypatch, capsys):
    """The kernel is asked before anything is built: a refusal leaves no cluster behind."""
    from fastpath import cli
    from fastpath.errors import KernelUnsupported
    from fastpath.sockredir import preflight

    def refuse(skip_selftest=False):
        raise KernelUnsupported("redirect self-test failed: epoll_wakeup (a reader blocked in "
                                "epoll_wait wakes for redirected data): no wake-up",
                                op="accel on this kernel")
    monkeypatch.setattr(preflight, "run", refuse)
    assert cli.main(["up", "--nodes", "1", "--pods", "1", "--accel"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epoll_wakeup" in err
    assert _ours() == []


def test_up_accel_that_fails_late_leaves_the_cluster_up_and_says_accel_is_off(down, monkeypatch,
                                                                                capsys):
    from fastpath import cli
    from fastpath.errors import KernelError
    from fastpath.sockredir import loader

    def fail(*a, **kw):
        raise KernelError("Operation not permitted", op="attach sockops", errno=1)
    monkeypatch.setattr(loader, "enable", fail)
    assert cli.main(["up", "--nodes", "1", "--pods", "1", "--accel", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["created"] and out["accel"] == {"enabled": False,
                                               "error": "attach sockops: Operation not "
                                                        "permitted [EPERM]"}
    assert any(n.endswith("node1") for n in _ours())
    assert json.loads(run_fastpath("check", "--json").stdout)["ok"]
