"""BIRD's control socket: the protocol birdc speaks, and parsers for the replies we read.

The protocol (BIRD 2 doc/prog "CLI", sysdep/unix/main.c): a Unix stream socket; BIRD
greets with `0001 BIRD <version> ready.`; each command is one line; each reply line is
`NNNN-text` (more lines follow), ` text` (continues the previous code) or `NNNN text`
(last line). Codes 0xxx end a successful command, 1xxx are table rows, 2xxx table
headers, 8xxx runtime errors and 9xxx parse errors (both final).

The parsers are pure (unit-tested on captured replies in tests/bgp/data); `BirdControl`
is the thin socket edge. One connection per call site: BIRD serves many clients, and a
fresh connection never inherits a half-read reply.
"""

from __future__ import annotations

import errno
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime

from fastpath.errors import FastpathError, KernelError

# Timeouts: BIRD answers `show protocols all` for 16 peers in well under 10 ms; a socket
# that does not answer in 5 s belongs to a BIRD that is stopped (SIGSTOP) or wedged.
CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 5.0


class BirdError(FastpathError):
    """BIRD answered a command with an error (8xxx runtime, 9xxx parse); msg is BIRD's."""

    def __init__(self, msg: str, *, code: int, op: str | None = None) -> None:
        super().__init__(msg, op=op)
        self.code = code


@dataclass
class Reply:
    """One command's reply: (code, text) per line, continuation lines carrying the code
    of the line they continue."""

    lines: list[tuple[int, str]]

    @property
    def code(self) -> int:
        return self.lines[-1][0] if self.lines else 0

    @property
    def ok(self) -> bool:
        return self.code < 8000

    def text(self) -> str:
        return "\n".join(t for _, t in self.lines if t)

    def message(self) -> str:
        """The final line's text: BIRD's own error message when not ok."""
        return self.lines[-1][1] if self.lines else ""


def parse_lines(raw: list[str]) -> Reply:
    """Turn raw socket lines (without newlines) into a Reply. Raises ValueError on a line
    that is neither coded nor a continuation."""
    out: list[tuple[int, str]] = []
    code = 0
    for line in raw:
        if len(line) >= 5 and line[:4].isdigit() and line[4] in "- ":
            code = int(line[:4])
            out.append((code, line[5:]))
        elif line.startswith(" "):
            out.append((code, line[1:]))
        elif line == "":
            continue
        else:
            raise ValueError(f"not a BIRD reply line: {line!r}")
    return Reply(out)


def is_last(line: str) -> bool:
    return len(line) >= 5 and line[:4].isdigit() and line[4] == " "


# ---------------------------------------------------------------- show protocols all

@dataclass
class Protocol:
    """One protocol of `show protocols all`. For BGP sessions `bgp_state` is BIRD's FSM
    state (Idle, Connect, Active, OpenSent, OpenConfirm, Established)."""

    name: str
    proto: str
    table: str
    state: str               # up, start, down, flush
    since: datetime | None
    info: str
    bgp_state: str | None = None
    neighbor_address: str | None = None
    neighbor_id: str | None = None
    last_error: str | None = None
    imported: int | None = None
    exported: int | None = None
    preferred: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def established(self) -> bool:
        return self.bgp_state == "Established"

    def to_dict(self) -> dict:
        return {"name": self.name, "proto": self.proto, "state": self.state,
                "since": self.since.isoformat(timespec="milliseconds") if self.since else None,
                "info": self.info, "bgp_state": self.bgp_state,
                "neighbor_address": self.neighbor_address, "neighbor_id": self.neighbor_id,
                "last_error": self.last_error, "imported": self.imported,
                "exported": self.exported, "preferred": self.preferred}


_SINCE_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%H:%M:%S.%f", "%H:%M:%S")
_ROUTES_RE = re.compile(r"(\d+) imported, (?:(\d+) filtered, )?(\d+) exported(?:, (\d+) preferred)?")
_ROW_RE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+"
                     r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?|\d\d:\d\d:\d\d(?:\.\d+)?|\S+)"
                     r"\s*(.*)$")


def _parse_since(text: str) -> datetime | None:
    for fmt in _SINCE_FORMATS:
        try:
            t = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if fmt.startswith("%H"):  # a time of day only: today's
            t = datetime.combine(datetime.now().date(), t.time())
        return t
    return None


def parse_protocols(reply: Reply) -> list[Protocol]:
    """Parse `show protocols` or `show protocols all` into Protocols (in BIRD's order)."""
    protos: list[Protocol] = []
    cur: Protocol | None = None
    for code, text in reply.lines:
        if code == 1002:  # the summary row of one protocol
            m = _ROW_RE.match(text.strip())
            if not m:
                raise ValueError(f"unexpected protocol row: {text!r}")
            name, proto, table, state, since, info = m.groups()
            cur = Protocol(name=name, proto=proto, table=table, state=state,
                           since=_parse_since(since), info=info.strip())
            protos.append(cur)
        elif code == 1006 and cur is not None:  # details of the current protocol
            key, sep, value = text.strip().partition(":")
            if not sep:
                continue
            key, value = key.strip(), value.strip()
            if key == "BGP state":
                cur.bgp_state = value
            elif key == "Neighbor address":
                cur.neighbor_address = value
            elif key == "Neighbor ID":
                cur.neighbor_id = value
            elif key == "Last error":
                cur.last_error = value
            elif key == "Routes":
                m = _ROUTES_RE.search(value)
                if m:
                    cur.imported = int(m.group(1))
                    cur.exported = int(m.group(3))
                    cur.preferred = int(m.group(4)) if m.group(4) else None
            else:
                cur.extra.setdefault(key, value)
    if not reply.ok:
        raise BirdError(reply.message(), code=reply.code, op="show protocols")
    return protos


# ---------------------------------------------------------------- the socket edge

class BirdControl:
    """A connection to one BIRD's control socket. Use as a context manager."""

    def __init__(self, path: str, timeout: float = REPLY_TIMEOUT) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buf = b""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(path)
            sock.settimeout(timeout)
        except OSError as e:
            sock.close()
            hint = ("BIRD is not running" if e.errno in (errno.ENOENT, errno.ECONNREFUSED)
                    else None)
            raise KernelError.from_oserror(f"connect to BIRD control socket {path}", e,
                                           hint=hint) from e
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.greeting = self._read_reply("greeting")

    def _readline(self, op: str) -> str:
        assert self._sock is not None, "closed"
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as e:
                raise KernelError("BIRD did not answer", op=op, errno=errno.ETIMEDOUT) from e
            except OSError as e:
                raise KernelError.from_oserror(op, e) from e
            if not chunk:
                raise KernelError("BIRD closed the control connection", op=op,
                                  errno=errno.ECONNRESET)
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")

    def _read_reply(self, op: str) -> Reply:
        raw = []
        while True:
            line = self._readline(op)
            raw.append(line)
            if is_last(line):
                return parse_lines(raw)

    def command(self, cmd: str) -> Reply:
        """Send one command and return its whole reply (errors are in the Reply)."""
        if "\n" in cmd:
            raise ValueError("one line per command")
        assert self._sock is not None, "closed"
        op = f"birdc -s {self.path} {cmd}"
        try:
            self._sock.sendall(cmd.encode() + b"\n")
        except OSError as e:
            raise KernelError.from_oserror(op, e) from e
        return self._read_reply(op)

    def check(self, cmd: str) -> Reply:
        """command(), raising BirdError with BIRD's own message when it refused."""
        reply = self.command(cmd)
        if not reply.ok:
            raise BirdError(reply.message(), code=reply.code, op=f"bird: {cmd}")
        return reply

    def protocols(self) -> list[Protocol]:
        return parse_protocols(self.check("show protocols all"))

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> "BirdControl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
