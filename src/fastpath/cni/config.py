"""The network configuration a runtime passes on stdin, parsed and validated.

Pure. A config looks like:

    {"cniVersion": "1.1.0", "name": "podnet", "type": "fastpath", "mtu": 1500,
     "podCIDR": "10.244.1.0/24"}

or, with a delegated IPAM plugin found in CNI_PATH (SPEC.md, "IP Allocation"):

    {..., "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}}

Optional fastpath fields: `instance` (FASTPATH_INSTANCE scope of every name, for a
runtime whose environment does not carry it), `stateDir` (FASTPATH_STATE_DIR),
`agentSocket`. `ipam` without `type` (or with type "fastpath") is fastpath's own SQLite
IPAM, with `subnet` standing for `podCIDR`.

Error codes: undecodable JSON is 6, a wrong or missing field 7, a cniVersion we cannot
speak 1 (SPEC.md, "Error").
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from fastpath.cni import result as cniresult
from fastpath.cni.spec import DECODE_FAILURE, INVALID_CONFIG, CniError, check_version

PLUGIN_TYPE = "fastpath"
DEFAULT_MTU = 1500
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")  # SPEC.md, network `name`
_INSTANCE_RE = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass
class NetConf:
    cni_version: str
    name: str
    mtu: int = DEFAULT_MTU
    pod_cidr: ipaddress.IPv4Network | None = None
    ipam: dict[str, Any] | None = None  # a delegated IPAM section (has "type")
    instance: str | None = None
    state_dir: str | None = None
    agent_socket: str | None = None
    prev_result: dict[str, Any] | None = None  # normalised to 1.1.0 form
    valid_attachments: list[tuple[str, str]] | None = None  # GC only
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def delegated(self) -> bool:
        return self.ipam is not None


def decode(data: bytes | str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CniError(DECODE_FAILURE, "failed to decode network configuration", str(e)) from None
    if not isinstance(doc, dict):
        raise CniError(DECODE_FAILURE, "failed to decode network configuration",
                       "expected a JSON object")
    return doc


def _invalid(field_: str, why: str) -> CniError:
    return CniError(INVALID_CONFIG, f"invalid network configuration: {field_}", why)


def parse(data: bytes | str, command: str = "ADD") -> NetConf:
    """Parse and validate a network config for `command`."""
    doc = decode(data)
    version = doc.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise _invalid("cniVersion", "missing")
    check_version(version)
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _invalid("name", f"{name!r}: letters, digits, '_', '.', '-', not empty")
    if doc.get("type") != PLUGIN_TYPE:
        raise _invalid("type", f"{doc.get('type')!r}, this plugin is {PLUGIN_TYPE!r}")
    conf = NetConf(cni_version=version, name=name, raw=doc)

    mtu = doc.get("mtu", DEFAULT_MTU)
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise _invalid("mtu", f"{mtu!r}: an integer in 68..65535")
    conf.mtu = mtu

    cidr = doc.get("podCIDR")
    ipam = doc.get("ipam")
    if ipam is not None and not isinstance(ipam, dict):
        raise _invalid("ipam", "expected an object")
    if ipam and ipam.get("type") not in (None, "", PLUGIN_TYPE):
        ptype = ipam["type"]
        if not isinstance(ptype, str) or "/" in ptype or ptype.startswith("."):
            raise _invalid("ipam.type", f"{ptype!r} is not a plugin name")
        if cidr is not None:
            raise _invalid("podCIDR", "give either podCIDR or a delegated ipam section, not both")
        conf.ipam = ipam
    else:
        if ipam and "subnet" in ipam:
            if cidr is not None and cidr != ipam["subnet"]:
                raise _invalid("ipam.subnet", "differs from podCIDR")
            cidr = ipam["subnet"]
        if cidr is None:
            raise _invalid("podCIDR", "missing: give the node's pod CIDR or an ipam section")
        conf.pod_cidr = parse_pod_cidr(cidr)

    inst = doc.get("instance")
    if inst is not None:
        if not isinstance(inst, str) or not _INSTANCE_RE.match(inst):
            raise _invalid("instance", f"{inst!r}: 1-8 lowercase letters or digits")
        conf.instance = inst
    for key, attr in (("stateDir", "state_dir"), ("agentSocket", "agent_socket")):
        v = doc.get(key)
        if v is not None:
            if not isinstance(v, str) or not v.startswith("/"):
                raise _invalid(key, f"{v!r}: an absolute path")
            setattr(conf, attr, v)

    prev = doc.get("prevResult")
    if prev is not None:
        if not isinstance(prev, dict):
            raise _invalid("prevResult", "expected an object")
        try:
            conf.prev_result = cniresult.normalize(prev, version)
        except ValueError as e:
            raise CniError(DECODE_FAILURE, "failed to decode prevResult", str(e)) from None

    if command == "GC":
        conf.valid_attachments = parse_valid_attachments(doc.get("cni.dev/valid-attachments", []))
    return conf


def parse_pod_cidr(value: Any) -> ipaddress.IPv4Network:
    if not isinstance(value, str):
        raise _invalid("podCIDR", f"{value!r}: expected a string like 10.244.1.0/24")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise _invalid("podCIDR", str(e)) from None
    if net.version != 4:
        raise _invalid("podCIDR", f"{value}: IPv4 only")
    if net.prefixlen > 30:
        raise _invalid("podCIDR", f"{value}: too small for pods (at most /30)")
    return net


def parse_valid_attachments(value: Any) -> list[tuple[str, str]]:
    """`cni.dev/valid-attachments` (SPEC.md, GC): [{"containerID": .., "ifname": ..}, ...]."""
    if not isinstance(value, list):
        raise _invalid("cni.dev/valid-attachments", "expected a list")
    out = []
    for i, item in enumerate(value):
        if (not isinstance(item, dict) or not isinstance(item.get("containerID"), str)
                or not isinstance(item.get("ifname"), str)):
            raise _invalid(f"cni.dev/valid-attachments[{i}]",
                           "expected {\"containerID\": str, \"ifname\": str}")
        out.append((item["containerID"], item["ifname"]))
    return out
