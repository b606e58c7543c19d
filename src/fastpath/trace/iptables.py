"""iptables rules as data: parse `iptables-save` output and decide what a chain does with
one packet. Pure: no I/O here; the collection edge feeds it the text.

Kernel facts this relies on (iptables(8), iptables-extensions(8)):
- A chain is walked rule by rule; the first rule whose every match holds and whose target
  is terminal (ACCEPT, DROP, REJECT, a NAT target in the nat table) decides. A jump (-j
  CHAIN) walks CHAIN and comes back unless CHAIN decided; RETURN goes back to the caller;
  a goto (-g CHAIN) returns to the caller's caller. Falling off a built-in chain applies
  its policy; falling off a user chain is an implicit RETURN.
- Non-terminal targets (LOG, MARK, CT, TRACE, ...) do not decide: the walk goes on.
- The first packet of a flow is conntrack state NEW, so `--ctstate NEW` matches and
  `--ctstate ESTABLISHED,RELATED` does not: a trace explains a flow's first packet.

Decision: a match this module cannot evaluate (e.g. `-m set`, `-m mark`) makes the rule
not match, and the verdict carries a note naming it, so an answer is never silently
guessed.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

from fastpath.errors import ConfigError

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}

# Which tables a hook walks, in netfilter priority order (raw -300, mangle -150,
# dnat -100, filter 0, security 50, snat 100).
HOOK_TABLES = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}

TERMINAL = {"ACCEPT", "DROP", "REJECT"}
NAT_TARGETS = {"MASQUERADE", "SNAT", "DNAT", "REDIRECT", "NETMAP"}
DROPPING = {"DROP", "REJECT"}

PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132}
ICMP_TYPES = {"echo-request": 8, "echo-reply": 0, "any": None}

# Match modules whose options this module evaluates (comment only annotates).
_SUPPORTED_MODULES = {"comment", "tcp", "udp", "icmp", "multiport", "conntrack", "state",
                      "iprange", "devgroup"}


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow, as the hooks see it. `sport` None: not known (an
    ephemeral port)."""
    src: str
    dst: str
    proto: str = "tcp"          # tcp, udp, icmp
    dport: int | None = None
    sport: int | None = None
    in_iface: str | None = None
    out_iface: str | None = None
    icmp_type: int | None = 8   # echo-request, for proto icmp
    ctstate: str = "NEW"
    in_group: int | None = None   # interface groups (IFLA_GROUP), for -m devgroup
    out_group: int | None = None


@dataclass
class Match:
    """One condition of a rule: `option` (e.g. "-i", "--dport"), its `value`, negated."""
    option: str
    value: str
    negated: bool = False


@dataclass
class Rule:
    table: str
    chain: str
    index: int                       # 1-based position in its chain, as `iptables -L --line-numbers`
    text: str                        # the -A line as iptables-save printed it
    matches: list[Match] = field(default_factory=list)
    target: str | None = None        # ACCEPT, DROP, a chain name, LOG, ... or None (no -j)
    goto: bool = False               # -g instead of -j
    unsupported: list[str] = field(default_factory=list)  # matches we cannot evaluate


@dataclass
class Chain:
    name: str
    policy: str | None               # ACCEPT/DROP for built-ins, None for user chains
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Ruleset:
    """tables -> chains; what one netns's `iptables-save` says."""
    tables: dict[str, dict[str, Chain]] = field(default_factory=dict)

    def chain(self, table: str, name: str) -> Chain | None:
        return self.tables.get(table, {}).get(name)


@dataclass
class Verdict:
    """What one hook (or one table at a hook) decided.

    `verdict` is ACCEPT, DROP, REJECT, or a NAT target name (the packet goes on, rewritten).
    `rule` is the rule that decided, None when the chain policy did (`by_policy`).
    `trail` lists the rules walked into, `notes` what could not be evaluated.
    """
    verdict: str
    table: str
    chain: str
    rule: Rule | None = None
    by_policy: bool = False
    trail: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drops(self) -> bool:
        return self.verdict in DROPPING

    def explain(self) -> str:
        if self.rule is not None:
            return f"{self.table} {self.rule.chain} rule {self.rule.index}: {self.rule.text}"
        if self.by_policy:
            return f"{self.table} {self.chain} policy {self.verdict}"
        return f"{self.table} {self.chain}: no rule, {self.verdict}"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "table": self.table, "chain": self.chain,
                "rule": self.rule.text if self.rule else None,
                "rule_index": self.rule.index if self.rule else None,
                "rule_chain": self.rule.chain if self.rule else None,
                "by_policy": self.by_policy, "trail": self.trail, "notes": self.notes,
                "why": self.explain()}


# --- parsing -------------------------------------------------------------------------

def parse(text: str) -> Ruleset:
    """Parse `iptables-save` output. Raises ConfigError naming the line on malformed input."""
    rs = Ruleset()
    table: dict[str, Chain] | None = None
    table_name = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"iptables-save line {lineno}"
        if line.startswith("*"):
            table_name = line[1:]
            table = rs.tables.setdefault(table_name, {})
            continue
        if line == "COMMIT":
            table = None
            continue
        if table is None:
            raise ConfigError(f"{line!r} outside a table", where=where)
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise ConfigError(f"malformed chain line {line!r}", where=where)
            policy = None if parts[1] == "-" else parts[1]
            table.setdefault(parts[0], Chain(parts[0], policy)).policy = policy
            continue
        if line.startswith("["):  # iptables-save -c: "[pkts:bytes] -A ..."
            line = line.split("]", 1)[1].strip()
        rule = _parse_rule(table_name, line, where)
        chain = table.setdefault(rule.chain, Chain(rule.chain, None))
        rule.index = len(chain.rules) + 1
        chain.rules.append(rule)
    return rs


def _parse_rule(table: str, line: str, where: str) -> Rule:
    try:
        toks = shlex.split(line)
    except ValueError as e:
        raise ConfigError(f"cannot split {line!r}: {e}", where=where) from None
    if len(toks) < 2 or toks[0] != "-A":
        raise ConfigError(f"expected '-A CHAIN ...', got {line!r}", where=where)
    rule = Rule(table=table, chain=toks[1], index=0, text=line)
    i, negate, module = 2, False, None
    while i < len(toks):
        tok = toks[i]
        if tok == "!":
            negate, i = True, i + 1
            continue
        if tok in ("-j", "--jump", "-g", "--goto"):
            if i + 1 >= len(toks):
                raise ConfigError(f"{tok} without a target in {line!r}", where=where)
            rule.target = toks[i + 1]
            rule.goto = tok in ("-g", "--goto")
            # Target options (--to-source, --log-prefix, --reject-with ...) follow; they
            # never change whether the rule matches.
            break
        if tok in ("-m", "--match"):
            module = toks[i + 1] if i + 1 < len(toks) else ""
            if module not in _SUPPORTED_MODULES:
                rule.unsupported.append(f"-m {module}")
            i += 2
            continue
        if not tok.startswith("-"):
            raise ConfigError(f"unexpected {tok!r} in {line!r}", where=where)
        # Every option we know takes exactly one value; unknown ones are skipped up to the
        # next option (they belong to an unsupported module, already noted).
        value_parts = []
        j = i + 1
        while j < len(toks) and not toks[j].startswith("-") and toks[j] != "!":
            value_parts.append(toks[j])
            j += 1
        value = " ".join(value_parts)
        if value.startswith("! "):  # old syntax: -s ! 10.0.0.0/8
            negate, value = True, value[2:]
        opt = _canonical(tok)
        if opt in _KNOWN_OPTIONS:
            rule.matches.append(Match(opt, value, negate))
        elif opt == "--comment":
            pass
        elif opt == "--syn":
            # The first packet of a TCP flow is the SYN.
            rule.matches.append(Match("-p", "tcp", negate))
        elif module in _SUPPORTED_MODULES or module is None:
            rule.unsupported.append(tok)
        # else: an option of an unsupported module, already noted at its -m
        negate = False
        i = j
    return rule


_ALIASES = {"--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d",
            "--in-interface": "-i", "--out-interface": "-o", "--protocol": "-p",
            "--destination-port": "--dport", "--source-port": "--sport",
            "--destination-ports": "--dports", "--source-ports": "--sports",
            "--state": "--ctstate"}
_KNOWN_OPTIONS = {"-s", "-d", "-i", "-o", "-p", "--dport", "--sport", "--dports",
                  "--sports", "--ports", "--ctstate", "--icmp-type", "--src-range",
                  "--dst-range", "--src-group", "--dst-group"}


def _canonical(opt: str) -> str:
    return _ALIASES.get(opt, opt)


# --- matching ------------------------------------------------------------------------

def _iface_match(pattern: str, iface: str | None) -> bool:
    # "fp+" is a prefix wildcard (iptables(8) -i). A hook without that interface
    # (no -o at PREROUTING) cannot match it.
    if iface is None:
        return False
    if pattern.endswith("+"):
        return iface.startswith(pattern[:-1])
    return iface == pattern


def _addr_match(value: str, addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return any(ip in ipaddress.ip_network(v, strict=False) for v in value.split(","))


def _range_match(value: str, addr: str) -> bool:
    lo, _, hi = value.partition("-")
    ip = ipaddress.ip_address(addr)
    first, last = ipaddress.ip_address(lo), ipaddress.ip_address(hi or lo)
    if not (first.version == ip.version == last.version):
        return False  # an IPv4 range never matches an IPv6 packet, nor the reverse
    return first <= ip <= last  # type: ignore[operator]  # same version, checked above


def _port_match(value: str, port: int | None) -> bool | None:
    if port is None:
        return None
    for part in value.split(","):
        lo, _, hi = part.partition(":")
        lo_n = int(lo) if lo else 0
        hi_n = int(hi) if hi else (65535 if ":" in part else lo_n)
        if lo_n <= port <= hi_n:
            return True
    return False


def _proto_match(value: str, proto: str) -> bool:
    value = value.lower()
    if value in ("all", "0"):
        return True
    if value.isdigit():
        return PROTO_NUMBERS.get(proto) == int(value)
    return value == proto


def _icmp_type_match(value: str, pkt: Packet) -> bool:
    if pkt.proto != "icmp":
        return False
    if value == "any":
        return True
    head = value.split("/")[0]
    wanted = int(head) if head.isdigit() else ICMP_TYPES.get(value, -1)
    return wanted == pkt.icmp_type


def _group_match(value: str, group: int | None) -> bool:
    # xt_devgroup: (group & mask) == value, mask defaulting to all ones.
    if group is None:
        return False
    val, _, mask = value.partition("/")
    m = int(mask, 0) if mask else 0xFFFFFFFF
    return (group & m) == int(val, 0)


def match_one(m: Match, pkt: Packet) -> bool | None:
    """Whether one condition holds; None when the packet leaves it undecided (an unknown
    source port)."""
    opt, v = m.option, m.value
    r: bool | None
    if opt == "-s":
        r = _addr_match(v, pkt.src)
    elif opt == "-d":
        r = _addr_match(v, pkt.dst)
    elif opt == "--src-range":
        r = _range_match(v, pkt.src)
    elif opt == "--dst-range":
        r = _range_match(v, pkt.dst)
    elif opt == "-i":
        r = _iface_match(v, pkt.in_iface)
    elif opt == "-o":
        r = _iface_match(v, pkt.out_iface)
    elif opt == "-p":
        r = _proto_match(v, pkt.proto)
    elif opt in ("--dport", "--dports"):
        r = _port_match(v, pkt.dport)
    elif opt in ("--sport", "--sports"):
        r = _port_match(v, pkt.sport)
    elif opt == "--ports":
        a, b = _port_match(v, pkt.dport), _port_match(v, pkt.sport)
        r = True if (a or b) else (None if a is None or b is None else False)
    elif opt == "--ctstate":
        r = pkt.ctstate in v.upper().split(",")
    elif opt == "--icmp-type":
        r = _icmp_type_match(v, pkt)
    elif opt == "--src-group":
        r = _group_match(v, pkt.in_group)
    elif opt == "--dst-group":
        r = _group_match(v, pkt.out_group)
    else:  # pragma: no cover - parse() only keeps known options
        return None
    if r is None:
        return None
    return (not r) if m.negated else r


def rule_matches(rule: Rule, pkt: Packet) -> tuple[bool, str | None]:
    """(matches, note). A rule with a condition we cannot evaluate does not match; the
    note says why."""
    if rule.unsupported:
        return False, (f"{rule.table} {rule.chain} rule {rule.index} uses "
                       f"{', '.join(rule.unsupported)}, which trace cannot evaluate; "
                       f"assumed not to match")
    for m in rule.matches:
        r = match_one(m, pkt)
        if r is None:
            return False, (f"{rule.table} {rule.chain} rule {rule.index}: {m.option} "
                           f"depends on a port the packet does not fix; assumed not to match")
        if not r:
            return False, None
    return True, None


# --- evaluation ----------------------------------------------------------------------

_MAX_DEPTH = 32  # the kernel refuses loops; this only bounds a malformed input


def evaluate(rs: Ruleset, table: str, chain: str, pkt: Packet) -> Verdict:
    """Walk built-in `chain` of `table` with `pkt`; a missing table/chain accepts (the
    kernel registers no hook for a table nobody loaded)."""
    c = rs.chain(table, chain)
    if c is None:
        return Verdict("ACCEPT", table, chain, notes=[])
    trail: list[str] = []
    notes: list[str] = []
    decided = _walk(rs, table, c, pkt, trail, notes, 0)
    if isinstance(decided, tuple):
        verdict, rule = decided
        return Verdict(verdict, table, chain, rule=rule, trail=trail, notes=notes)
    # fell through, or a chain reached by -g (goto) fell through: the policy decides
    policy = c.policy or "ACCEPT"
    return Verdict(policy, table, chain, by_policy=c.policy is not None, trail=trail,
                   notes=notes)


def _walk(rs, table, chain: Chain, pkt, trail, notes, depth) -> tuple[str, Rule] | None | str:
    """Returns (verdict, rule) when a rule decided, None when the chain fell through or
    RETURNed. A goto's fall-through is reported to the caller as "GOTO-RETURN"."""
    if depth > _MAX_DEPTH:
        notes.append(f"chain nesting deeper than {_MAX_DEPTH} at {chain.name}; stopped")
        return None
    for rule in chain.rules:
        ok, note = rule_matches(rule, pkt)
        if note:
            notes.append(note)
        if not ok:
            continue
        t = rule.target
        if t is None:
            continue
        if t in TERMINAL or (table == "nat" and t in NAT_TARGETS):
            trail.append(f"{chain.name}#{rule.index}")
            return (t, rule)
        if t == "RETURN":
            trail.append(f"{chain.name}#{rule.index} RETURN")
            return None
        sub = rs.chain(table, t)
        if sub is not None:
            trail.append(f"{chain.name}#{rule.index} -> {t}")
            r = _walk(rs, table, sub, pkt, trail, notes, depth + 1)
            if isinstance(r, tuple):
                return r
            if rule.goto:
                # -g: falling off the target chain returns past this chain.
                return None
            continue
        # LOG, MARK, CT, TRACE, ...: non-terminal, go on.
    return None


def evaluate_hook(rs: Ruleset, hook: str, pkt: Packet) -> list[Verdict]:
    """Every table at `hook`, in priority order, up to the first that drops."""
    out = []
    for table in HOOK_TABLES[hook]:
        if rs.chain(table, hook) is None:
            continue
        v = evaluate(rs, table, hook, pkt)
        out.append(v)
        if v.drops:
            break
    return out
