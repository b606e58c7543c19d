"""`fastpath check`: every pod reaches every other pod by ICMP echo and by TCP, and each
TCP receiver reports the source address it saw, which must be the sender's pod IP (no
NAT on the way).

How: a socket stays in the netns it was created in, so one process serves and probes for
every pod at once. For each pod a listening TCP socket is made inside the pod's netns
(bound to the pod IP) and served by one thread: on accept it writes back the peer
address it saw. Each probe makes its client socket (TCP, or raw ICMP) inside the source
pod's netns and talks to the destination pod IP through the real path: veth, node
routing, FORWARD, underlay bridge. Probes run in parallel (a bounded pool), each with a
timeout, so a broken cluster costs one timeout, not one per pair.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rich.console import Group
from rich.table import Table

from fastpath.errors import FastpathError
from fastpath.kernel.netns import Netns

WORKERS = 128  # threads mostly wait on the network; sockets per probe are cheap
ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    hdr = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(hdr + payload), ident, seq) + payload


def parse_echo_reply(packet: bytes) -> tuple[str, int, int] | None:
    """(source, ident, seq) of an IPv4 packet holding an ICMP echo reply, else None."""
    if len(packet) < 28:
        return None
    ihl = (packet[0] & 0x0F) * 4
    src = socket.inet_ntoa(packet[12:16])
    typ, _code, _ck, ident, seq = struct.unpack("!BBHHH", packet[ihl:ihl + 8])
    if typ != ICMP_ECHO_REPLY:
        return None
    return src, ident, seq


class Servers:
    """One listening socket per pod (in its netns) and the thread that answers them."""

    def __init__(self, pods, nss: dict[str, Netns]) -> None:
        self.sel = selectors.DefaultSelector()
        self.ports: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.socks: list[socket.socket] = []
        for p in pods:
            try:
                s = nss[p.name].socket(socket.AF_INET, socket.SOCK_STREAM)
                self.socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((p.ip, 0))
                s.listen(128)
                s.setblocking(False)
                self.ports[p.name] = s.getsockname()[1]
                self.sel.register(s, selectors.EVENT_READ)
            except (OSError, FastpathError) as e:
                self.errors[p.name] = f"server in pod {p.name}: {e}"
        self._stop = os.pipe()
        self.sel.register(self._stop[0], selectors.EVENT_READ)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            for key, _ in self.sel.select():
                if key.fileobj == self._stop[0]:
                    return
                ls: socket.socket = key.fileobj  # type: ignore[assignment]  # the listener
                try:
                    conn, peer = ls.accept()
                except OSError:
                    continue
                with conn:
                    conn.setblocking(True)
                    conn.settimeout(1)
                    try:
                        conn.sendall(f"{peer[0]}\n".encode())
                    except OSError:
                        pass

    def close(self) -> None:
        os.write(self._stop[1], b"x")
        self.thread.join(5)
        for s in self.socks:
            s.close()
        os.close(self._stop[0])
        os.close(self._stop[1])
        self.sel.close()


def probe_tcp(src_ns: Netns, src_ip: str, dst_ip: str, port: int, timeout: float) -> dict:
    t0 = time.monotonic()
    try:
        with src_ns.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((dst_ip, port))
            data = b""
            while not data.endswith(b"\n") and len(data) < 64:
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
        seen = data.decode(errors="replace").strip()
        ok = seen == src_ip
        return {"ok": ok, "seen_source": seen, "ms": round((time.monotonic() - t0) * 1000, 2),
                "error": None if ok else f"receiver saw source {seen or 'nothing'}, not {src_ip}"}
    except (OSError, FastpathError) as e:
        return {"ok": False, "seen_source": None, "ms": None,
                "error": "timed out" if isinstance(e, socket.timeout) else str(e)}


_ident_lock = threading.Lock()
_ident = [os.getpid() & 0xFFFF]


def _next_ident() -> int:
    with _ident_lock:
        _ident[0] = (_ident[0] + 1) & 0xFFFF
        return _ident[0]


def probe_icmp(src_ns: Netns, dst_ip: str, timeout: float) -> dict:
    ident = _next_ident()
    t0 = time.monotonic()
    try:
        with src_ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            s.sendto(echo_request(ident, 1, b"fastpath-check"), (dst_ip, 0))
            deadline = t0 + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return {"ok": False, "ms": None, "error": "no echo reply (timed out)"}
                s.settimeout(left)
                try:
                    pkt = s.recv(2048)
                except TimeoutError:
                    continue
                got = parse_echo_reply(pkt)
                if got and got[0] == dst_ip and got[1] == ident:
                    return {"ok": True, "ms": round((time.monotonic() - t0) * 1000, 2), "error": None}
    except (OSError, FastpathError) as e:
        return {"ok": False, "ms": None, "error": str(e)}


def run(cluster, timeout: float = 1.0) -> dict:
    pods = [p for p in cluster.pods if p.ip and p.phase == "ready"]
    nss: dict[str, Netns] = {}
    errors: list[str] = []
    for p in pods:
        try:
            nss[p.name] = Netns.open(p.netns)
        except FastpathError as e:
            errors.append(f"pod {p.name}: {e}")
    live = [p for p in pods if p.name in nss]
    servers = Servers(live, nss)
    errors += servers.errors.values()
    results = []
    t0 = time.monotonic()
    try:
        pairs = [(a, b) for a in pods for b in pods if a.name != b.name]

        def probe(task):
            (a, b), kind = task
            if a.name not in nss or b.name not in servers.ports:
                return {"ok": False, "seen_source": None, "ms": None,
                        "error": f"pod {a.name if a.name not in nss else b.name} unavailable"}
            if kind == "icmp":
                return probe_icmp(nss[a.name], b.ip, timeout)
            return probe_tcp(nss[a.name], a.ip, b.ip, servers.ports[b.name], timeout)
        tasks = [(pair, kind) for pair in pairs for kind in ("icmp", "tcp")]
        # every probe at once (bounded): a broken cluster costs about one timeout in all
        with ThreadPoolExecutor(max_workers=min(WORKERS, max(1, len(tasks)))) as ex:
            got = list(ex.map(probe, tasks))
        for i, (a, b) in enumerate(pairs):
            results.append({"src": a.name, "dst": b.name, "src_ip": a.ip, "dst_ip": b.ip,
                            "same_node": a.node == b.node, "icmp": got[2 * i], "tcp": got[2 * i + 1]})
    finally:
        servers.close()
        for n in nss.values():
            n.close()
    ok = (not errors and all(r["icmp"]["ok"] and r["tcp"]["ok"] for r in results)
          and len(pods) == len(cluster.pods))
    if len(pods) != len(cluster.pods):
        errors.append("pods not ready: " + ", ".join(p.name for p in cluster.pods if p not in pods))
    return {"ok": ok, "pods": [{"name": p.name, "node": p.node, "ip": p.ip} for p in pods],
            "pairs": len(results),
            "failed": sum(1 for r in results if not (r["icmp"]["ok"] and r["tcp"]["ok"])),
            "seconds": round(time.monotonic() - t0, 3), "errors": errors, "results": results}


def render(d: dict):
    names = [p["name"] for p in d["pods"]]
    by = {(r["src"], r["dst"]): r for r in d["results"]}
    t = Table(title="fastpath check: ICMP echo and TCP (receiver saw the sender's pod IP) per pair",
              title_justify="left", header_style="bold")
    t.add_column("src \\ dst")
    for n in names:
        t.add_column(n)
    for a in names:
        row = []
        for b in names:
            if a == b:
                row.append("-")
                continue
            r = by[(a, b)]
            bad = [k.upper() for k in ("icmp", "tcp") if not r[k]["ok"]]
            row.append("[green]ok[/]" if not bad else f"[red]{'+'.join(bad)} FAIL[/]")
        t.add_row(a, *row)
    parts: list = [t]
    fails = [r for r in d["results"] if not (r["icmp"]["ok"] and r["tcp"]["ok"])]
    for r in fails:
        why = r["icmp"]["error"] if not r["icmp"]["ok"] else r["tcp"]["error"]
        parts.append(f"[red]FAIL[/] {r['src']} ({r['src_ip']}) -> {r['dst']} ({r['dst_ip']}): {why}")
    for e in d["errors"]:
        parts.append(f"[red]ERROR[/] {e}")
    verdict = ("[green]all pods reach each other[/]" if d["ok"]
               else f"[red]{d['failed']} of {d['pairs']} pairs failed[/]")
    parts.append(f"{verdict} ({d['pairs']} pairs, {d['seconds']} s)")
    return Group(*parts)
