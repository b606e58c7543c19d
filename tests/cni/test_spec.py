"""CNI environment parsing and the mapping of failures to the spec's error codes."""

import errno

import pytest

from fastpath.cni import spec
from fastpath.cni.delegate import DelegateError
from fastpath.cni.spec import CniError, error_from_exception, parse_env
from fastpath.errors import (
    AlreadyExists,
    ConfigError,
    FastpathError,
    KernelError,
    MissingDependency,
    NotFound,
    UsageError,
)
from fastpath.state import StateLocked

ADD = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin:/usr/lib/cni"}


def test_add_env_parsed():
    env = parse_env(ADD)
    assert (env.command, env.container_id, env.netns, env.ifname) == ("ADD", "abc123", "/run/netns/x", "eth0")
    assert env.path == ("/opt/cni/bin", "/usr/lib/cni")
    assert env.as_environ()["CNI_PATH"] == "/opt/cni/bin:/usr/lib/cni"


@pytest.mark.parametrize("command,missing", [
    ("ADD", "CNI_CONTAINERID"), ("ADD", "CNI_NETNS"), ("ADD", "CNI_IFNAME"),
    ("CHECK", "CNI_NETNS"), ("DEL", "CNI_CONTAINERID"), ("DEL", "CNI_IFNAME")])
def test_required_vars(command, missing):
    env = {**ADD, "CNI_COMMAND": command}
    del env[missing]
    with pytest.raises(CniError) as ei:
        parse_env(env)
    assert ei.value.code == spec.INVALID_ENV and missing in ei.value.msg


def test_del_without_netns_is_valid():
    env = {**ADD, "CNI_COMMAND": "DEL"}
    del env["CNI_NETNS"]
    assert parse_env(env).netns == ""


@pytest.mark.parametrize("command", ["STATUS", "GC", "VERSION"])
def test_commands_without_container(command):
    assert parse_env({"CNI_COMMAND": command}).command == command


@pytest.mark.parametrize("var,value", [
    ("CNI_COMMAND", "FROB"), ("CNI_COMMAND", ""), ("CNI_CONTAINERID", "a b"),
    ("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "a" * 16), ("CNI_IFNAME", "et/h0"),
    ("CNI_NETNS", "relative/path"), ("CNI_ARGS", "novalue")])
def test_invalid_env(var, value):
    with pytest.raises(CniError) as ei:
        parse_env({**ADD, var: value})
    assert ei.value.code == spec.INVALID_ENV


def test_cni_args():
    assert spec.parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web-0") == {
        "IgnoreUnknown": "1", "K8S_POD_NAME": "web-0"}
    assert spec.parse_cni_args("") == {}


def test_versions():
    assert spec.check_version("1.1.0") == "1.1.0"
    assert spec.check_version("0.4.0") == "0.4.0"
    with pytest.raises(CniError) as ei:
        spec.check_version("0.3.1")
    assert ei.value.code == spec.INCOMPATIBLE_VERSION
    with pytest.raises(CniError) as ei:
        spec.check_version("one")
    assert ei.value.code == spec.DECODE_FAILURE
    assert spec.version_document()["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize("exc,code", [
    (StateLocked("locked"), spec.TRY_AGAIN_LATER),
    (NotFound("pod x"), 102),
    (AlreadyExists("x"), 105),
    (ConfigError("bad", where="x"), 103),
    (UsageError("bad"), 101),
    (MissingDependency("no iptables"), 106),
    (KernelError("Operation not permitted", op="add link", errno=errno.EPERM), 107),
    (DelegateError("host-local ADD: boom"), 108),
    (FastpathError("other"), 100),
    (FileNotFoundError(2, "No such file"), spec.IO_FAILURE),
    (RuntimeError("bug"), 100),
])
def test_error_mapping(exc, code):
    err = error_from_exception(exc)
    assert err.code == code
    doc = err.document("1.0.0")
    assert doc["cniVersion"] == "1.0.0" and doc["code"] == code and doc["msg"]
    assert code < 100 or code in spec.FASTPATH_LABELS


def test_pool_exhausted_maps_by_name():
    class PoolExhausted(FastpathError):
        pass
    assert error_from_exception(PoolExhausted("full")).code == 104


def test_kernel_error_details_carry_errno():
    err = error_from_exception(KernelError("File exists", op="add route", errno=errno.EEXIST))
    assert "add route" in err.details and "EEXIST" in err.details


def test_cni_error_passes_through():
    e = CniError(7, "invalid network configuration: mtu", "70000")
    assert error_from_exception(e) is e
    assert e.document() == {"cniVersion": "1.1.0", "code": 7,
                            "msg": "invalid network configuration: mtu", "details": "70000"}


def test_request_environment_is_scoped(monkeypatch):
    """In the agent, a request's FASTPATH_* (and the config's instance/stateDir) hold for
    that request only."""
    import os

    from fastpath.cni import plugin
    from fastpath.cni.config import parse
    monkeypatch.setenv("FASTPATH_INSTANCE", "agent")
    monkeypatch.delenv("FASTPATH_PODNET_FAIL_AT", raising=False)
    conf = parse('{"cniVersion":"1.1.0","name":"n","type":"fastpath","podCIDR":"10.1.0.0/24",'
                 '"instance":"conf1","stateDir":"/tmp/x"}')
    with plugin._scoped_environ({"FASTPATH_PODNET_FAIL_AT": "veth", "FASTPATH_INSTANCE": "env1"}, conf):
        assert os.environ["FASTPATH_INSTANCE"] == "conf1"
        assert os.environ["FASTPATH_STATE_DIR"] == "/tmp/x"
        assert os.environ["FASTPATH_PODNET_FAIL_AT"] == "veth"
    assert os.environ["FASTPATH_INSTANCE"] == "agent"
    assert "FASTPATH_PODNET_FAIL_AT" not in os.environ
