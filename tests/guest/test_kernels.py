"""The kernel conformance suite (tests/guest/suite.py) on the kernels production nodes run:
Debian 12's 6.1 and its 6.12, each booted in a qemu guest by scripts/vm-run, both guests
at once (one vCPU each: the two CPUs of this machine), while the host's own suite covers
6.18.

A guest takes ~20 s to boot and runs 50-70x slower than the host under TCG; the whole run
costs a few minutes of wall time (the closing note of the change that added it has the
figures). Without root, qemu or the kernels the test is skipped, except in CI
(CI=true), where a missing guest kernel is a failure: a suite that passes by skipping
proves nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.guest.suite import CONFORMANCE

ROOT = Path(__file__).resolve().parents[2]
VM_RUN = ROOT / "scripts" / "vm-run"
KERNELS = ("6.1", "6.12")
# Per guest. Measured: ~4-6 min per kernel with both guests running at once; the bound is
# there for a hung guest, not for a slow one.
GUEST_TIMEOUT = 1500
SUMMARY = re.compile(r"^(\d+) passed\b.* in [\d.]+s")


def load_vm_run():
    loader = importlib.machinery.SourceFileLoader("vm_run", str(VM_RUN))
    spec = importlib.util.spec_from_loader("vm_run", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    vm = load_vm_run()
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86 is not installed (make setup)"
    if not (ROOT / ".venv" / "bin" / "vng").exists():
        return "virtme-ng is not in .venv (make setup)"
    for k in KERNELS:
        if not vm.newest_kernel(k, vm.installed_releases()):
            return f"no Debian {k} kernel installed (scripts/install-guest-kernels.sh)"
    return None


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.guest
@pytest.mark.timeout(GUEST_TIMEOUT + 300)
def test_conformance_suite_on_debian_kernels(tmp_path):
    why = _missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the guest kernels cannot run here: {why}")
        pytest.skip(why)
    procs = {}
    start = time.monotonic()
    for k in KERNELS:
        log = open(tmp_path / f"guest-{k}.log", "w")
        procs[k] = (subprocess.Popen(
            [sys.executable, str(VM_RUN), "--kernel", k, "--cpus", "1", "--mem", "1G",
             "--timeout", str(GUEST_TIMEOUT), "--", "python", "-m", "pytest", "-q",
             "-p", "no:cacheprovider", "--timeout", "900", *CONFORMANCE],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log)
    failed = []
    try:
        results = {k: p.wait(GUEST_TIMEOUT + 120) for k, (p, _) in procs.items()}
    finally:
        # whatever ended the wait (a timeout, an interrupt): vm-run unwinds on SIGTERM and
        # kills its guest, so no qemu outlives the test
        for p, log in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.close()
    for k, rc in results.items():
        text = (tmp_path / f"guest-{k}.log").read_text(errors="replace")
        sys.stdout.write(f"\n===== Debian {k} guest =====\n{text[-6000:]}")
        # every conformance test ran and passed: a skip counts as a failure
        summary = [ln for ln in text.splitlines() if SUMMARY.match(ln.strip())]
        if rc != 0 or not summary:
            failed.append(f"{k}: exit {rc}")
        elif re.search(r"skipped|deselected|failed|error", summary[-1]) or \
                int(SUMMARY.match(summary[-1].strip()).group(1)) < len(CONFORMANCE):
            failed.append(f"{k}: {summary[-1].strip()}")
    print(f"\nguests took {time.monotonic() - start:.0f} s")
    assert not failed, failed
    assert not subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True).stdout, \
        "a guest outlived its run"


def test_vm_run_picks_the_newest_package_of_a_series():
    vm = load_vm_run()
    rel = ["6.1.0-9-amd64", "6.1.0-57-amd64", "6.1.0-47-amd64", "6.12.117+deb12-amd64",
           "6.12.99+deb12-amd64", "6.18.44-fc-v669", "6.1.0-57-rt-amd64"]
    assert vm.newest_kernel("6.1", rel) == "6.1.0-57-amd64"
    assert vm.newest_kernel("6.12", rel) == "6.12.117+deb12-amd64"
    assert vm.newest_kernel("6.12", ["6.1.0-57-amd64"]) is None


def test_vm_run_guest_line_returns_output_and_status_through_the_shared_dir():
    vm = load_vm_run()
    line = vm.guest_script(["sh", "-c", "echo 'a b'; exit 3"], "/tmp/fp-vm-x", Path("/w p"),
                           {"PATH": "/v/bin:/usr/bin", "CI": "true"})
    assert line.startswith("cd '/w p' && export PATH=/v/bin:/usr/bin CI=true && ")
    assert "{ sh -c 'echo '\"'\"'a b'\"'\"'; exit 3' ; } >/tmp/fp-vm-x/stdout " \
           "2>/tmp/fp-vm-x/stderr </dev/null" in line
    assert line.endswith("echo $? >/tmp/fp-vm-x/rc.tmp && mv /tmp/fp-vm-x/rc.tmp /tmp/fp-vm-x/rc")
    # run the line for real on the host: the shared dir gets the output and the status
    out = Path("/tmp") / f"fp-vm-test-{os.getpid()}"
    out.mkdir()
    try:
        line = vm.guest_script(["sh", "-c", "echo out; echo err >&2; exit 3"], str(out),
                               Path.cwd(), {"PATH": os.environ["PATH"]})
        subprocess.run(["sh", "-c", line], check=True)
        assert (out / "stdout").read_text() == "out\n"
        assert (out / "stderr").read_text() == "err\n"
        assert (out / "rc").read_text() == "3\n"
    finally:
        shutil.rmtree(out)
