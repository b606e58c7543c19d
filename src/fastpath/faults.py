"""Failure injection, in one place: the rollback tests make a named step fail right after
it ran, exactly as a kernel error there would, and check that nothing half-made remains.

    FASTPATH_PODNET_FAIL_AT=<step>   podnet: `up` (underlay, node, routing) and every pod
                                     attach (veth, host-up, host-route, pod-link,
                                     pod-address, pod-routes)
    FASTPATH_CNI_FAIL_AT=<step>      the CNI plugin's ADD (ipam, record)

Production code calls `point(area, step)` after each step; unset, it costs one dict lookup.
"""

from __future__ import annotations

import os

from fastpath.errors import KernelError

ENV = {"podnet": "FASTPATH_PODNET_FAIL_AT", "cni": "FASTPATH_CNI_FAIL_AT"}


class InjectedFailure(KernelError):
    """Raised at an injection point (tests only)."""


def point(area: str, step: str, what: str = "") -> None:
    if os.environ.get(ENV[area]) == step:
        raise InjectedFailure("injected failure", op=f"{what or area} step {step}")
