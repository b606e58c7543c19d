"""The supervisor the demo runs each agent under: a child that exits is started again, with
a growing delay while it keeps dying; SIGTERM reaches the child and nothing restarts after
it. Real processes, no root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import patience

SUP = [sys.executable, "-m", "fastpath.agent.supervise"]


def test_a_child_that_exits_is_started_again_with_back_off(tmp_path):
    log, pidfile = tmp_path / "starts", tmp_path / "sup.pid"
    child = f"import time; open({str(log)!r}, 'a').write(f'{{time.monotonic()}}\\n')"
    p = subprocess.Popen([*SUP, "--pidfile", str(pidfile), "--", sys.executable, "-c", child],
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + patience(12, starts=4)
        while (not log.exists() or len(log.read_text().split()) < 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        starts = [float(x) for x in log.read_text().split()]
        assert len(starts) >= 3, starts
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert gaps[1] > gaps[0] * 1.5, f"no back-off while it keeps dying: {gaps}"
        assert int(pidfile.read_text()) == p.pid
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=patience(10))
    assert p.returncode == 0 and not pidfile.exists()
    assert "exited with status 0" in err and "starting it again" in err


def test_sigterm_reaches_the_child_and_nothing_restarts(tmp_path):
    got = tmp_path / "got"
    child = (f"import signal, sys, time\n"
             f"signal.signal(signal.SIGTERM, lambda *a: (open({str(got)!r}, 'w').write('TERM'), "
             f"sys.exit(0)))\n"
             f"open({str(got)!r}, 'w').write('up')\n"
             f"time.sleep(60)\n")
    p = subprocess.Popen([*SUP, "--", sys.executable, "-c", child], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + patience(10, starts=2)
    while not (got.exists() and got.read_text() == "up") and time.monotonic() < deadline:
        time.sleep(0.05)
    kids = [int(x) for x in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()]
    assert len(kids) == 1
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=patience(10))
    assert p.returncode == 0 and got.read_text() == "TERM"
    assert "starting it again" not in err
    assert not os.path.exists(f"/proc/{kids[0]}") or open(f"/proc/{kids[0]}/stat").read().split()[2] == "Z"
