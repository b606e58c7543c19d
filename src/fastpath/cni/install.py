"""`fastpath cni install --dir DIR`: the plugin file a runtime execs.

A runtime runs `<dir>/<type>` with a bare environment, so the file must find fastpath by
itself. It is a three-line Python script with the interpreter that has fastpath installed
as its absolute shebang, started with -I -S: isolated (no PYTHON* variables, no user
site, no script dir on sys.path) and without `site`, which alone costs ~5 ms of
the ~15 ms interpreter start here. The script puts the directory that holds the
`fastpath` package on sys.path; the client adds site-packages itself only when it has to
do the work in-process (no agent).
"""

from __future__ import annotations

import os
import sys

from fastpath.errors import KernelError, UsageError

LAUNCHER = """#!{python} -IS
# fastpath CNI plugin launcher, written by `fastpath cni install`.
import sys
sys.path.insert(0, {pkgroot!r})
from fastpath.cni.client import entry
entry()
"""


def launcher_text(python: str | None = None) -> str:
    import fastpath
    python = os.path.abspath(python or sys.executable)
    # The venv's own bin/python (not the interpreter it links to) keeps sys.prefix on the venv.
    venv_python = os.path.join(sys.prefix, "bin", "python3")
    if python == os.path.realpath(python) and os.path.exists(venv_python):
        python = venv_python
    pkgroot = os.path.dirname(os.path.dirname(os.path.abspath(fastpath.__file__)))
    return LAUNCHER.format(python=python, pkgroot=pkgroot)


def install(directory: str, name: str = "fastpath") -> str:
    if not name or "/" in name:
        raise UsageError(f"invalid plugin name {name!r}")
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise UsageError(f"{directory} is not a directory",
                         hint="create the runtime's plugin directory first")
    path = os.path.join(directory, name)
    tmp = f"{path}.fastpath-tmp"
    try:
        with open(tmp, "w") as f:
            f.write(launcher_text())
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)  # atomic: a runtime never execs a half-written plugin
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise KernelError.from_oserror(f"install {path}", e) from e
    return path
