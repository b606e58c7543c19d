"""What a kernel offers, and what fastpath does about it: the common shape of every feature
probe (`fastpath doctor`, and the commands that probe before they act).

Each mechanism probes its own features (sockredir/features.py, shm/features.py,
proxy/features.py) and answers with `Finding`s; this module only holds the shape and the
rendering, so that mechanisms do not import the doctor and the doctor does not know their
probes' details.

A finding is one line: the feature, present or missing, what was seen, and the effect on
fastpath: "used", a named fallback, or a refusal with its reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

USED, FALLBACK, REFUSED = "used", "fallback", "refused"


@dataclass(frozen=True)
class Finding:
    feature: str        # "sockmap, sk_msg, sockops"
    mechanism: str      # which part of fastpath needs it: accel, shm, proxy, rcu
    present: bool
    detail: str         # what the probe saw: "pipe-max-size 1048576", "EINVAL (6.3+)"
    effect: str         # USED, FALLBACK or REFUSED
    action: str = ""    # the fallback's name, or why the mechanism refuses

    def line(self) -> str:
        state = "present" if self.present else "missing"
        tail = f" -> {self.effect}: {self.action}" if self.action else ""
        return f"{self.feature}: {state} ({self.detail}){tail}"

    def to_dict(self) -> dict:
        return {**asdict(self), "line": self.line()}


def used(feature: str, mechanism: str, detail: str) -> Finding:
    return Finding(feature, mechanism, True, detail, USED)


def fallback(feature: str, mechanism: str, detail: str, action: str,
             present: bool = False) -> Finding:
    return Finding(feature, mechanism, present, detail, FALLBACK, action)


def refused(feature: str, mechanism: str, detail: str, why: str) -> Finding:
    return Finding(feature, mechanism, False, detail, REFUSED, why)


def verdicts(findings: list[Finding]) -> dict[str, str]:
    """Per mechanism: "ok", "degraded" (a fallback is in use) or "refused"; the worst wins."""
    order = ("ok", "degraded", "refused")
    out: dict[str, str] = {}
    for f in findings:
        v = {USED: "ok", FALLBACK: "degraded", REFUSED: "refused"}[f.effect]
        out[f.mechanism] = max(out.get(f.mechanism, "ok"), v, key=order.index)
    return out


def first_refusal(findings: list[Finding], mechanism: str) -> Finding | None:
    return next((f for f in findings if f.mechanism == mechanism and f.effect == REFUSED), None)
