"""The KvStore seam on etcd v3, spoken through etcd's JSON gateway (/v3/...) with requests.

Why the gateway and requests rather than a client library: the maintained gRPC client
(python-etcd3) saw its last release in 2020 and breaks with protobuf 4; etcd3gw, the
maintained gateway client, drops the watch stream's headers and its cancellation
(a compacted watch then goes silent instead of saying so) and talks to one endpoint.
fastpath needs exactly those three things, and the gateway is part of every etcd since
3.3 (etcd 3.4 serves /v3/ on the client port), so a thin client over a well-kept HTTP
library is the smaller risk.

Behaviour:
- `etcd://host:port[,host:port...]` lists the members; a request goes to the member
  that answered last, and on a connection failure or a timeout to the next one. When no
  member answers, Unavailable names them all.
- Reads are linearizable (etcd's default): a member cut off from quorum times out
  instead of serving old data, which is how an agent learns it must report not-ready.
- A watch is one HTTP stream read by its own thread into a queue; a cancellation with
  compact_revision becomes Compacted, a broken stream Unavailable.
"""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
from typing import Any

import requests

from fastpath.cluster.kv import (
    BadDatastoreUrl,
    Compacted,
    DatastoreError,
    Event,
    KeyValue,
    KvStore,
    Unavailable,
    Watch,
    prefix_end,
)
from fastpath.kernel.netns import Netns, entered

REQUEST_TIMEOUT = 2.0   # seconds; etcd's own request timeout is 5 s plus election time
CONNECT_TIMEOUT = 0.5


def parse_endpoints(url: str) -> list[str]:
    """etcd://h1:p1,h2:p2 -> ["http://h1:p1", "http://h2:p2"]."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    eps = [e.strip() for e in rest.strip("/").split(",") if e.strip()]
    if not eps:
        raise BadDatastoreUrl(f"{url!r} names no etcd member",
                              hint="use etcd://HOST:PORT[,HOST:PORT...]")
    for e in eps:
        host, _, port = e.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadDatastoreUrl(f"etcd member {e!r} in {url!r} is not HOST:PORT")
    return [f"http://{e}" for e in eps]


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _kv(d: dict) -> KeyValue:
    return KeyValue(key=_unb64(d["key"]).decode(), value=_unb64(d.get("value")),
                    create_revision=int(d.get("create_revision", 0)),
                    mod_revision=int(d.get("mod_revision", 0)), lease=int(d.get("lease", 0)))


class EtcdKv(KvStore):
    """`netns`: reach the members from inside that network namespace (the demo's etcd
    listens in the underlay netns; a CLI in the root netns talks to it from there). The
    calling thread enters it for each request only: sockets stay where they were made."""

    def __init__(self, url: str, *, timeout: float = REQUEST_TIMEOUT, netns: str | None = None) -> None:
        self.url = url
        self.endpoints = parse_endpoints(url)
        self.timeout = timeout
        self.netns = netns
        self.session = requests.Session()
        self.current = 0
        self.lock = threading.Lock()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.netns is None:
            return self._post_here(path, body)
        with Netns.open(self.netns) as ns, entered(ns):
            return self._post_here(path, body)

    def _post_here(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        errors = []
        n = len(self.endpoints)
        for i in range(n):
            k = (self.current + i) % n
            ep = self.endpoints[k]
            try:
                r = self.session.post(f"{ep}/v3/{path}", json=body,
                                      timeout=(CONNECT_TIMEOUT, self.timeout))
            except requests.RequestException as e:
                errors.append(f"{ep.removeprefix('http://')}: {_reason(e)}")
                continue
            doc = r.json() if r.content else {}
            if r.status_code != 200:
                msg = doc.get("message") or doc.get("error") or r.text.strip()
                if r.status_code in (503, 504) or "timed out" in str(msg) or "no leader" in str(msg):
                    errors.append(f"{ep.removeprefix('http://')}: {msg}")
                    continue
                raise DatastoreError(str(msg), op=f"etcd {path}")
            self.current = k
            return doc
        raise Unavailable("no etcd member answered (" + "; ".join(errors) + ")", op=f"etcd {path}",
                          hint="is etcd running and does it have quorum?")

    def get(self, key: str) -> KeyValue | None:
        doc = self._post("kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        doc = self._post("kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [_kv(d) for d in doc.get("kvs") or []], int(doc["header"]["revision"])

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self._post("kv/put", body)["header"]["revision"])

    def _txn(self, compare: dict, op: dict) -> bool:
        doc = self._post("kv/txn", {"compare": [compare], "success": [op], "failure": []})
        return bool(doc.get("succeeded"))

    def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        return self._txn({"key": _b64(key), "result": "EQUAL", "target": "CREATE",
                          "create_revision": "0"}, {"request_put": put})

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        return self._txn({"key": _b64(key), "result": "EQUAL", "target": "MOD",
                          "mod_revision": str(mod_revision)}, {"request_put": put})

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        if mod_revision is None:
            return int(self._post("kv/deleterange", {"key": _b64(key)}).get("deleted", 0)) > 0
        return self._txn({"key": _b64(key), "result": "EQUAL", "target": "MOD",
                          "mod_revision": str(mod_revision)},
                         {"request_delete_range": {"key": _b64(key)}})

    def grant(self, ttl: int) -> int:
        doc = self._post("lease/grant", {"TTL": str(ttl)})
        if doc.get("error"):
            raise DatastoreError(doc["error"], op="etcd lease grant")
        return int(doc["ID"])

    def keepalive(self, lease: int) -> int:
        doc = self._post("lease/keepalive", {"ID": str(lease)})
        return int((doc.get("result") or {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        try:
            self._post("kv/lease/revoke", {"ID": str(lease)})
        except DatastoreError as e:
            if "not found" not in str(e):
                raise

    def revision(self) -> int:
        # a linearizable read of no key: costs one round of quorum, returns the header
        doc = self._post("kv/range", {"key": _b64("\0fastpath-health"), "count_only": True})
        return int(doc["header"]["revision"])

    def watch(self, prefix: str, start_revision: int) -> Watch:
        if self.netns is None:
            return _EtcdWatch(self, prefix, start_revision)
        with Netns.open(self.netns) as ns, entered(ns):
            return _EtcdWatch(self, prefix, start_revision)

    def close(self) -> None:
        self.session.close()


class _EtcdWatch(Watch):
    def __init__(self, store: EtcdKv, prefix: str, start: int) -> None:
        self.events: queue.Queue = queue.Queue()
        self.closed = False
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                   "start_revision": str(max(1, start))}}
        errors = []
        self.resp = None
        for i in range(len(store.endpoints)):
            ep = store.endpoints[(store.current + i) % len(store.endpoints)]
            try:
                self.resp = requests.post(f"{ep}/v3/watch", json=body, stream=True,
                                          timeout=(CONNECT_TIMEOUT, None))
                break
            except requests.RequestException as e:
                errors.append(f"{ep.removeprefix('http://')}: {_reason(e)}")
        if self.resp is None:
            raise Unavailable("no etcd member accepted a watch (" + "; ".join(errors) + ")", op="etcd watch")
        self.start = start
        self.thread = threading.Thread(target=self._read, name="fp-etcd-watch", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.resp is not None
        try:
            for line in self.resp.iter_lines():
                if not line:
                    continue
                doc = json.loads(line)
                if "error" in doc:
                    err = doc["error"]
                    raise Unavailable(str(err.get("message", err)), op="etcd watch")
                res = doc.get("result", {})
                if res.get("canceled"):
                    compact = int(res.get("compact_revision", 0))
                    if compact:
                        raise Compacted(self.start, compact)
                    raise Unavailable(res.get("cancel_reason", "watch canceled"), op="etcd watch")
                evs = [Event(kind="delete" if e.get("type") == "DELETE" else "put",
                             key=_unb64(e["kv"]["key"]).decode(),
                             value=None if e.get("type") == "DELETE" else _unb64(e["kv"].get("value")),
                             revision=int(e["kv"]["mod_revision"]))
                       for e in res.get("events") or []]
                if evs:
                    self.events.put(evs)
            raise Unavailable("the watch stream ended", op="etcd watch")
        except (Compacted, Unavailable) as e:
            self.events.put(e)
        except (requests.RequestException, ValueError, OSError, AttributeError) as e:
            self.events.put(Unavailable(f"the watch stream broke: {_reason(e)}", op="etcd watch"))

    def next(self, timeout: float) -> list[Event]:
        try:
            got = self.events.get(timeout=timeout)
        except queue.Empty:
            return []
        if isinstance(got, Exception):
            self.events.put(got)  # stays broken: every later call says so too
            raise got
        return got

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # a blocked read wakes only when its socket is shut down (closing the response
        # from another thread does not interrupt recv)
        try:
            raw = self.resp.raw._fp.fp.raw._sock  # type: ignore[union-attr]
            raw.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self.resp.close()  # type: ignore[union-attr]
        self.thread.join(timeout=2)


def _reason(e: BaseException) -> str:
    text = str(e)
    for short in ("Connection refused", "timed out", "Connection reset", "No route to host"):
        if short in text:
            return short.lower()
    return text.splitlines()[0][:120] if text else type(e).__name__
