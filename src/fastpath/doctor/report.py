"""`fastpath doctor`: one line per kernel feature fastpath uses, present or missing, and
what fastpath does about it (used, a named fallback, or a refusal with its reason).

Each mechanism owns its probes (sockredir/features.py, shm/features.py,
proxy/features.py); the doctor only gathers them. As root it also runs the redirect
self-test (sockredir/selftest.py), which is where FIONREAD on redirected sockets, epoll
wake-ups and the peer-queue bound are learnt: they are behaviours, not symbols, and only
a redirected pair shows them.
"""

from __future__ import annotations

import os
import platform

from fastpath import features as FF
from fastpath.errors import FastpathError
from fastpath.proxy import features as proxy_features
from fastpath.shm import features as shm_features
from fastpath.sockredir import features as accel_features
from fastpath.sockredir import preflight, selfrun
from fastpath.sockredir.selftest import SPECS


def examine(selftest: bool = True) -> dict:
    if os.geteuid() != 0:
        # loading a probe program needs CAP_BPF: unprivileged, every probe would say
        # "missing", which would be a lie about the kernel
        findings = [FF.Finding("BPF features", accel_features.MECH, False, "not probed",
                               FF.FALLBACK, "run as root to probe them")]
        findings += shm_features.findings() + proxy_features.findings()
        return {"kernel": platform.release(), "peer_queue": None,
                "findings": [f.to_dict() for f in findings],
                "verdicts": FF.verdicts(findings), "selftest": None}
    facts = accel_features.probe()
    findings = accel_features.findings(facts)
    bound = accel_features.choose(facts)
    verdict = None
    if preflight.refusal(findings) is None:
        if selftest:
            try:
                verdict = selfrun.run(bound)
            except FastpathError as e:
                findings.append(FF.refused("redirect self-test", accel_features.MECH,
                                           "could not run", str(e)))
            else:
                findings += _selftest_findings(verdict)
    findings += shm_features.findings() + proxy_features.findings()
    return {"kernel": platform.release(), "peer_queue": bound.to_dict(),
            "findings": [f.to_dict() for f in findings],
            "verdicts": FF.verdicts(findings),
            "selftest": verdict.to_dict() if verdict else None}


def _selftest_findings(verdict) -> list[FF.Finding]:
    out = []
    for r in verdict.results:
        spec = SPECS[r.name]
        feature = f"redirect: {r.name}"
        if r.skipped:
            continue
        if r.ok:
            out.append(FF.used(feature, accel_features.MECH, r.detail))
        elif spec.required:
            out.append(FF.refused(feature, accel_features.MECH, r.detail,
                                  f"accel is refused on this kernel ({spec.what})"))
        else:
            out.append(FF.fallback(feature, accel_features.MECH, r.detail, spec.fallback))
    return out


def render(report: dict) -> str:
    lines = [f"kernel {report['kernel']}"]
    mark = {FF.USED: "ok  ", FF.FALLBACK: "WARN", FF.REFUSED: "FAIL"}
    for f in report["findings"]:
        lines.append(f"  {mark[f['effect']]} {f['mechanism']:<6} {f['line']}")
    lines.append("  " + ", ".join(f"{m}: {v}" for m, v in report["verdicts"].items()))
    return "\n".join(lines)
