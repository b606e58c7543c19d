"""/healthz, /readyz and /metrics over HTTP, from one thread of the agent.

http.server is enough for three read-only paths polled by a kubelet-style prober and
Prometheus; prometheus_client renders the metrics. /healthz answers 200 while the agent
loop is alive (it stamps a heartbeat); /readyz answers 200 only when every readiness
condition holds and lists the failing ones otherwise, one per line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fastpath.agent.metrics import Metrics
from fastpath.errors import KernelError

LIVENESS_STALE = 30.0  # seconds without a loop heartbeat before /healthz fails


class HealthServer:
    def __init__(self, addr: tuple[str, int], metrics: Metrics,
                 readiness: Callable[[], list[str]], heartbeat: Callable[[], float]) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.heartbeat = heartbeat
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.serve(self)

            def log_message(self, *_a) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer(addr, Handler)
        except OSError as e:
            raise KernelError.from_oserror(f"listen for health checks on {addr[0]}:{addr[1]}", e) from e
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fp-agent-health",
                                       daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        if path == "/metrics":
            body, ctype, code = generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST, 200
        elif path == "/healthz":
            age = time.monotonic() - self.heartbeat()
            ok = age < LIVENESS_STALE
            body = (b"ok\n" if ok else f"agent loop stalled for {age:.0f}s\n".encode())
            ctype, code = "text/plain", 200 if ok else 503
        elif path == "/readyz":
            problems = self.readiness()
            body = ("ready\n" if not problems else "".join(f"{p}\n" for p in problems)).encode()
            ctype, code = "text/plain", 200 if not problems else 503
        else:
            body, ctype, code = b"not found\n", "text/plain", 404
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
