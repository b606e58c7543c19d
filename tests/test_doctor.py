"""`fastpath doctor`: a line per kernel feature, each with what fastpath does about it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastpath import features as FF
from fastpath.doctor import report

# The features the doctor must name (the names it prints, by mechanism)
ACCEL = ["cgroup v2", "BTF", "sockmap, sk_msg and sockops", "bpf_get_netns_cookie in sockops",
         "bpf_sk_storage_get in sk_msg", "kfunc bpf_rdonly_cast and sk_psock.msg_tot_len",
         "bpf_probe_read_kernel in sk_msg", "redirect: fionread", "redirect: epoll_wakeup"]
OTHERS = ["memfd seals", "MFD_NOEXEC_SEAL", "MADV_POPULATE_WRITE", "pidfd_open",
          "F_SETPIPE_SZ maximum"]


def test_render_marks_each_effect():
    fs = [FF.used("a", "accel", "seen"), FF.fallback("b", "shm", "EINVAL", "do x"),
          FF.refused("c", "proxy", "gone", "cannot")]
    text = report.render({"kernel": "6.1.0", "findings": [f.to_dict() for f in fs],
                          "verdicts": FF.verdicts(fs)})
    lines = text.splitlines()
    assert lines[0] == "kernel 6.1.0"
    assert lines[1].split()[0] == "ok" and lines[2].split()[0] == "WARN"
    assert lines[3].split()[0] == "FAIL" and "c: missing (gone) -> refused: cannot" in lines[3]
    assert lines[-1].strip() == "accel: ok, shm: degraded, proxy: refused"


@pytest.mark.root
def test_doctor_names_every_feature_and_refuses_nothing_here(fastpath):
    rep = json.loads(fastpath("doctor", "--json").stdout)
    names = [f["feature"] for f in rep["findings"]]
    for want in ACCEL + OTHERS:
        assert want in names, want
    for f in rep["findings"]:
        assert f["effect"] in (FF.USED, FF.FALLBACK, FF.REFUSED)
        assert f["present"] == (f["effect"] == FF.USED) or f["effect"] == FF.FALLBACK
    assert "refused" not in rep["verdicts"].values(), rep["verdicts"]
    assert rep["selftest"]["ok"] is True
    text = fastpath("doctor", "--no-selftest").stdout
    assert "redirect:" not in text and "F_SETPIPE_SZ maximum" in text


def test_unprivileged_doctor_says_it_did_not_probe_bpf():
    cmd = [sys.executable, "-m", "fastpath", "doctor", "--json"]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    bpf = next(f for f in rep["findings"] if f["feature"] == "BPF features")
    assert bpf["effect"] == FF.FALLBACK and "root" in bpf["action"]
    assert {f["feature"] for f in rep["findings"]} >= set(OTHERS)
