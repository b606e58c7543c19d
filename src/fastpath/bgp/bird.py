"""One BIRD daemon per node: start it inside the node's network namespace, stop it, check
it, reconfigure it in place. The syscall/process edge of fastpath.bgp.

Facts this relies on (BIRD 2.0.12, sysdep/unix/main.c):
- `bird -c CONF -s SOCK -P PIDFILE` parses CONF, opens the control socket, then
  daemonizes; the parent exits 0 only after the config parsed, and the child writes
  PIDFILE. A config error makes the parent exit non-zero with BIRD's message on stderr.
- `bird -p -c CONF` parses CONF and exits: the check we run before touching anything.
- `configure` on the control socket re-reads the config file BIRD was started with and
  applies the difference: protocols whose config did not change keep running, a changed
  filter only refeeds routes (no session reset). A config BIRD rejects leaves the
  running one in place and BIRD answers with the file:line and reason.
- BIRD stays in the network namespace it was started in: we enter the node's netns with
  setns(2) in the child before exec (fastpath.kernel.libc: os.setns arrived in 3.12).

Files of a node live in `<state dir>/bgp/<scope>/<node>.{conf,ctl,pid,log}`; a Unix
socket path must fit sun_path (108 bytes with the NUL), so a control socket whose path
would not goes to a short stand-in (fastpath.kernel.files.socket_path).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fastpath import naming, state
from fastpath.bgp.control import BirdControl
from fastpath.errors import ConfigError, FastpathError, KernelError, MissingDependency
from fastpath.kernel import proc
from fastpath.kernel.files import atomic_write, socket_path
from fastpath.kernel.libc import setns_raw

START_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0


class BirdRejected(ConfigError):
    """BIRD refused a configuration; the message is BIRD's own (file:line: reason)."""


def bird_binary() -> str:
    """The bird executable: FASTPATH_BIRD if set, else `bird` on PATH or in /usr/sbin."""
    override = os.environ.get("FASTPATH_BIRD")
    if override:
        path = override if os.access(override, os.X_OK) else None
    else:
        path = shutil.which("bird") or ("/usr/sbin/bird" if os.access("/usr/sbin/bird", os.X_OK) else None)
    if not path:
        raise MissingDependency("bird is not installed: the BGP routing mode runs BIRD 2 on "
                                "every node", op="find bird",
                                hint="apt-get install bird2, or use --routing static")
    return path


def bgp_dir() -> Path:
    """This instance's directory of BIRD files."""
    return state.state_dir() / "bgp" / naming.scope().rstrip("-")


@dataclass(frozen=True)
class BirdPaths:
    conf: Path
    ctl: Path
    pid: Path
    log: Path

    @classmethod
    def of(cls, node: str) -> "BirdPaths":
        d = bgp_dir()
        return cls(d / f"{node}.conf", socket_path(d / f"{node}.ctl"), d / f"{node}.pid",
                   d / f"{node}.log")

    @classmethod
    def under(cls, state_dir: Path, node: str) -> "BirdPaths":
        """The files of a node whose agent keeps its state in `state_dir` (a demo node's)."""
        d = state_dir / "bgp" / naming.scope().rstrip("-")
        return cls(d / f"{node}.conf", socket_path(d / f"{node}.ctl"), d / f"{node}.pid",
                   d / f"{node}.log")


def _enter_netns(fd: int) -> None:
    """In the forked child: join the node's network namespace (setns(2))."""
    e = setns_raw(fd)
    if e:
        os.write(2, f"setns: {os.strerror(e)}\n".encode())
        os._exit(126)


def netns_path(netns: str) -> str:
    return f"/run/netns/{netns}"


def check_config(text: str, paths: BirdPaths) -> None:
    """Parse `text` with BIRD itself (`bird -p`), without any running BIRD seeing it.
    Raises BirdRejected with BIRD's message."""
    paths.conf.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cand = paths.conf.with_suffix(f".conf.check.{os.getpid()}")
    cand.write_text(text)
    try:
        p = subprocess.run([bird_binary(), "-p", "-c", str(cand)], capture_output=True,
                           text=True, timeout=10)
    finally:
        cand.unlink(missing_ok=True)
    if p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}")
        msg = msg.replace(str(cand), str(paths.conf))
        raise BirdRejected(msg.splitlines()[-1], where=f"bird config {paths.conf.name}")


def read_pid(paths: BirdPaths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_our_bird(pid: int, paths: BirdPaths) -> bool:
    """Whether pid is a live BIRD serving this node's control socket (pids are reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if not proc.alive(pid):  # BIRD daemonizes: a zombie of it may linger unreaped here
        return False
    return bool(argv) and os.path.basename(argv[0]) == b"bird" and os.fsencode(str(paths.ctl)) in argv


def running_here(net_inode: int | None = None) -> list[tuple[int, list[str]]]:
    """Live BIRD processes in the caller's network namespace (or the one whose inode is
    `net_inode`), with their argv: what a node agent started without its state dir finds
    its node's BIRD by (a second BIRD in one netns would fight the first for port 179)."""
    try:
        me = net_inode or os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return []
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.stat(f"/proc/{d}/ns/net").st_ino != me:
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue   # gone meanwhile, or not ours to read
        if argv and os.path.basename(argv[0]) == "bird" and proc.alive(int(d)):
            out.append((int(d), argv))
    return out


def state_of(argv: list[str]) -> tuple[Path, str, str] | None:
    """(state dir, instance tag, node) of a BIRD that fastpath started, from its pid file
    `<state dir>/bgp/<scope>/<node>.pid`; None for any other BIRD."""
    try:
        pid = Path(argv[argv.index("-P") + 1])
    except (ValueError, IndexError):
        return None
    scope_dir = pid.parent.name
    if pid.suffix != ".pid" or pid.parent.parent.name != "bgp" or not scope_dir.startswith("fp"):
        return None
    tag = scope_dir[len("fp-"):] if scope_dir.startswith("fp-") else ""
    if scope_dir not in ("fp", f"fp-{tag}"):
        return None
    return pid.parent.parent.parent, tag, pid.stem


def running_pid(node: str) -> int | None:
    """The pid of the node's BIRD if it is running, else None."""
    return running_pid_at(BirdPaths.of(node))


def running_pid_at(paths: BirdPaths) -> int | None:
    """The pid of the BIRD that `paths` belong to if it is running, else None."""
    pid = read_pid(paths)
    return pid if pid and _is_our_bird(pid, paths) else None


def start(node: str, netns: str | None, text: str) -> int:
    """Write the node's config and start its BIRD in `netns` (None: the caller's own, as
    a node agent does on its machine); returns the pid.

    The config is checked (bird -p) before it is written; if the node's BIRD already
    runs, this is an error (use reconfigure)."""
    paths = BirdPaths.of(node)
    binary = bird_binary()
    if running_pid(node):
        raise FastpathError(f"BIRD of node {node!r} is already running", op=f"start bird {node}")
    check_config(text, paths)
    paths.conf.write_text(text)
    for stale in (paths.ctl, paths.pid):
        stale.unlink(missing_ok=True)
    argv = [binary, "-c", str(paths.conf), "-s", str(paths.ctl), "-P", str(paths.pid)]
    if netns is None:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT)
    else:
        try:
            fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise KernelError.from_oserror(f"open netns {netns} for BIRD of node {node}", e) from e
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT,
                               preexec_fn=lambda: _enter_netns(fd), pass_fds=(fd,))
        finally:
            os.close(fd)
    if p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip() or f"exit {p.returncode}").splitlines()[-1]
        raise BirdRejected(msg, where=f"start bird of node {node}")
    # The daemon writes its pid file just after the parent exits.
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = running_pid(node)
        if pid and paths.ctl.exists():
            return pid
        time.sleep(0.01)
    raise FastpathError(f"BIRD of node {node!r} did not come up within {START_TIMEOUT}s "
                        f"(see {paths.log})", op=f"start bird {node}")


def reconfigure(node: str, text: str) -> str:
    """Apply `text` to the node's running BIRD in place; returns BIRD's answer
    ("Reconfigured", "Nothing to do", ...).

    Order: BIRD parses the candidate (`bird -p`); only then does it replace the config
    file and is BIRD told to `configure`. If BIRD still refuses, the previous file is put
    back, BIRD keeps running the previous config, and BirdRejected carries its message."""

    paths = BirdPaths.of(node)
    if not running_pid(node):
        raise FastpathError(f"BIRD of node {node!r} is not running", op=f"reconfigure bird {node}")
    check_config(text, paths)
    prev = paths.conf.read_text() if paths.conf.exists() else None
    if prev == text:
        return "Nothing to do"
    atomic_write(paths.conf, text)
    with BirdControl(str(paths.ctl)) as ctl:
        reply = ctl.command("configure")
    if not reply.ok:
        if prev is not None:
            atomic_write(paths.conf, prev)
        raise BirdRejected(reply.message(), where=f"reconfigure bird of node {node}")
    return reply.message()


def _wait_gone(pid: int, paths: BirdPaths, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_our_bird(pid, paths):
            return True
        time.sleep(0.01)
    return not _is_our_bird(pid, paths)


def signal_bird(node: str, sig: int) -> int | None:
    """Send `sig` to the node's BIRD (SIGKILL is the fault injection of the tests)."""
    pid = running_pid(node)
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return None
    return pid


def stop(node: str, remove_files: bool = True) -> bool:
    """Stop the node's BIRD (SIGTERM: it closes its sessions with a Cease notification and
    withdraws its kernel routes; SIGKILL after STOP_TIMEOUT). Returns whether one ran."""
    paths = BirdPaths.of(node)
    pid = running_pid(node)
    if pid:
        kill_pid(pid, paths)
    if remove_files:
        for f in (paths.ctl, paths.pid, paths.conf, paths.log):
            f.unlink(missing_ok=True)
    else:
        paths.ctl.unlink(missing_ok=True)
        paths.pid.unlink(missing_ok=True)
    return pid is not None


def kill_pid(pid: int, paths: BirdPaths | None) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns once the process is gone."""
    check = (lambda: _is_our_bird(pid, paths)) if paths else (lambda: proc.alive(pid))
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise KernelError.from_oserror(f"kill bird {pid}", e) from e
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not check():
                return
            time.sleep(0.01)
