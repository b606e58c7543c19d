"""The node's FORWARD chain: policy DROP (a hardened node) plus fastpath's own chain.

    FORWARD (policy DROP) -> -j FP-FORWARD
    FP-FORWARD: -m devgroup --src-group 0x6670 -j ACCEPT
                -m devgroup --dst-group 0x6670 -j ACCEPT

It accepts exactly traffic entering or leaving a fastpath pod interface: every host-side
pod veth is put in interface group POD_DEVGROUP when it is made (fastpath.podnet.plan), so
the chain never changes as pods come and go, and a pod add costs no iptables run. Nothing
here adds NAT: no MASQUERADE or SNAT anywhere, receivers see pod IPs.

The iptables command runs inside the netns through nsenter(1); the tables are per netns.
"""

from __future__ import annotations

import subprocess

from fastpath.errors import KernelError, MissingDependency
from fastpath.kernel.netns import Netns, NetnsSpec
from fastpath.podnet.plan import POD_DEVGROUP

FORWARD_CHAIN = "FP-FORWARD"


def chain_rules(group: int = POD_DEVGROUP) -> list[str]:
    return [f"-m devgroup --src-group {group:#x} -j ACCEPT",
            f"-m devgroup --dst-group {group:#x} -j ACCEPT"]


def iptables(ns: "NetnsSpec", *args: str, input: str | None = None, program: str = "iptables",
             check: bool = True) -> subprocess.CompletedProcess:
    with Netns.open(ns) as n:
        argv = ["nsenter", f"--net=/proc/self/fd/{n.fd}", program, *args]
        if program == "iptables":
            argv.insert(3, "-w")
        try:
            p = subprocess.run(argv, input=input, capture_output=True, text=True, pass_fds=(n.fd,),
                               timeout=30)
        except FileNotFoundError as e:
            raise MissingDependency(f"{e.filename} not found", hint="install iptables and util-linux") from e
    if check and p.returncode != 0:
        raise KernelError(p.stderr.strip() or f"exit {p.returncode}",
                          op=f"{program} {' '.join(args)} in netns {n.label}")
    return p


def ensure_forward(ns: "NetnsSpec", *, policy_drop: bool = True, chain: str = FORWARD_CHAIN,
                   group: int = POD_DEVGROUP) -> None:
    """FP-FORWARD with exactly our rules, jumped to from FORWARD once; FORWARD policy DROP."""
    have = iptables(ns, "-S", "FORWARD").stdout.splitlines()
    lines = ["*filter"]
    lines.append(f":{chain} - [0:0]")  # declared: created, or flushed if present (--noflush)
    if policy_drop:
        lines.append(":FORWARD DROP [0:0]")
    lines += [f"-A {chain} {r}" for r in chain_rules(group)]
    if f"-A FORWARD -j {chain}" not in have:
        lines.append(f"-I FORWARD 1 -j {chain}")
    lines.append("COMMIT")
    iptables(ns, "--noflush", input="\n".join(lines) + "\n", program="iptables-restore")


def forward_status(ns: "NetnsSpec", chain: str = FORWARD_CHAIN, group: int = POD_DEVGROUP) -> dict:
    """What the FORWARD path of this netns looks like, for inspect/status/trace."""
    fwd = iptables(ns, "-S", "FORWARD").stdout.splitlines()
    policy = next((ln.split()[2] for ln in fwd if ln.startswith("-P FORWARD")), "?")
    p = iptables(ns, "-S", chain, check=False)
    rules = [ln[len(f"-A {chain} "):] for ln in p.stdout.splitlines() if ln.startswith(f"-A {chain} ")]
    want = chain_rules(group)
    return {"policy": policy, "jump": f"-A FORWARD -j {chain}" in fwd, "chain": p.returncode == 0,
            "rules": rules, "accepts_pods": p.returncode == 0 and all(w in rules for w in want)}


def remove_forward(ns: "NetnsSpec", chain: str = FORWARD_CHAIN) -> bool:
    """Remove FP-FORWARD and the jump to it (the FORWARD policy stays as it is: on a host
    that had DROP, loosening it is not ours to do); False when there was nothing."""
    st = iptables(ns, "-S", "FORWARD").stdout.splitlines()
    did = False
    while f"-A FORWARD -j {chain}" in st:
        iptables(ns, "-D", "FORWARD", "-j", chain)
        st.remove(f"-A FORWARD -j {chain}")
        did = True
    if iptables(ns, "-S", chain, check=False).returncode == 0:
        iptables(ns, "-F", chain)
        iptables(ns, "-X", chain)
        did = True
    return did
