import errno

import pytest

from fastpath.errors import ConfigError, FastpathError, KernelError, NotFound, kernel_call


def test_kernel_error_carries_op_and_errno():
    with pytest.raises(KernelError) as ei:
        kernel_call("open /nonexistent/x", open, "/nonexistent/x")
    e = ei.value
    assert e.errno == errno.ENOENT
    assert e.op == "open /nonexistent/x"
    assert str(e).startswith("open /nonexistent/x: No such file or directory")
    assert "[ENOENT]" in str(e)
    assert isinstance(e.__cause__, OSError)


def test_usage_errors_exit_2_and_serialize():
    e = NotFound("no pod named web", op="pod del")
    assert e.exit_code == 2 and isinstance(e, FastpathError)
    d = e.to_dict()
    assert d["error"] == "NotFound" and d["line"] == "pod del: no pod named web"


def test_config_error_names_where():
    e = ConfigError("expected a port number", where="proxy.toml:7")
    assert str(e) == "proxy.toml:7: expected a port number"
