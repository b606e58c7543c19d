"""Grace-period bookkeeping for QSBR readers: which retired things may be reclaimed, which
readers hold a grace period up, which of those are dead or stalled. Pure: no memory, no
clock, no /proc; table.py feeds it slot snapshots and a clock, tests feed it fakes.

The model (the QSBR flavor of liburcu and DPDK's rte_rcu_qsbr):
- A global token counts grace periods. The writer unpublishes something, then takes a new
  token t; the thing may be reclaimed once every online reader has reported a quiescent
  state with a token >= t, i.e. has passed a point where it holds no reference since t.
- A reader slot holds `qs`: 0 while the reader is offline (holds no references, blocks
  nobody), else the token it read at its last quiescent state.
- A reader that blocks the oldest pending grace period is checked for liveness once the
  period is older than `check_dead_after` (a /proc read is too dear for every poll); a dead
  one is handed back for its slot to be freed. One blocking for `stall_after` is reported
  as stalled, once per grace period.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Slot:
    """A snapshot of one registered reader slot."""

    index: int
    qs: int          # 0: offline; else the token seen at the last quiescent state
    tid: int         # the reader thread (its pid for a single-threaded process)
    pid: int
    starttime: int   # of `tid`, in clock ticks since boot (/proc/<tid>/stat field 22)


@dataclass
class Stall:
    slot: Slot
    token: int
    waited: float


@dataclass
class Poll:
    """What one poll found: items now safe to reclaim, dead readers to unregister,
    readers newly found stalled, and those still blocking the oldest grace period."""

    reclaimable: list[Any] = field(default_factory=list)
    dead: list[Slot] = field(default_factory=list)
    stalled: list[Stall] = field(default_factory=list)
    blocking: list[Slot] = field(default_factory=list)


@dataclass
class _Pending:
    token: int
    started: float
    item: Any


class GracePeriods:
    """Pending reclamations in token order, with grace-period latency statistics."""

    def __init__(self, clock: Callable[[], float], *, stall_after: float = 2.0,
                 check_dead_after: float = 0.005) -> None:
        self.clock = clock
        self.stall_after = stall_after
        self.check_dead_after = check_dead_after
        self._pending: deque[_Pending] = deque()
        self._reported: set[tuple[int, int]] = set()   # (token, tid) already reported
        self._done_token = 0
        self._last_token = 0
        self.completed = 0          # grace periods (tokens) seen complete
        self.total_latency = 0.0
        self.max_latency = 0.0
        self.stalls = 0
        self.dead_readers = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def oldest_token(self) -> int | None:
        return self._pending[0].token if self._pending else None

    def oldest_age(self) -> float:
        """How long the oldest pending grace period has waited (0 when none is pending)."""
        return self.clock() - self._pending[0].started if self._pending else 0.0

    def retire(self, item: Any, token: int) -> None:
        """`item` was unpublished before `token` was taken; tokens only grow."""
        if token < self._last_token:
            raise ValueError(f"token {token} retired after {self._last_token}")
        self._last_token = token
        self._pending.append(_Pending(token, self.clock(), item))

    def poll(self, slots: Iterable[Slot], alive: Callable[[Slot], bool]) -> Poll:
        """Reclaim what every online reader allows; find dead and stalled readers."""
        now = self.clock()
        online = [s for s in slots if s.tid and s.qs]
        out = Poll()
        floor = min((s.qs for s in online), default=None)
        while self._pending and (floor is None or floor >= self._pending[0].token):
            p = self._pending.popleft()
            out.reclaimable.append(p.item)
            if p.token > self._done_token:  # one grace period may free several items
                self._done_token = p.token
                self._count(now - p.started)
        if not self._pending:
            self._reported.clear()
            return out
        head = self._pending[0]
        waited = now - head.started
        out.blocking = [s for s in online if s.qs < head.token]
        if waited >= self.check_dead_after:
            out.dead = [s for s in out.blocking if not alive(s)]
            self.dead_readers += len(out.dead)
            dead = {s.index for s in out.dead}
            out.blocking = [s for s in out.blocking if s.index not in dead]
            if out.dead:
                # The dead hold nothing: poll again without them, now.
                again = self.poll([s for s in online if s.index not in dead], alive)
                again.dead = out.dead + again.dead
                again.reclaimable = out.reclaimable + again.reclaimable
                return again
        if waited >= self.stall_after:
            for s in out.blocking:
                if (head.token, s.tid) not in self._reported:
                    self._reported.add((head.token, s.tid))
                    self.stalls += 1
                    out.stalled.append(Stall(s, head.token, waited))
        return out

    def _count(self, latency: float) -> None:
        self.completed += 1
        self.total_latency += latency
        self.max_latency = max(self.max_latency, latency)

    def record(self, latency: float) -> None:
        """A grace period waited for directly (synchronize()), not through retire()."""
        self._count(latency)

    @property
    def mean_latency(self) -> float:
        return self.total_latency / self.completed if self.completed else 0.0
