"""`fastpath cni install --dir DIR`: the plugin file a runtime execs.

A runtime runs `<dir>/<type>` with a bare environment, so the file must find fastpath by
itself. Two launchers, same protocol (fastpath.cni.wire):

- python: a three-line script with the interpreter that has fastpath installed as its
  absolute shebang, started with -I -S: isolated (no PYTHON* variables, no user site, no
  script dir on sys.path) and without `site`, which saves a few ms of the interpreter start. The
  script puts the directory holding the `fastpath` package on sys.path; the client adds
  site-packages itself only when it must do the work in-process (no agent).
- native: native_client.c compiled here with the node's C compiler (static when the C
  library allows), talking to the agent and exec'ing the python launcher (installed next to
  it as `<name>-python`) whenever there is no agent. An interpreter start is ~12 ms idle
  and ~25 ms under load on the 2-CPU VM we measure on; the native client starts in ~1 ms,
  as a Go plugin does.

`auto` (the default) installs the native client when a compiler is there, else python.
Files are written beside the target and renamed into place: a runtime never execs a half
written plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import fastpath
from fastpath.errors import KernelError, MissingDependency, UsageError
from fastpath.kernel.files import atomic_write

LAUNCHER = """#!{python} -IS
# fastpath CNI plugin launcher, written by `fastpath cni install`.
import sys
sys.path.insert(0, {pkgroot!r})
from fastpath.cni.client import entry
entry()
"""
NATIVE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native_client.c")
COMPILERS = ("cc", "gcc", "clang")


def launcher_text(python: str | None = None) -> str:
    python = os.path.abspath(python or sys.executable)
    # The venv's own bin/python (not the interpreter it links to) keeps site on the venv.
    venv_python = os.path.join(sys.prefix, "bin", "python3")
    if python == os.path.realpath(python) and os.path.exists(venv_python):
        python = venv_python
    pkgroot = os.path.dirname(os.path.dirname(os.path.abspath(fastpath.__file__)))
    return LAUNCHER.format(python=python, pkgroot=pkgroot)


def _write_atomic(path: str, text: str) -> None:
    try:
        atomic_write(path, text, mode=0o755)
    except OSError as e:
        raise KernelError.from_oserror(f"install {path}", e) from e


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def compile_native(out: str, fallback: str) -> None:
    """Build the native client into `out`, exec'ing `fallback` when there is no agent."""
    cc = next((shutil.which(c) for c in COMPILERS if shutil.which(c)), None)
    if cc is None:
        raise MissingDependency("no C compiler (cc, gcc, clang) for the native CNI client",
                                hint="install gcc, or use --launcher python")
    if '"' in fallback or "\\" in fallback:
        raise UsageError(f"cannot embed the path {fallback!r} in the native client")
    tmp = f"{out}.fastpath-tmp"
    base = [cc, "-O2", "-Wall", f'-DFALLBACK="{fallback}"', "-o", tmp, NATIVE_SOURCE]
    err = ""
    for extra in (["-static"], []):  # static: no dynamic loader at each exec
        p = subprocess.run(base[:1] + extra + base[1:], capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            os.chmod(tmp, 0o755)
            os.replace(tmp, out)
            return
        err = p.stderr.strip()
    _unlink(tmp)
    raise MissingDependency(f"compiling the native CNI client failed: {err.splitlines()[-1] if err else '?'}",
                            op=f"{cc} {NATIVE_SOURCE}", hint="use --launcher python")


def install(directory: str, name: str = "fastpath", launcher: str = "python") -> str:
    """Install the plugin as `<directory>/<name>`; returns its path."""
    return install_report(directory, name, launcher)["installed"]


def install_report(directory: str, name: str = "fastpath", launcher: str = "auto") -> dict:
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"invalid plugin name {name!r}")
    if launcher not in ("auto", "native", "python"):
        raise UsageError(f"unknown launcher {launcher!r}: auto, native or python")
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise UsageError(f"{directory} is not a directory",
                         hint="create the runtime's plugin directory first")
    path = os.path.join(directory, name)
    if launcher == "python":
        _write_atomic(path, launcher_text())
        return {"installed": path, "launcher": "python"}
    fallback = os.path.join(directory, f"{name}-python")
    _write_atomic(fallback, launcher_text())
    try:
        compile_native(path, fallback)
    except MissingDependency:
        if launcher == "native":
            raise
        _write_atomic(path, launcher_text())
        _unlink(fallback)
        return {"installed": path, "launcher": "python"}
    return {"installed": path, "launcher": "native", "fallback": fallback}
