"""CNI result documents and their conversion between versions.

Pure. Internally a result is kept in the 1.1.0 form; `convert` writes it in the version
the config asked for, `normalize` reads a result of any supported version (a prevResult,
a delegated IPAM plugin's answer) back into the 1.1.0 form.

Differences the spec defines (SPEC.md "Result", and the 0.4.0 / 1.0.0 specs):
- 1.1.0 adds to routes `mtu`, `advmss`, `priority`, `table`, `scope`; to interfaces `mtu`,
  `socketPath`, `pciID`. 1.0.0 has none of these.
- 0.4.0 has a `version` ("4" or "6") on each ip; 1.0.0 dropped it.
- `interface` in an ip is an index into `interfaces`.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

ROUTE_FIELDS_1_1 = ("mtu", "advmss", "priority", "table", "scope")
INTERFACE_FIELDS_1_1 = ("mtu", "socketPath", "pciID")
_KNOWN = ("0.4.0", "1.0.0", "1.1.0")


def build(*, interfaces: list[dict], ips: list[dict], routes: list[dict],
          dns: dict | None = None) -> dict[str, Any]:
    """A 1.1.0 result from its parts (no cniVersion: convert() sets it)."""
    out: dict[str, Any] = {"interfaces": interfaces, "ips": ips, "routes": routes}
    out["dns"] = dns or {}
    return out


def normalize(doc: dict[str, Any], version: str | None = None) -> dict[str, Any]:
    """Read a result of version `version` (or its own cniVersion) into the 1.1.0 form.

    Raises ValueError on a document that is not a result.
    """
    version = doc.get("cniVersion") or version or "1.1.0"
    if version not in _KNOWN:
        raise ValueError(f"result version {version!r} not one of {list(_KNOWN)}")
    out: dict[str, Any] = {"interfaces": [], "ips": [], "routes": [], "dns": {}}
    interfaces = doc.get("interfaces") or []
    if not isinstance(interfaces, list):
        raise ValueError("interfaces: expected a list")
    for i, itf in enumerate(interfaces):
        if not isinstance(itf, dict) or not isinstance(itf.get("name"), str):
            raise ValueError(f"interfaces[{i}]: expected an object with a name")
        out["interfaces"].append(dict(itf))
    ips = doc.get("ips") or []
    if not isinstance(ips, list):
        raise ValueError("ips: expected a list")
    for i, ip in enumerate(ips):
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise ValueError(f"ips[{i}]: expected an object with an address")
        try:
            ipaddress.ip_interface(ip["address"])
            if ip.get("gateway"):
                ipaddress.ip_address(ip["gateway"])
        except ValueError as e:
            raise ValueError(f"ips[{i}]: {e}") from None
        idx = ip.get("interface")
        if idx is not None and (not isinstance(idx, int) or not 0 <= idx < len(interfaces)):
            raise ValueError(f"ips[{i}].interface: {idx!r} is not an index into interfaces")
        entry = {k: v for k, v in ip.items() if k != "version"}
        out["ips"].append(entry)
    routes = doc.get("routes") or []
    if not isinstance(routes, list):
        raise ValueError("routes: expected a list")
    for i, r in enumerate(routes):
        if not isinstance(r, dict) or not isinstance(r.get("dst"), str):
            raise ValueError(f"routes[{i}]: expected an object with a dst")
        try:
            ipaddress.ip_network(r["dst"], strict=False)
        except ValueError as e:
            raise ValueError(f"routes[{i}]: {e}") from None
        out["routes"].append(dict(r))
    if isinstance(doc.get("dns"), dict):
        out["dns"] = dict(doc["dns"])
    return out


def convert(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Write a 1.1.0-form result in `version` (one of 0.4.0, 1.0.0, 1.1.0)."""
    if version not in _KNOWN:
        raise ValueError(f"cannot write a result in version {version!r}")
    out = copy.deepcopy(result)
    if version != "1.1.0":
        for r in out.get("routes", []):
            for k in ROUTE_FIELDS_1_1:
                r.pop(k, None)
        for itf in out.get("interfaces", []):
            for k in INTERFACE_FIELDS_1_1:
                itf.pop(k, None)
    if version == "0.4.0":
        for ip in out.get("ips", []):
            ip["version"] = str(ipaddress.ip_interface(ip["address"]).version)
    if not out.get("dns"):
        out.pop("dns", None)
    return {"cniVersion": version, **out}


def merge(prev: dict[str, Any] | None, own: dict[str, Any]) -> dict[str, Any]:
    """Append our interfaces, ips and routes to a chained prevResult (indices shifted)."""
    if not prev:
        return own
    out = copy.deepcopy(prev)
    shift = len(out["interfaces"])
    out["interfaces"] += copy.deepcopy(own["interfaces"])
    for ip in own["ips"]:
        ip = dict(ip)
        if "interface" in ip:
            ip["interface"] += shift
        out["ips"].append(ip)
    out["routes"] += copy.deepcopy(own["routes"])
    if own.get("dns"):
        out["dns"] = own["dns"]
    return out
