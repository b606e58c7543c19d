"""The agent's end of the RCU table its node proxy reads: publish without ever blocking,
and survive a reader that stops reporting.

The agent writes its resolved services into a SharedTable (rcu/table.py) whose one reader
that matters is the node proxy's master. A publish needs a free version buffer, and a
buffer comes back only after a grace period, which waits for every online reader. So a
reader that stays online without reporting a quiescent state (a bug, a SIGSTOP, a
debugger) would stop the writer. The agent has other duties (the lease, CNI, BIRD,
health), so here:

- **A publish never waits** beyond PUBLISH_WAIT (long enough for a live reader between
  two reads to report, and for a dead one to be found and its slot freed). With no free
  buffer by then the newest value stays pending, the
  stall is reported as a problem (readiness names the reader's pid), and every later
  `flush()` tries again. Only the newest value matters: the table holds the whole view.
- **A reader hung beyond REPLACE_AFTER gets a fresh table.** The agent creates a new
  table, publishes the pending value into it, and abandons the old one to its readers: it
  never writes the old table again, so a hung reader that wakes up can never see a reused
  buffer (its mapping keeps the memfd alive until it lets go). The caller hands the new
  table to the proxy (`generation` changes); the master switches tables on hand-over.
  The agent never kills the reader: the proxy's established connections would go with it.

Decided so because the alternatives are worse: waiting blocks the agent (it died of
GraceStalled before), freeing a live reader's slot lets it read a buffer being rewritten,
and killing the proxy cuts every connection through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastpath.rcu.table import GraceStalled, SharedTable

log = logging.getLogger("fastpath.agent")

CAPACITY = 1 << 20     # bytes per version: the services JSON of a large cluster
READERS = 16           # the proxy master, and fastpath rcu stats / tests
VERSIONS = 4
REPLACE_AFTER = 10.0   # seconds a reader may hold a grace period up before a new table
PUBLISH_WAIT = 0.05    # seconds a publish may wait for a free version buffer


def _create() -> SharedTable:
    return SharedTable.create(CAPACITY, readers=READERS, versions=VERSIONS,
                              name="agent-services")


class ServiceTable:
    """The table the agent publishes into; `key` holds the whole value."""

    def __init__(self, key: bytes, *, create: Callable[[], SharedTable] = _create,
                 replace_after: float = REPLACE_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self._create = create
        self.replace_after = replace_after
        self.clock = clock
        self.table: SharedTable = create()
        self.generation = 1          # a new table each time it is replaced
        self.pending: bytes | None = None
        self.stall: GraceStalled | None = None
        self.stalled_since: float | None = None
        self.replaced = 0

    @property
    def fd(self) -> int:
        return self.table.fd

    def set(self, value: bytes) -> bool:
        """Make `value` the table's; True when published now, False when pending."""
        self.pending = value
        return self.flush()

    def flush(self) -> bool:
        """Publish the pending value if a buffer is free (replacing the table when a reader
        has been hung beyond the bound); True when nothing is left pending."""
        if self.pending is None:
            return True
        try:
            self.table.publish({self.key: self.pending}, timeout=PUBLISH_WAIT)
        except GraceStalled as e:
            now = self.clock()
            if self.stall is None:
                log.warning("service table: %s; the change stays pending", e.msg)
                self.stalled_since = now
            self.stall = e
            if self.stalled_since is not None and now - self.stalled_since >= self.replace_after:
                self._replace(e)
            return self.pending is None
        if self.stall is not None:
            log.info("service table: the stall is over; pending change published")
        self.pending = None
        self.stall = None
        self.stalled_since = None
        return True

    def _replace(self, e: GraceStalled) -> None:
        readers = ", ".join(f"pid {r.pid}" for r in e.readers) or "a reader"
        new = self._create()
        try:
            assert self.pending is not None
            new.publish({self.key: self.pending})
        except BaseException:
            new.close()
            raise
        old, self.table = self.table, new
        old.close()   # our mapping only: the hung reader's keeps the memfd, never rewritten
        self.generation += 1
        self.replaced += 1
        self.pending = None
        self.stall = None
        self.stalled_since = None
        log.error("service table: %s held a grace period up for %.0fs while alive; a new "
                  "table replaces it (the old one is left to that reader, never written again)",
                  readers, e.waited)

    def problem(self) -> str | None:
        """One line for readiness while a change waits, naming who holds it up."""
        if self.stall is None:
            return None
        who = ", ".join(f"pid {r.pid}" for r in self.stall.readers) or "a reader"
        waited = self.clock() - (self.stalled_since or self.clock())
        return (f"service table: a change has waited {waited:.0f}s for {who}, which holds a "
                f"grace period up (the table is replaced after {self.replace_after:g}s)")

    def close(self) -> None:
        self.table.close()
