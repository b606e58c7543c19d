"""Keep one command running, as systemd's `Restart=always` or a DaemonSet keep a node agent:
`python -m fastpath.agent.supervise --pidfile FILE -- ARGV...`.

The demo's agents run under it (one per node netns), so an agent that dies (kill -9, a
crash) comes back with its own state, its own netns and its own command line, and, since
an agent's restart is quiet (it renews its lease and adopts its BIRD and proxy), nothing
else on the node notices.

- The child is restarted RESTART_DELAY after it exits, doubling up to RESTART_MAX while it
  keeps dying within HEALTHY_AFTER of its start (systemd's RestartSec, with the back-off
  that DaemonSets get from kubelet's CrashLoopBackOff).
- SIGTERM or SIGINT: passed on to the child, which gets STOP_GRACE to exit before SIGKILL;
  then the supervisor exits and restarts nothing.
- The pid file holds the supervisor's pid while it runs; `fastpath down` stops the
  supervisor before the agent, so nothing restarts what down removes.

Standard library only, and no fastpath import: it must keep running whatever the package
it supervises does.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

RESTART_DELAY = 1.0
RESTART_MAX = 10.0
HEALTHY_AFTER = 10.0
STOP_GRACE = 5.0


def supervise(argv: list[str], pidfile: str | None) -> int:
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if pidfile:
        tmp = f"{pidfile}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, pidfile)
    delay = RESTART_DELAY
    try:
        while not stopping:
            started = time.monotonic()
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            if stopping:
                # the signal came between the loop's check and the start: it found no child
                # to pass itself on to, so this one is told now
                child.send_signal(signal.SIGTERM)
            while True:
                try:
                    code = child.wait()
                    break
                except InterruptedError:
                    continue
            if stopping:
                break
            lived = time.monotonic() - started
            delay = RESTART_DELAY if lived >= HEALTHY_AFTER else min(delay * 2, RESTART_MAX)
            print(f"fastpath supervise: {argv[0]} (pid {child.pid}) exited with status {code} "
                  f"after {lived:.1f}s; starting it again in {delay:g}s", file=sys.stderr, flush=True)
            deadline = time.monotonic() + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        if child is not None and child.poll() is None:
            try:
                child.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if pidfile:
            try:
                with open(pidfile) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(pidfile)
            except OSError:
                pass
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m fastpath.agent.supervise")
    p.add_argument("--pidfile", default=None)
    p.add_argument("argv", nargs=argparse.REMAINDER)
    a = p.parse_args()
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if not argv:
        p.error("no command given")
    return supervise(argv, a.pidfile)


if __name__ == "__main__":
    sys.exit(main())
