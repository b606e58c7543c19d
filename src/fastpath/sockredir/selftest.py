"""The redirect self-test's checks and verdict (pure; selfrun.py runs them on the kernel).

Before `accel enable` attaches anything, a redirected pair runs in a private netns and
cgroup with the sk_msg build this kernel takes. Kernels differ most here: Cilium dropped
sockops acceleration after kernel bugs (cilium#23555), dae dropped sockmap (dae#912), and
a sk_msg change in 6.6.128+/6.12.75+ is reported to leave epoll readers unwoken
(grafana/beyla#2941). So the kernel is asked, not trusted.

Each check is required (the data path relies on it: the kernel is refused, naming the
check) or has a fallback (named, and accel goes on with it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CheckSpec:
    name: str
    what: str
    fallback: str = ""  # empty: required

    @property
    def required(self) -> bool:
        return not self.fallback


CHECKS = (
    CheckSpec("redirected", "messages between two sockets in the cgroup take the redirect "
                            "(sk_msg counters grow, the TCP stack carries none of it)"),
    CheckSpec("intact", "1 MiB in 1 B..64 KiB writes arrives in order and intact (SHA-256)"),
    CheckSpec("epoll_wakeup", "a reader blocked in epoll_wait wakes for redirected data"),
    CheckSpec("fionread", "FIONREAD counts redirected bytes not yet read",
              fallback="the proxy finds redirected bytes with a 1-byte MSG_PEEK"),
    CheckSpec("half_close", "shutdown(SHUT_WR) after redirected data: the peer reads it all, "
                            "then EOF, and can still answer"),
    CheckSpec("peer_close", "a sender whose peer closes mid-stream gets EPIPE or ECONNRESET, "
                            "never a hang"),
    CheckSpec("queue_bound", "a peer that never reads: the sender moves to the TCP stack at "
                             "max_queued, and every byte still arrives in order"),
)
SPECS = {c.name: c for c in CHECKS}


@dataclass
class Result:
    name: str
    ok: bool
    detail: str
    skipped: bool = False  # not run on this build (queue_bound with no bound)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    results: list[Result]
    refused: Result | None       # the first required check that failed
    fallbacks: list[str]         # "fionread: the proxy finds ... MSG_PEEK"

    @property
    def ok(self) -> bool:
        return self.refused is None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "refused": self.refused.name if self.refused else None,
                "fallbacks": self.fallbacks, "checks": [r.to_dict() for r in self.results]}

    def line(self) -> str:
        if self.refused:
            return (f"redirect self-test failed: {self.refused.name} "
                    f"({SPECS[self.refused.name].what}): {self.refused.detail}")
        ran = [r for r in self.results if not r.skipped]
        tail = "; fallback " + "; ".join(self.fallbacks) if self.fallbacks else ""
        return f"redirect self-test passed ({len(ran)} checks){tail}"


def judge(results: list[Result]) -> Verdict:
    """Required failures refuse; fallback checks that fail name their fallback. A check
    the run did not report at all counts as failed (a hang or a crash stopped it)."""
    by_name = {r.name: r for r in results}
    ordered = [by_name.get(c.name) or Result(c.name, False, "not reported (the check hung "
                                                           "or its process died)")
               for c in CHECKS]
    refused = next((r for r in ordered
                    if not r.ok and not r.skipped and SPECS[r.name].required), None)
    fallbacks = [f"{r.name}: {SPECS[r.name].fallback}" for r in ordered
                 if not r.ok and not r.skipped and not SPECS[r.name].required]
    return Verdict(ordered, refused, fallbacks)
