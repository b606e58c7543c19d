"""What `accel enable` (and `up --accel`) do before attaching anything: probe the kernel's
features, choose the sk_msg build it takes, and run the redirect self-test with that build.

A missing feature that accel cannot do without, or a failed required self-test check,
refuses with one line naming it; nothing has been pinned or attached by then. Fallbacks
and a weaker queue bound go on, each said in one line (`notes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastpath import features as FF
from fastpath.errors import KernelUnsupported
from fastpath.sockredir import features as F
from fastpath.sockredir import selfrun
from fastpath.sockredir.selftest import Verdict

SKIP_RISK = ("redirect self-test skipped: this kernel's redirect is not verified (a kernel "
             "that loses epoll wake-ups or reorders bytes would stall or corrupt streams)")


@dataclass
class Preflight:
    bound: F.QueueBound
    findings: list[FF.Finding]
    selftest: Verdict | None          # None when skipped
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"peer_queue": self.bound.to_dict(), "notes": self.notes,
                "selftest": self.selftest.to_dict() if self.selftest else None}


def refusal(findings: list[FF.Finding]) -> KernelUnsupported | None:
    bad = FF.first_refusal(findings, F.MECH)
    if bad is None:
        return None
    return KernelUnsupported(f"{bad.feature} is missing ({bad.detail}): {bad.action}",
                             op="accel on this kernel", hint="`fastpath doctor` lists the rest")


def run(skip_selftest: bool = False) -> Preflight:
    findings = F.findings(facts := F.probe())
    err = refusal(findings)
    if err:
        raise err
    bound = F.choose(facts)
    notes = [bound.degraded] if bound.degraded else []
    if skip_selftest:
        return Preflight(bound, findings, None, [*notes, SKIP_RISK])
    verdict = selfrun.run(bound)
    if not verdict.ok:
        raise KernelUnsupported(verdict.line(), op="accel on this kernel",
                                hint="refused before attaching anything; --skip-selftest "
                                     "overrides at your own risk")
    notes += [f"fallback for {x}" for x in verdict.fallbacks]
    return Preflight(bound, findings, verdict, notes)
