"""Reverse-path filtering: would the kernel drop a packet for arriving on the wrong
interface? Pure: the caller supplies the sysctls and the reverse route.

Kernel facts (Documentation/networking/ip-sysctl.rst, net/ipv4/fib_frontend.c
__fib_validate_source):
- The mode in force on an interface is max(conf.all.rp_filter, conf.IFACE.rp_filter).
- 0: no check. 1 (strict, RFC 3704): look up the route back to the packet's source; drop
  unless it leaves through the interface the packet came in on. 2 (loose): drop only when
  there is no route back to the source at all.
- The check runs inside the input route lookup, after the forwarding check, so a dropped
  packet never reaches INPUT or FORWARD; `ip route get ... iif` refuses it as a martian
  source: EINVAL on the kernels here (6.x), EXDEV on older ones.
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = {0: "off", 1: "strict", 2: "loose"}


@dataclass(frozen=True)
class RpDecision:
    mode: int                 # effective: max(all, iface)
    passes: bool
    reason: str               # one line, always set

    @property
    def mode_name(self) -> str:
        return MODES.get(self.mode, str(self.mode))

    def to_dict(self) -> dict:
        return {"mode": self.mode, "mode_name": self.mode_name, "passes": self.passes,
                "reason": self.reason}


def effective_mode(all_value: int, iface_value: int) -> int:
    return max(int(all_value), int(iface_value))


def decide(*, src: str, ingress: str, all_value: int, iface_value: int,
           reverse_oif: str | None) -> RpDecision:
    """`reverse_oif`: the interface the route back to `src` leaves through, None when
    there is no route back."""
    mode = effective_mode(all_value, iface_value)
    setting = f"rp_filter={mode} (max of all={all_value}, {ingress}={iface_value})"
    if mode == 0:
        return RpDecision(mode, True, f"{setting}: no check")
    if reverse_oif is None:
        return RpDecision(mode, False, f"{setting}: no route back to {src}")
    if mode == 1 and reverse_oif != ingress:
        return RpDecision(mode, False,
                          f"{setting}: the route back to {src} leaves via {reverse_oif}, "
                          f"not {ingress}")
    how = "strict" if mode == 1 else "loose"
    return RpDecision(mode, True, f"{setting}: {how} check passes (back via {reverse_oif})")
