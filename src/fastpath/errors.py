"""Every failure fastpath reports is a FastpathError: what was being done, the errno when
the kernel said no, and one line a user can act on.

The CLI (and the CNI plugin's error JSON) is the one boundary where these become text;
below it, code raises and never prints.
"""

from __future__ import annotations

import errno as _errno
import os


class FastpathError(Exception):
    """Base of every fastpath error.

    `op` names the operation ("create netns fp-node1", "attach sockops to /sys/fs/cgroup/fp-accel"),
    `errno` is the kernel's errno when there is one, `hint` a short what-to-do.
    """

    exit_code = 1

    def __init__(self, msg: str, *, op: str | None = None, errno: int | None = None,
                 hint: str | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.op = op
        self.errno = errno
        self.hint = hint

    def __str__(self) -> str:
        line = f"{self.op}: {self.msg}" if self.op else self.msg
        if self.errno is not None:
            name = _errno.errorcode.get(self.errno, str(self.errno))
            if name not in line:
                line += f" [{name}]"
        if self.hint:
            line += f" ({self.hint})"
        return line

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "msg": self.msg, "op": self.op,
                "errno": self.errno, "hint": self.hint, "line": str(self)}


class UsageError(FastpathError):
    """Bad input from the user: unknown names, malformed config, conflicting options."""

    exit_code = 2


class NotFound(UsageError):
    """A named thing (pod, node, service, cgroup) does not exist."""


class AlreadyExists(UsageError):
    """A named thing exists already and the command would not change it."""


class ConfigError(UsageError):
    """A config file or document is malformed; `where` says where (file:line or a JSON path)."""

    def __init__(self, msg: str, *, where: str | None = None, **kw) -> None:
        super().__init__(f"{where}: {msg}" if where else msg, **kw)
        self.where = where


class CommandNotRunnable(FastpathError):
    """A command to run (`fastpath exec POD -- CMD`) could not be executed. Exit codes as
    the shells, env(1) and nsenter(1) give them: 127 when it was not found, 126 when it was
    found but could not be executed."""

    def __init__(self, msg: str, *, not_found: bool, **kw) -> None:
        super().__init__(msg, **kw)
        self.exit_code = 127 if not_found else 126


class MissingDependency(FastpathError):
    """A program or kernel feature fastpath needs is not on this machine."""


class KernelError(FastpathError):
    """The kernel refused an operation; carries errno and the operation."""

    @classmethod
    def from_oserror(cls, op: str, e: OSError, hint: str | None = None) -> "KernelError":
        err = cls(e.strerror or os.strerror(e.errno or 0), op=op, errno=e.errno, hint=hint)
        err.__cause__ = e
        return err


class KernelUnsupported(KernelError):
    """The running kernel lacks what was asked for: a feature probe or the redirect
    self-test said so, and the message names the feature or the check."""


def kernel_call(op: str, fn, *args, hint: str | None = None, **kwargs):
    """Run fn(*args); an OSError becomes a KernelError naming `op`."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        raise KernelError.from_oserror(op, e, hint) from e
