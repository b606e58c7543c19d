"""The datastore seam: a revisioned key-value store with leases, modelled on etcd v3.

Why etcd's model: it is the smallest one that gives a cluster what it needs, and the
embedded backend can give it too:
- every change gets a revision, one counter for the whole store, so a reader can say
  "everything after revision R" and a watch resumes exactly where it stopped;
- a key may hang on a lease: when its holder stops renewing, the key goes, and a
  delete event says so (node liveness);
- `create` (only if absent) and `replace` (only if unchanged since mod_revision) are the
  compare-and-swap that keeps two nodes from taking one block or one name;
- history is finite: a watch that starts before the oldest kept revision gets
  `Compacted`, and the reader relists (fastpath.cluster.mirror does that for everyone).

Values are bytes (the typed layer stores JSON); keys are text under one prefix.
"""

from __future__ import annotations

import abc
import errno
from dataclasses import dataclass
from typing import Literal

from fastpath.errors import FastpathError, UsageError


class DatastoreError(FastpathError):
    """The datastore said no, or could not be reached."""


class Unavailable(DatastoreError):
    """No member of the datastore answered (down, no quorum, network cut)."""

    def __init__(self, msg: str, *, op: str | None = None, hint: str | None = None) -> None:
        super().__init__(msg, op=op, errno=errno.ECONNREFUSED, hint=hint)


class Compacted(DatastoreError):
    """A watch asked for history the store no longer keeps: relist, then watch again."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept: {oldest})",
                         op="watch", errno=errno.ERANGE)
        self.requested = requested
        self.oldest = oldest


class BadDatastoreUrl(UsageError):
    """A --datastore URL fastpath cannot use."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    kind: Literal["put", "delete"]
    key: str
    value: bytes | None      # None for a delete
    revision: int            # the revision of the change (its mod_revision)


class Watch(abc.ABC):
    """A stream of changes under a prefix, in revision order, from a start revision."""

    @abc.abstractmethod
    def next(self, timeout: float) -> list[Event]:
        """The next batch of events, [] after `timeout` seconds without any. Raises
        Compacted when the start revision is gone, Unavailable when the store is."""

    @abc.abstractmethod
    def close(self) -> None: ...


class KvStore(abc.ABC):
    """One connection to a datastore. Every method raises Unavailable when the store
    cannot be reached; nothing is retried here (callers own their retry policy)."""

    url: str

    @abc.abstractmethod
    def get(self, key: str) -> KeyValue | None: ...

    @abc.abstractmethod
    def list(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store's revision the listing is from."""

    @abc.abstractmethod
    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write unconditionally; returns the new revision."""

    @abc.abstractmethod
    def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        """Write only if `key` is absent; False if it exists."""

    @abc.abstractmethod
    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        """Write only if `key` still has `mod_revision`; False otherwise."""

    @abc.abstractmethod
    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete (only if unchanged since `mod_revision`, when given); False if nothing
        was deleted."""

    @abc.abstractmethod
    def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; returns its id."""

    @abc.abstractmethod
    def keepalive(self, lease: int) -> int:
        """Renew; returns the remaining TTL, 0 if the lease is gone (expired or revoked)."""

    @abc.abstractmethod
    def revoke(self, lease: int) -> None:
        """End the lease now; its keys are deleted."""

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> Watch:
        """Changes under `prefix` with revision >= start_revision."""

    @abc.abstractmethod
    def revision(self) -> int:
        """The store's current revision (cheap: health checks call it)."""

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        pass

    def __enter__(self) -> "KvStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prefix_end(prefix: str) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last
    byte incremented (etcd's clientv3.GetPrefixRangeEnd)."""
    b = bytearray(prefix.encode())
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"
