"""The CNI 1.1.0 contract (containernetworking/cni SPEC.md) as data: the environment a
runtime passes, the versions we speak, and the error document with its well-known codes.

Pure: no I/O. The one place where a Python exception becomes a CNI error is
`error_from_exception`; every command path ends there.

Spec facts relied on:
- the runtime sets CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH;
  which are required depends on the command (section "Parameters");
- an error is a JSON document on stdout (`cniVersion`, `code`, `msg`, `details`) with a
  non-zero exit; codes 1-99 are reserved by the spec, 100+ belong to the plugin;
- STATUS answers with an error 50 (cannot take ADDs) or 51 (cannot take ADDs, existing
  attachments may be degraded), or with exit 0 and no output when all is well;
- VERSION works without a network config (stdin may carry `{"cniVersion": ...}`).
"""

from __future__ import annotations

import re

SPEC_VERSION = "1.1.0"
# Result formats we can produce; configs in these versions are accepted.
SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Well-known error codes (SPEC.md, "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
STATUS_UNAVAILABLE = 50
STATUS_DEGRADED = 51

# fastpath's own failures, by the class name of the FastpathError (most specific first:
# error_from_exception walks the exception's MRO). Names, not imports, so that this module
# stays free of the packages that raise them.
FASTPATH_CODES = {
    "StateLocked": TRY_AGAIN_LATER,
    "PoolExhausted": 104,
    "ConfigError": 103,
    "NotFound": 102,
    "AlreadyExists": 105,
    "UsageError": 101,
    "MissingDependency": 106,
    "KernelError": 107,
    "DelegateError": 108,
    "FastpathError": 100,
}
# A short label per plugin code, for `msg` (details carry the full line).
FASTPATH_LABELS = {
    100: "fastpath failure",
    101: "bad request",
    102: "not found",
    103: "invalid fastpath configuration",
    104: "no address left in the pod range",
    105: "already exists",
    106: "missing dependency",
    107: "kernel refused an operation",
    108: "delegated plugin failed",
}

# SPEC.md: container ID "must not be empty ... alphanumeric with ... underscore, dot, hyphen".
_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# IFNAMSIZ-1 bytes, and no '/', ':' or whitespace (dev_valid_name() in net/core/dev.c).
_IFNAME_RE = re.compile(r"^[^/:\s]{1,15}$")


class CniError(Exception):
    """A CNI error document: `code`, `msg`, `details`."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def document(self, cni_version: str = SPEC_VERSION) -> dict:
        doc = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            doc["details"] = self.details
        return doc


def error_from_exception(e: BaseException) -> CniError:
    """Map any exception to the CNI error the runtime should see."""
    if isinstance(e, CniError):
        return e
    for cls in type(e).__mro__:
        code = FASTPATH_CODES.get(cls.__name__)
        if code is not None:
            return CniError(code, FASTPATH_LABELS.get(code, "fastpath failure"), str(e))
    if isinstance(e, OSError):
        return CniError(IO_FAILURE, "I/O failure", str(e))
    return CniError(100, "fastpath failure", f"{type(e).__name__}: {e}")


class Env:
    """The CNI_* parameters of one invocation, validated for its command."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path")

    def __init__(self, command: str, container_id: str = "", netns: str = "", ifname: str = "",
                 args: dict[str, str] | None = None, path: tuple[str, ...] = ()) -> None:
        self.command = command
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args or {}
        self.path = path

    def as_environ(self) -> dict[str, str]:
        """The variables to pass to a delegated plugin (same semantics as ours)."""
        env = {"CNI_COMMAND": self.command, "CNI_CONTAINERID": self.container_id,
               "CNI_NETNS": self.netns, "CNI_IFNAME": self.ifname,
               "CNI_ARGS": ";".join(f"{k}={v}" for k, v in self.args.items()),
               "CNI_PATH": ":".join(self.path)}
        return {k: v for k, v in env.items() if v}


# Which variables each command needs (SPEC.md, "Parameters" and each operation).
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "STATUS": (),
    "GC": (),
    "VERSION": (),
}


def parse_env(environ) -> Env:
    """Validate the CNI_* variables; a CniError(4) names the first bad one."""
    command = environ.get("CNI_COMMAND", "")
    if command not in _REQUIRED:
        raise CniError(INVALID_ENV, "invalid CNI_COMMAND",
                       f"CNI_COMMAND={command!r}; expected one of {', '.join(COMMANDS)}")
    for var in _REQUIRED[command]:
        if not environ.get(var):
            raise CniError(INVALID_ENV, f"{var} is required for {command}")
    cid = environ.get("CNI_CONTAINERID", "")
    if cid and not _CONTAINER_ID_RE.match(cid):
        raise CniError(INVALID_ENV, "invalid CNI_CONTAINERID",
                       f"{cid!r}: use letters, digits, '_', '.' and '-'")
    ifname = environ.get("CNI_IFNAME", "")
    if ifname and not _IFNAME_RE.match(ifname):
        raise CniError(INVALID_ENV, "invalid CNI_IFNAME",
                       f"{ifname!r}: at most 15 bytes, no '/', ':' or white space")
    netns = environ.get("CNI_NETNS", "")
    if netns and not netns.startswith("/"):
        raise CniError(INVALID_ENV, "invalid CNI_NETNS", f"{netns!r} is not an absolute path")
    return Env(command, cid, netns, ifname, parse_cni_args(environ.get("CNI_ARGS", "")),
               tuple(p for p in environ.get("CNI_PATH", "").split(":") if p))


def parse_cni_args(raw: str) -> dict[str, str]:
    """CNI_ARGS: `K1=V1;K2=V2` (SPEC.md; runtimes such as podman pass IgnoreUnknown=1)."""
    out: dict[str, str] = {}
    for part in filter(None, raw.split(";")):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENV, "invalid CNI_ARGS", f"{part!r} is not KEY=VALUE")
        out[key] = value
    return out


def version_tuple(v: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in v.split("."))
    except ValueError:
        raise CniError(DECODE_FAILURE, "invalid cniVersion", repr(v)) from None
    if len(parts) != 3:
        raise CniError(DECODE_FAILURE, "invalid cniVersion", repr(v))
    return parts[0], parts[1], parts[2]


def check_version(v: str) -> str:
    """The config's cniVersion if we can answer in it, else CniError(1)."""
    version_tuple(v)
    if v not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {v!r}, plugin supports {list(SUPPORTED_VERSIONS)}")
    return v


def version_document() -> dict:
    return {"cniVersion": SPEC_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}
