"""Choosing the sk_msg build, judging the redirect self-test, and running both on this kernel."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fastpath import features as FF
from fastpath.errors import KernelUnsupported
from fastpath.sockredir import features as F
from fastpath.sockredir import libbpf as B
from fastpath.sockredir.selftest import CHECKS, Result, judge

# What each kernel showed (read in qemu guests; see sockredir/features.py)
K618 = F.BpfFacts(cgroup2="/sys/fs/cgroup", btf=True, sockops=True, sk_msg=True,
                  sockhash=True, lpm_trie=True, sk_storage=True, netns_cookie_in_sockops=True,
                  sk_storage_in_sk_msg=True, probe_read_in_sk_msg=True, rdonly_cast=True,
                  msg_tot_len=True)
K61 = dataclasses.replace(K618, rdonly_cast=False, msg_tot_len=False)


def test_each_kernel_gets_its_build():
    assert F.choose(K618) is F.TOT_LEN
    assert F.choose(K61) is F.WALK
    # a kfunc without the field (or the reverse) is not enough for the O(1) read
    assert F.choose(dataclasses.replace(K618, msg_tot_len=False)) is F.WALK
    assert F.choose(dataclasses.replace(K61, probe_read_in_sk_msg=False)) is F.NONE
    assert F.NONE.degraded.startswith("peer queue unbounded on this kernel")
    assert F.TOT_LEN.degraded == ""


def test_findings_refuse_what_accel_cannot_do_without():
    assert FF.verdicts(F.findings(K618)) == {"accel": "ok"}
    assert FF.verdicts(F.findings(K61)) == {"accel": "degraded"}
    for field, feature in [("cgroup2", "cgroup v2"), ("btf", "BTF"),
                           ("sockops", "sockmap, sk_msg and sockops"),
                           ("netns_cookie_in_sockops", "bpf_get_netns_cookie in sockops"),
                           ("sk_storage_in_sk_msg", "bpf_sk_storage_get in sk_msg")]:
        facts = dataclasses.replace(K618, **{field: "" if field == "cgroup2" else False})
        bad = FF.first_refusal(F.findings(facts), "accel")
        assert bad is not None and bad.feature == feature, field
        assert bad.line().startswith(f"{feature}: missing")


def test_judge_names_the_failed_required_check():
    ok = [Result(c.name, True, "fine") for c in CHECKS]
    assert judge(ok).ok and judge(ok).fallbacks == []
    broken = [r if r.name != "epoll_wakeup" else Result("epoll_wakeup", False, "no wake-up")
              for r in ok]
    v = judge(broken)
    assert not v.ok and v.refused.name == "epoll_wakeup"
    assert v.line().startswith("redirect self-test failed: epoll_wakeup (")
    assert "no wake-up" in v.line()


def test_judge_lists_fallbacks_and_skips():
    rs = [Result(c.name, c.name != "fionread", "x") for c in CHECKS]
    rs[-1] = Result("queue_bound", True, "not run", skipped=True)
    v = judge(rs)
    assert v.ok and v.fallbacks == ["fionread: the proxy finds redirected bytes with a "
                                    "1-byte MSG_PEEK"]
    assert "6 checks" in v.line()


def test_a_check_that_never_reported_counts_as_failed():
    """A hang or a crash stops the child before it reports: that check, and those after it,
    are failures, never silently passed."""
    v = judge([Result("redirected", True, "ok"), Result("intact", True, "ok")])
    assert not v.ok and v.refused.name == "epoll_wakeup"
    assert "not reported" in v.refused.detail


def test_load_errors_blame_who_refused():
    ksym = ("libbpf: extern (func ksym) 'bpf_rdonly_cast': not found in kernel or module BTFs\n"
            "libbpf: failed to load object 'sk_msg.bpf.o'\n")
    e = B.load_error("sk_msg.bpf.o", 3, ksym)
    assert type(e) is KernelUnsupported and "bpf_rdonly_cast" in str(e)
    assert "verifier" not in str(e)
    ver = "libbpf: prog 'x': BPF program load failed: Permission denied\n" \
          "-- BEGIN PROG LOAD LOG --\nR1 invalid mem access\nprocessed 12 insns\n"
    e = B.load_error("x.bpf.o", 13, ver)
    assert isinstance(e, B.VerifierRejected) and "R1 invalid mem access" in str(e)


# --- on this kernel ---

@pytest.mark.root
def test_probe_picks_the_build_the_btf_supports():
    facts = F.probe()
    with B.KernelBtf() as btf:
        has = btf.has_func("bpf_rdonly_cast") and "msg_tot_len" in btf.members("sk_psock")
    assert F.choose(facts) is (F.TOT_LEN if has else F.WALK)
    assert FF.first_refusal(F.findings(facts), "accel") is None


@pytest.mark.root
def test_self_test_passes_and_leaves_nothing():
    from fastpath.sockredir import preflight
    pre = preflight.run()
    assert pre.selftest.ok, pre.selftest.to_dict()
    by = {r.name: r for r in pre.selftest.results}
    assert by["queue_bound"].ok and not by["queue_bound"].skipped
    assert "redirected" in by["redirected"].detail
    # the conftest's residue check fails the test if the netns or cgroup stayed


@pytest.mark.root
def test_self_test_catches_a_build_that_claims_a_bound_it_lacks():
    """The checks can fail: the unbounded build, presented as a bounded one, never pushes
    back on a peer that does not read, and the kernel is refused naming the check."""
    from fastpath.sockredir import selfrun
    liar = F.QueueBound("sk_msg_nobound", "ingress-walk")
    v = selfrun.run(liar)
    assert not v.ok and v.refused.name == "queue_bound", v.to_dict()
    assert "no back-pressure" in v.refused.detail


@pytest.mark.root
def test_enable_reports_the_build_and_the_self_test(fastpath):
    out = json.loads(fastpath("accel", "enable", "--json").stdout)
    try:
        assert out["peer_queue"]["obj"] == F.choose(F.probe()).obj
        assert out["selftest"]["ok"] is True
        st = json.loads(fastpath("accel", "status", "--json").stdout)
        assert st["peer_queue"] == out["peer_queue"] and st["selftest"]["ok"] is True
        text = fastpath("accel", "status").stdout
        assert "peer queue bound" in text and "redirect self-test" in text
    finally:
        fastpath("accel", "disable")
    out = json.loads(fastpath("accel", "enable", "--skip-selftest", "--json").stdout)
    try:
        assert out["selftest"] is None
        assert any("self-test skipped" in n for n in out["notes"])
    finally:
        fastpath("accel", "disable")


@pytest.mark.root
def test_down_removes_what_a_killed_self_test_left(fastpath):
    """An `accel enable` SIGKILLed mid-self-test leaves its netns and cgroup; `fastpath down`
    finds them by name, while a live self-test's are left alone."""
    import os
    import subprocess
    import sys
    import time

    from fastpath import naming
    from fastpath.kernel import cgroup2
    from fastpath.kernel import netns as NS
    from fastpath.sockredir import cgroup as CG

    prefix = naming.name("selftest") + "-"
    p = subprocess.Popen([sys.executable, "-m", "fastpath", "accel", "enable"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            n.startswith(prefix) for n in NS.list_names()):
        time.sleep(0.005)
    p.kill()
    p.wait()
    # whether or not the kill landed inside the test, make the leftover case certain:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = gone.pid   # exited and reaped: no process has this pid now
    ns_name = f"{prefix}{dead}"
    NS.create(ns_name)
    CG.create(os.path.join(CG.root(), ns_name))
    live = f"{prefix}{os.getpid()}"   # "live": this test process
    NS.create(live)
    try:
        out = fastpath("down").stdout
        assert f"netns {ns_name}" in out
        assert ns_name not in NS.list_names() and not os.path.exists(
            os.path.join(cgroup2.root(), ns_name))
        assert live in NS.list_names()            # a running self-test is not touched
        assert not [n for n in NS.list_names() if n.startswith(prefix) and n != live]
    finally:
        NS.delete(live)
        fastpath("accel", "disable", check=False)
