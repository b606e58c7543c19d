"""A demo backend for pods: answers every TCP connection with one line naming itself
(`<name> <ip>`), after reading what the client sent first, then closes. Run in a pod's
netns by `fastpath proxy demo`: python -m fastpath.proxy.demo_backend NAME IP PORT."""

from __future__ import annotations

import socket
import sys
import threading


def serve(name: str, ip: str, port: int) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, port))
    ls.listen(128)

    def answer(c: socket.socket) -> None:
        with c:
            c.settimeout(5)
            try:
                c.recv(4096)
                c.sendall(f"{name} {ip}\n".encode())
            except OSError:
                pass

    while True:
        c, _ = ls.accept()
        threading.Thread(target=answer, args=(c,), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]))
