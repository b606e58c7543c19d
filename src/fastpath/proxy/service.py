"""One service as a worker sees it: its listener, its balancer, its connection count and
share of maxconn, its health-check timer, and the counters `proxy status` shows."""

from __future__ import annotations

import socket

from fastpath.proxy.balance import Balancer
from fastpath.proxy.config import Service


class ServiceState:
    def __init__(self, svc: Service, listener: socket.socket, workers: int) -> None:
        self.svc = svc
        self.listener = listener
        self.family = int(listener.family)  # for accepted sockets, looked up once
        self.balancer = Balancer(svc)
        self.conns = 0
        self.limit = max(1, -(-svc.maxconn // workers))  # maxconn is split over workers
        self.paused = False
        self.accepted = 0
        self.refused = 0     # connections closed because no backend could take them
        self.next_check = 0.0
