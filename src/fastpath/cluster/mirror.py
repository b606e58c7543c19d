"""A local copy of everything under a prefix, kept current by a watch: the one way a
node agent (or `fastpath node list --watch`) reads the datastore.

The contract the issue of many machines asks for, in one place:
- events apply in revision order, each once: an event at or below the revision already
  applied is dropped (a re-delivered batch after a reconnect changes nothing);
- after a disconnect the watch resumes at the next revision, so nothing is missed;
- when that revision is compacted away, the mirror relists and reports the difference
  between what it had and what is there now, as if it had seen the events.

`changes` are the keys that changed; the caller re-derives what depends on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastpath.cluster.kv import Compacted, Event, KeyValue, KvStore, Unavailable, Watch


@dataclass(frozen=True)
class Entry:
    value: bytes
    mod_revision: int


class Mirror:
    def __init__(self, kv: KvStore, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix
        self.data: dict[str, Entry] = {}
        self.revision = 0        # everything up to here is applied
        self.relists = 0         # how many times a compaction forced a relist
        self._watch: Watch | None = None

    # ---- pure steps (the tests drive them directly) --------------------------------------

    def reset(self, kvs: list[KeyValue], revision: int) -> set[str]:
        """Replace the copy with a listing at `revision`; returns the keys that differ."""
        new = {k.key: Entry(k.value, k.mod_revision) for k in kvs}
        changed = {k for k in self.data.keys() | new.keys() if self.data.get(k) != new.get(k)}
        self.data = new
        self.revision = revision
        return changed

    def apply(self, events: list[Event]) -> set[str]:
        changed = set()
        base = self.revision  # one etcd transaction's events share a revision: compare
        for e in events:      # with the revision before this batch, not the running one
            if e.revision <= base:
                continue      # applied already (a batch delivered again after a reconnect)
            if e.kind == "put":
                assert e.value is not None
                self.data[e.key] = Entry(e.value, e.revision)
            else:
                self.data.pop(e.key, None)
            changed.add(e.key)
        if events:
            self.revision = max(self.revision, max(e.revision for e in events))
        return changed

    # ---- with the store ----------------------------------------------------------------

    def sync(self) -> set[str]:
        """List everything (the first read, and the answer to a compaction)."""
        self.close()
        kvs, rev = self.kv.list(self.prefix)
        return self.reset(kvs, rev)

    def follow(self, timeout: float) -> set[str]:
        """Wait up to `timeout` for changes and apply them. Raises Unavailable (the
        caller retries later: the next call resumes where this one stopped)."""
        if self._watch is None:
            self._watch = self.kv.watch(self.prefix, self.revision + 1)
        try:
            return self.apply(self._watch.next(timeout))
        except Compacted:
            self.relists += 1
            return self.sync()
        except Unavailable:
            self.close()
            raise

    def close(self) -> None:
        w, self._watch = self._watch, None
        if w is not None:
            w.close()

    def items(self, sub: str = "") -> list[tuple[str, bytes]]:
        p = self.prefix + sub
        return sorted((k, e.value) for k, e in self.data.items() if k.startswith(p))
