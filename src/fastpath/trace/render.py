"""A trace as people read it: one table per direction, one row per hop, and the verdict
in one line under it. Renders the same dict `--json` prints (Trace.to_dict); the full
rule texts and check details are there, the table keeps to a few words per cell."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from fastpath.output import table


def _hooks(h: dict) -> str:
    out = []
    for s in h["hooks"]:
        if s["hook"] == "routing":
            out.append(f"route: {s['verdict']}")
        elif s["hook"] == "bridge":
            out.append(f"bridge {s['verdict']}")
        else:
            why = []
            for t in s["tables"]:
                if t["rule"]:
                    where = f"{t['rule_chain']}#{t['rule_index']}"
                    why.append(where if t["table"] == "filter" else f"{t['table']} {where}")
                elif t["by_policy"] and t["verdict"] != "ACCEPT":
                    why.append("policy")
            out.append(f"{s['hook']} {s['verdict']}" + (f" ({', '.join(why)})" if why else ""))
    return "\n".join(out) or "-"


def _checks(h: dict) -> str:
    return "\n".join(c["brief"] if c["ok"] else f"FAIL {c['brief']}" for c in h["checks"]
                     if not c["ok"] or c["what"] != "link") or "-"


def hop_table(tr: dict):
    port = f"/{tr['port']}" if tr["port"] and tr["direction"] == "request" else ""
    title = (f"{tr['direction']}: {tr['src']['label']} {tr['src']['ip']} -> "
             f"{tr['dst']['label']} {tr['dst']['ip']} {tr['proto']}{port}")
    rows = []
    for i, h in enumerate(tr["hops"], 1):
        rows.append((i, h["label"], h["ingress"], h["route"]["brief"] if h["route"] else "-",
                     _hooks(h), _checks(h), h["egress"]))
    return table(title, ["#", "namespace", "in", "route (ip route get)", "netfilter",
                         "checks", "out"], rows)


def render(tr: dict):
    parts = [hop_table(tr)]
    reply = tr.get("reply")
    if reply is not None:
        parts.append(hop_table(reply))
    for n in tr["notes"] + (reply["notes"] if reply else []):
        parts.append(Text(f"note: {n}", style="yellow"))
    if tr["ok"]:
        parts.append(Text("OK " + tr["summary"], style="bold green"))
    elif tr["cause"]:
        parts.append(Text("BROKEN " + tr["summary"], style="bold red"))
    else:
        parts.append(Text("UNKNOWN " + tr["summary"], style="bold yellow"))
    return Group(*parts)
