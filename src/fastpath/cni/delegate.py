"""Delegated IPAM: exec the plugin named by `ipam.type` as SPEC.md "Delegated plugins" says.

- the binary is the first `ipam.type` found in CNI_PATH;
- it gets the same CNI_* environment (CNI_COMMAND set to ours) and, on stdin, the
  network config we received;
- ADD returns a result; if our ADD then fails, we call the IPAM plugin's DEL so nothing
  stays allocated; DEL is passed on even when our side found nothing to remove.

Version: Debian's plugins (1.1.1) speak at most 1.0.0, and answer a 1.1.0 config with
error 1 ("incompatible CNI versions"). We then retry once with the config rewritten to
the highest version both sides speak (the answer is normalised to 1.1.0 either way).
"""

from __future__ import annotations

import json
import os
import subprocess

from fastpath.cni import result as cniresult
from fastpath.cni.spec import INCOMPATIBLE_VERSION, Env, version_tuple
from fastpath.errors import FastpathError

TIMEOUT = 30.0


class DelegateError(FastpathError):
    """The delegated plugin failed; carries its CNI error code and message."""

    def __init__(self, msg: str, *, code: int | None = None, details: str = "", **kw) -> None:
        super().__init__(msg, **kw)
        self.code = code
        self.details = details


def find_plugin(ptype: str, cni_path: tuple[str, ...]) -> str:
    for d in cni_path:
        p = os.path.join(d, ptype)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise DelegateError(f"IPAM plugin {ptype!r} not found in CNI_PATH={':'.join(cni_path) or '(empty)'}",
                        op=f"find plugin {ptype}", hint="install it or fix CNI_PATH")


def _exec(binary: str, env: Env, command: str, conf: dict) -> tuple[int, bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    sub = Env(command, env.container_id, env.netns, env.ifname, env.args, env.path)
    environ.update(sub.as_environ())
    try:
        p = subprocess.run([binary], input=json.dumps(conf).encode(), env=environ,
                           capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DelegateError(f"{os.path.basename(binary)} {command} did not finish in {TIMEOUT:.0f}s",
                            op=f"exec {binary}") from None
    except OSError as e:
        raise DelegateError(str(e), op=f"exec {binary}", errno=e.errno) from e
    return p.returncode, p.stdout


def _error_of(out: bytes) -> dict:
    try:
        doc = json.loads(out)
        return doc if isinstance(doc, dict) else {}
    except ValueError:
        return {}


def _best_common(binary: str, env: Env, conf: dict) -> str | None:
    rc, out = _exec(binary, env, "VERSION", {"cniVersion": conf.get("cniVersion", "1.0.0")})
    if rc != 0:
        return None
    try:
        theirs = json.loads(out).get("supportedVersions") or []
    except (ValueError, AttributeError):
        return None
    ours = version_tuple(conf["cniVersion"])
    common = [v for v in theirs if isinstance(v, str) and v.count(".") == 2
              and (0, 4, 0) <= version_tuple(v) <= ours]
    return max(common, key=version_tuple) if common else None


def call(command: str, env: Env, conf: dict) -> dict | None:
    """Run the IPAM plugin's `command`; ADD returns its result in the 1.1.0 form."""
    ptype = conf["ipam"]["type"]
    binary = find_plugin(ptype, env.path)
    rc, out = _exec(binary, env, command, conf)
    if rc != 0 and _error_of(out).get("code") == INCOMPATIBLE_VERSION:
        version = _best_common(binary, env, conf)
        if version is not None:
            conf = {**conf, "cniVersion": version}
            conf.pop("prevResult", None)  # its layout is tied to the version we drop
            rc, out = _exec(binary, env, command, conf)
    if rc != 0:
        err = _error_of(out)
        msg = err.get("msg") or out.decode(errors="replace").strip() or f"exit {rc}"
        details = err.get("details", "")
        raise DelegateError(f"{ptype} {command}: {msg}" + (f": {details}" if details else ""),
                            code=err.get("code"), details=details, op=f"delegate {command} to {ptype}")
    if command != "ADD":
        return None
    try:
        return cniresult.normalize(json.loads(out))
    except (ValueError, AttributeError) as e:
        raise DelegateError(f"{ptype} ADD returned no valid result: {e}",
                            op=f"delegate ADD to {ptype}") from None
