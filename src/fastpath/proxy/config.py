"""The proxy's config file: a line-oriented format checked against a schema.

Rule for this module: text in, a frozen `ProxyConfig` out, or a ConfigError naming
`file:line` and the reason. No sockets, no files other than the one read.

The format follows what HAProxy users read without a manual: sections start at column 0,
their directives are indented, `#` starts a comment.

    global
        workers 2                # default: one per CPU
        mode auto                # splice | copy | auto
        splice-min 4096          # auto mode: splice once a read brings this many bytes
        pipe-size 256k           # F_SETPIPE_SZ; a refusal is tolerated
        pipe-cap 4096            # pipes per worker, in use + free
        pipe-idle 30s            # free pipes idle this long are closed (0: never)
        drain-timeout 30s        # SIGTERM: established connections get this long
        accel-check on           # ask sockredir whether a socket is in its sockhash

    service web
        listen 127.0.0.1:8080
        balance roundrobin       # roundrobin | leastconn
        backend 10.0.0.2:80
        backend 10.0.0.3:80
        connect-timeout 2s
        idle-timeout 60s
        maxconn 10000            # for the whole proxy: each worker takes its share
        check interval 1s timeout 500ms fall 2 rise 1
        retries 3                # a connect refused, unreachable or timed out before any
                                 # byte reached the client is tried on another backend

The schema is the table `_GLOBAL` / `_SERVICE` below: one entry per directive with its
value parser and whether it may repeat. Everything is checked before anything is used,
so a reload with a bad file leaves the running config in place.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastpath.errors import ConfigError

MODES = ("splice", "copy", "auto")
BALANCE = ("roundrobin", "leastconn")


@dataclass(frozen=True)
class HealthCheck:
    interval: float = 1.0
    timeout: float = 0.5
    fall: int = 2      # consecutive failures that mark a backend down
    rise: int = 1      # consecutive successes that mark it up again


@dataclass(frozen=True)
class Service:
    name: str
    listen: tuple[str, int]
    backends: tuple[tuple[str, int], ...]
    balance: str = "roundrobin"
    connect_timeout: float = 2.0
    idle_timeout: float = 60.0
    maxconn: int = 10000
    check: HealthCheck | None = None
    retries: int = 3      # connects tried on other backends before the client is closed


@dataclass(frozen=True)
class ProxyConfig:
    workers: int = 0            # 0: one per CPU
    mode: str = "auto"
    splice_min: int = 4096      # HAProxy splices only from 4 KiB on
    pipe_size: int = 262144     # 4x Linux's default: fewer splice calls when much is queued
    pipe_cap: int = 4096
    pipe_idle: float = 30.0
    drain_timeout: float = 30.0
    accel_check: bool = True
    services: tuple[Service, ...] = field(default_factory=tuple)
    source: str = "<string>"

    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))


# --- value parsers: each takes the argument words and returns a value or raises ValueError

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(word: str) -> float:
    m = _DURATION_RE.match(word)
    if not m:
        raise ValueError(f"{word!r} is not a duration (e.g. 500ms, 2s, 1m)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_size(word: str) -> int:
    m = re.match(r"^(\d+)([kKmM]?)$", word)
    if not m:
        raise ValueError(f"{word!r} is not a size (e.g. 65536, 64k, 1m)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(2).lower()]


def parse_endpoint(word: str) -> tuple[str, int]:
    host, sep, port = word.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{word!r} is not address:port")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} is not in 1..65535")
    return host, int(port)


def _one(conv: Callable[[str], object]) -> Callable[[list[str]], object]:
    def parse(words: list[str]) -> object:
        if len(words) != 1:
            raise ValueError(f"takes one value, got {len(words)}")
        return conv(words[0])
    return parse


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def conv(word: str) -> int:
        v = parse_size(word)
        if not lo <= v <= hi:
            raise ValueError(f"{v} is not in {lo}..{hi}")
        return v
    return conv


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def conv(word: str) -> str:
        if word not in options:
            raise ValueError(f"{word!r} is not one of {', '.join(options)}")
        return word
    return conv


def _parse_check(words: list[str]) -> HealthCheck:
    keys = {"interval": parse_duration, "timeout": parse_duration,
            "fall": _int_range(1, 100), "rise": _int_range(1, 100)}
    if len(words) % 2:
        raise ValueError("takes `key value` pairs: interval, timeout, fall, rise")
    out: dict[str, Any] = {}
    for k, v in zip(words[::2], words[1::2]):
        if k not in keys:
            raise ValueError(f"unknown check option {k!r} (interval, timeout, fall, rise)")
        out[k] = keys[k](v)
    hc = HealthCheck(**out)
    if hc.timeout <= 0 or hc.interval <= 0:
        raise ValueError("interval and timeout must be > 0")
    return hc


def _positive(conv: Callable[[str], float]) -> Callable[[str], float]:
    def check(word: str) -> float:
        v = conv(word)
        if v <= 0:
            raise ValueError(f"{word!r} must be > 0")
        return v
    return check


# The schema: directive -> (field name, parser of the argument words, may repeat)
_GLOBAL: dict[str, tuple[str, Callable[[list[str]], object], bool]] = {
    "workers": ("workers", _one(_int_range(0, 256)), False),
    "mode": ("mode", _one(_choice(MODES)), False),
    "splice-min": ("splice_min", _one(_int_range(0, 1 << 30)), False),
    "pipe-size": ("pipe_size", _one(_int_range(4096, 1 << 30)), False),
    "pipe-cap": ("pipe_cap", _one(_int_range(0, 1 << 20)), False),
    "pipe-idle": ("pipe_idle", _one(parse_duration), False),
    "drain-timeout": ("drain_timeout", _one(parse_duration), False),
    "accel-check": ("accel_check", _one(lambda w: _choice(("on", "off"))(w) == "on"), False),
}
_SERVICE: dict[str, tuple[str, Callable[[list[str]], object], bool]] = {
    "listen": ("listen", _one(parse_endpoint), False),
    "backend": ("backends", _one(parse_endpoint), True),
    "balance": ("balance", _one(_choice(BALANCE)), False),
    "connect-timeout": ("connect_timeout", _one(_positive(parse_duration)), False),
    "idle-timeout": ("idle_timeout", _one(_positive(parse_duration)), False),
    "maxconn": ("maxconn", _one(_int_range(1, 1 << 24)), False),
    "check": ("check", _parse_check, False),
    "retries": ("retries", _one(_int_range(0, 10)), False),
}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def parse(text: str, source: str = "<string>") -> ProxyConfig:
    """Parse and validate a whole config; raises ConfigError(where="file:line")."""
    glob: dict[str, Any] = {}
    services: list[tuple[int, str, dict[str, Any]]] = []
    section: dict[str, Any] | None = None
    schema: dict | None = None

    for lineno, raw in enumerate(text.splitlines(), 1):
        where = f"{source}:{lineno}"
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        words = line.split()
        if not raw[0].isspace():  # a section header
            if words[0] == "global" and len(words) == 1:
                if glob:
                    raise ConfigError("a second `global` section", where=where)
                section, schema = glob, _GLOBAL
            elif words[0] == "service":
                if len(words) != 2 or not _NAME_RE.match(words[1]):
                    raise ConfigError("`service NAME` with NAME of lowercase letters, digits, "
                                      "'-', '_', '.'", where=where)
                if any(n == words[1] for _, n, _ in services):
                    raise ConfigError(f"service {words[1]!r} is defined twice", where=where)
                section, schema = {}, _SERVICE
                services.append((lineno, words[1], section))
            else:
                raise ConfigError(f"unknown section {words[0]!r} (global, service NAME); "
                                  "directives must be indented", where=where)
            continue
        if section is None or schema is None:
            raise ConfigError("directive outside a section", where=where)
        key, args = words[0], words[1:]
        if key not in schema:
            raise ConfigError(f"unknown directive {key!r}; expected one of "
                              f"{', '.join(sorted(schema))}", where=where)
        fname, conv, repeats = schema[key]
        try:
            value = conv(args)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}", where=where) from None
        if repeats:
            section.setdefault(fname, []).append((value, lineno))
        elif fname in section:
            raise ConfigError(f"{key} is given twice", where=where)
        else:
            section[fname] = value

    cfg = ProxyConfig(source=source, **glob)
    out: list[Service] = []
    seen_listen: dict[tuple[str, int], str] = {}
    for lineno, name, sec in services:
        where = f"{source}:{lineno}"
        if "listen" not in sec:
            raise ConfigError(f"service {name!r} has no `listen`", where=where)
        if "backends" not in sec:
            raise ConfigError(f"service {name!r} has no `backend`", where=where)
        listen = sec["listen"]
        if listen in seen_listen:
            raise ConfigError(f"service {name!r} listens on {listen[0]}:{listen[1]} like "
                              f"service {seen_listen[listen]!r}", where=where)
        seen_listen[listen] = name
        backends = []
        for (ep, bl) in sec.pop("backends"):
            if ep in backends:
                raise ConfigError(f"backend {ep[0]}:{ep[1]} listed twice", where=f"{source}:{bl}")
            backends.append(ep)
        out.append(Service(name=name, backends=tuple(backends), **sec))
    if not out:
        raise ConfigError("no `service` section: nothing to proxy", where=f"{source}:1")
    return replace(cfg, services=tuple(out))


def load(path: str) -> ProxyConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(e.strerror or str(e), where=path, errno=e.errno) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason})", where=path) from None
    return parse(text, source=path)


def to_dict(cfg: ProxyConfig) -> dict:
    return {
        "source": cfg.source, "workers": cfg.worker_count(), "mode": cfg.mode,
        "splice_min": cfg.splice_min, "pipe_size": cfg.pipe_size, "pipe_cap": cfg.pipe_cap,
        "pipe_idle": cfg.pipe_idle, "drain_timeout": cfg.drain_timeout,
        "accel_check": cfg.accel_check,
        "services": [{"name": s.name, "listen": f"{s.listen[0]}:{s.listen[1]}",
                      "backends": [f"{h}:{p}" for h, p in s.backends], "balance": s.balance,
                      "connect_timeout": s.connect_timeout, "idle_timeout": s.idle_timeout,
                      "maxconn": s.maxconn, "retries": s.retries,
                      "check": None if s.check is None else vars(s.check)}
                     for s in cfg.services],
    }


def from_program(raw: bytes, base: ProxyConfig) -> ProxyConfig:
    """The services a node agent published ({name: {"listen": "IP:PORT", "backends":
    ["IP:PORT", ...]}}, JSON) on `base`'s settings; each service health-checks its
    backends, as the demo's do. Raises ConfigError naming the service."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"not JSON: {e}", where="program") from None
    if not isinstance(doc, dict):
        raise ConfigError("expected an object of services", where="program")
    services = []
    for name, svc in sorted(doc.items()):
        where = f"program: service {name}"
        if not _NAME_RE.match(name) or not isinstance(svc, dict):
            raise ConfigError("malformed service", where=where)
        try:
            listen = parse_endpoint(str(svc.get("listen")))
            backends = tuple(parse_endpoint(str(b)) for b in svc.get("backends") or ())
        except ValueError as e:
            raise ConfigError(str(e), where=where) from None
        services.append(Service(name=name, listen=listen, backends=backends,
                                check=HealthCheck(interval=1.0, timeout=0.5, fall=2, rise=1)))
    return replace(base, services=tuple(services), source="program")
