def test_help_and_version(fastpath):
    assert "fastpath" in fastpath("--version").stdout
    p = fastpath("--help")
    assert "COMMAND" in p.stdout


def test_no_command_is_usage_error(fastpath):
    p = fastpath(check=False)
    assert p.returncode == 2
