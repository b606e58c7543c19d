"""Suite-wide fixtures.

- Tests marked `root` need root and real kernel objects; without root they are skipped.
- Every test gets its own state dir (FASTPATH_STATE_DIR) and its own instance tag
  (FASTPATH_INSTANCE), so that whatever it creates is named `fp-<tag>-...` and cannot
  collide with another test, a demo cluster on the machine, or a parallel run.
- After each root test, nothing of its instance may remain: no netns, no cgroup, no BPF
  pin directory. A leak fails the test that made it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastpath.kernel import cgroup2

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config, items):
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root (real netns, BPF, cgroups)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("FASTPATH_STATE_DIR", str(d))
    return d


@pytest.fixture(autouse=True)
def instance(monkeypatch, request) -> str:
    tag = "t" + secrets.token_hex(3)
    monkeypatch.setenv("FASTPATH_INSTANCE", tag)
    yield tag
    if IS_ROOT and "root" in request.keywords:
        left = residue(tag)
        assert not left, f"test left fastpath objects behind: {left}"


def residue(tag: str) -> list[str]:
    """Everything named fp-<tag>-... still on the machine."""
    scope = f"fp-{tag}-"
    left = []
    if os.path.isdir("/run/netns"):
        left += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(scope)]
    cg = cgroup2.mount_point()
    if cg and os.path.isdir(cg):
        left += [f"cgroup {n}" for n in os.listdir(cg) if n.startswith(scope)]
    if os.path.isdir(f"/sys/fs/bpf/fastpath/{tag}"):
        left.append(f"bpf pins /sys/fs/bpf/fastpath/{tag}")
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    left += [f"link {line.split(':')[1].strip()}" for line in out.splitlines()
             if line.split(":")[1].strip().startswith(scope)]
    return left


_start_cost: float | None = None


def start_cost() -> float:
    """Seconds a `python -m fastpath` process takes to start on this machine: the median of
    three runs, measured once. About 0.3 s on the host and several seconds in a TCG guest
    (50-70x slower), so deadlines that wait for processes scale with it (`patience`)."""
    global _start_cost
    if _start_cost is None:
        runs = []
        for _ in range(3):
            t = time.monotonic()
            subprocess.run([sys.executable, "-m", "fastpath", "--version"], check=True,
                           capture_output=True)
            runs.append(time.monotonic() - t)
        _start_cost = sorted(runs)[1]
    return _start_cost


def patience(seconds: float, starts: int = 1) -> float:
    """A deadline: `seconds` of work as on the host, plus `starts` process starts at this
    machine's measured cost. Never a bare figure that only a fast machine meets."""
    return seconds + starts * start_cost()


def require(ok: bool, why: str) -> None:
    """Skip a test whose tool or kernel feature is missing on a developer's machine; in CI
    (CI=true), where the set-up installs everything, a missing one is a failure: a suite
    that passes by skipping proves nothing."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI installs it: a missing one is a failure, not a skip)")
    pytest.skip(why)


def run_fastpath(*argv: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run the `fastpath` command as a user would, in this test's state dir and instance."""
    p = subprocess.run([sys.executable, "-m", "fastpath", *argv], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"fastpath {' '.join(argv)} exited {p.returncode}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


@pytest.fixture
def fastpath():
    return run_fastpath
