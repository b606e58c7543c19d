"""Which kernel features the node proxy uses, probed for `fastpath doctor`.

- splice(2) between a TCP socket and a pipe: every supported kernel has it; where a
  socket type refuses (EINVAL before any byte), forward.py copies instead.
- F_SETPIPE_SZ: the pool asks for `pipe-size` (default 256 KiB). Root may go up to
  /proc/sys/fs/pipe-max-size; a refusal is tolerated and the pipe keeps 64 KiB.
"""

from __future__ import annotations

import errno
import fcntl
import os

from fastpath import features as F

MECH = "proxy"
PIPE_MAX_SIZE = "/proc/sys/fs/pipe-max-size"


def findings() -> list[F.Finding]:
    return [_pipe_size()]


def _pipe_size() -> F.Finding:
    name = "F_SETPIPE_SZ maximum"
    try:
        with open(PIPE_MAX_SIZE) as f:
            limit = int(f.read())
    except OSError as e:
        limit, why = 0, errno.errorcode.get(e.errno or 0, str(e))
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        got = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, limit or 1 << 20)
    except OSError as e:
        return F.fallback(name, MECH, f"pipe-max-size {limit or why}, F_SETPIPE_SZ "
                                      f"{errno.errorcode.get(e.errno or 0, e.errno)}",
                          "pooled pipes keep the default 64 KiB")
    finally:
        os.close(r)
        os.close(w)
    return F.used(name, MECH, f"pipe-max-size {limit}, a pipe grew to {got} bytes")
