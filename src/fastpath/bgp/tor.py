"""A top-of-rack router for the demo: FRR (zebra + bgpd) in the underlay netns, peering
with every node over eBGP, as a rack's switch would.

Why FRR and not a second BIRD: the nodes must interoperate with the routers operators
already run, and a ToR is one; FRR is what Debian ships for that role.

The config (render, pure) takes every node of the underlay subnet as a dynamic neighbor
(`bgp listen range`), so a node added later needs no change on the router: FRR accepts
the session BIRD opens. Timers match the nodes' (keepalive 1 s, hold 3 s), so a dead
node's routes leave the router within the hold time. zebra installs what bgpd learns in
the underlay netns's kernel, with forwarding on, so node-to-node pod traffic can go
through the router.

Files live in `/run/fp-[<tag>-]tor/`: frr.conf, zebra and bgpd pid files and
sockets, their logs; `vtysh --vty_socket DIR` talks to them (`show`).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from fastpath import naming
from fastpath.errors import FastpathError, MissingDependency
from fastpath.kernel import proc
from fastpath.kernel.libc import setns_raw

FRR_DIR = Path("/usr/lib/frr")
DEFAULT_ASN = 65000
START_TIMEOUT = 15.0


def render(asn: int, router_id: str, listen_range: str, hold: int = 3,
           keepalive: int = 1, password: str | None = None) -> str:
    """The router's config: every node of `listen_range` may peer, over eBGP, from any
    ASN but the router's own (`remote-as external`): nodes with an ASN each, as RFC 7938
    lays out a data centre, or sharing one."""
    out = [
        "frr defaults datacenter",
        f"hostname {naming.name('tor')}",
        "log file {log}",
        "!",
        f"router bgp {asn}",
        f" bgp router-id {router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
        " neighbor NODES peer-group",
        " neighbor NODES remote-as external",
        f" neighbor NODES timers {keepalive} {hold}",
        " neighbor NODES timers connect 1",
    ]
    if password:
        out.append(f" neighbor NODES password {password}")
    out += [
        f" bgp listen range {listen_range} peer-group NODES",
        " !",
        " address-family ipv4 unicast",
        "  neighbor NODES activate",
        " exit-address-family",
        "exit",
        "!",
    ]
    return "\n".join(out) + "\n"


def tor_dir() -> Path:
    """FRR drops to its own user (frr) before it reads its config and writes its pid files
    and sockets, so its directory must be one that user can reach: not the state dir
    (0700, root's), but /run/fp-[<tag>-]tor, owned by frr."""
    return Path("/run") / naming.name("tor")


def _binaries() -> tuple[str, str]:
    z, b = FRR_DIR / "zebra", FRR_DIR / "bgpd"
    if not (os.access(z, os.X_OK) and os.access(b, os.X_OK)):
        raise MissingDependency("FRR is not installed", op="start the ToR router",
                                hint="apt-get install frr")
    return str(z), str(b)


def _enter(fd: int) -> None:
    e = setns_raw(fd)
    if e:
        os.write(2, f"setns: {os.strerror(e)}\n".encode())
        os._exit(126)


def start(netns_name: str, text: str) -> dict[str, int]:
    """zebra, then bgpd, in `netns_name` (daemonized; the pids are recorded)."""
    zebra, bgpd = _binaries()
    d = tor_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o750)
    try:
        frr = pwd.getpwnam("frr")
    except KeyError:
        raise MissingDependency("FRR's user 'frr' does not exist", op="start the ToR router",
                                hint="reinstall frr") from None
    conf = d / "frr.conf"
    conf.write_text(text.replace("{log}", str(d / "frr.log")))
    for f in (d, conf):
        os.chown(f, frr.pw_uid, frr.pw_gid)
    zsock = d / "zserv.api"
    pids: dict[str, int] = {}
    fd = os.open(f"/run/netns/{netns_name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for name, argv in (("zebra", [zebra, "-d", "-f", str(conf), "-i", str(d / "zebra.pid"),
                                      "-z", str(zsock), "--vty_socket", str(d), "-A", "127.0.0.1",
                                      "-P", "0"]),
                           ("bgpd", [bgpd, "-d", "-f", str(conf), "-i", str(d / "bgpd.pid"),
                                     "-z", str(zsock), "--vty_socket", str(d), "-A", "127.0.0.1",
                                     "-P", "0"])):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT,
                               preexec_fn=lambda: _enter(fd), pass_fds=(fd,))
            if p.returncode != 0:
                stop()
                raise FastpathError(f"FRR {name} did not start: "
                                    f"{(p.stderr or p.stdout).strip().splitlines()[-1:]}",
                                    op="start the ToR router")
            pids[name] = _wait_pid(d / f"{name}.pid")
    finally:
        os.close(fd)
    return pids


def _wait_pid(path: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            pid = int(path.read_text().strip())
            if proc.alive(pid):
                return pid
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    raise FastpathError(f"FRR wrote no pid file {path}", op="start the ToR router")


def running() -> dict[str, int]:
    out = {}
    for name in ("zebra", "bgpd"):
        try:
            pid = int((tor_dir() / f"{name}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            continue
        if proc.alive(pid):
            out[name] = pid
    return out


def stop() -> list[int]:
    """SIGTERM bgpd then zebra (bgpd's Cease closes the sessions), SIGKILL what lingers."""
    pids = running()
    for name in ("bgpd", "zebra"):
        if name in pids:
            try:
                os.kill(pids[name], signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 3
    while any(proc.alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    for p in pids.values():
        if proc.alive(p):
            os.kill(p, signal.SIGKILL)
    shutil.rmtree(tor_dir(), ignore_errors=True)
    return list(pids.values())


def show(command: str) -> dict:
    """`vtysh -c 'COMMAND json'` against this instance's router, parsed."""
    p = subprocess.run(["vtysh", "--vty_socket", str(tor_dir()), "-c", command + " json"],
                       capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        raise FastpathError(f"vtysh {command!r}: {(p.stderr or p.stdout).strip()}", op="ask the ToR router")
    return json.loads(p.stdout or "{}")


def established_peers() -> list[str]:
    summ = show("show bgp ipv4 unicast summary").get("peers", {})
    return sorted(a for a, p in summ.items() if p.get("state") == "Established")


def routes() -> dict[str, list[str]]:
    """prefix -> next hops of the best paths, from bgpd's table."""
    out: dict[str, list[str]] = {}
    for prefix, paths in show("show bgp ipv4 unicast").get("routes", {}).items():
        best = [p for p in paths if p.get("bestpath")] or paths
        out[prefix] = sorted({nh.get("ip", "") for p in best for nh in p.get("nexthops", [])})
    return out
