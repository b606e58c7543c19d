import pytest

from fastpath.errors import ConfigError
from fastpath.proxy import config

GOOD = """\
# a node proxy
global
    workers 2
    mode splice
    pipe-size 1m
    pipe-idle 10s

service web
    listen 10.0.0.1:80
    balance leastconn
    backend 10.1.0.2:8080
    backend [fd00::2]:8080   # v6 too
    connect-timeout 500ms
    idle-timeout 1m
    maxconn 100
    check interval 2s timeout 1s fall 3 rise 2
service db
    listen 127.0.0.1:5432
    backend 10.1.0.3:5432
"""


def test_good_config():
    cfg = config.parse(GOOD, "p.cfg")
    assert cfg.workers == 2 and cfg.mode == "splice" and cfg.pipe_size == 1 << 20
    assert cfg.pipe_idle == 10
    web, db = cfg.services
    assert web.listen == ("10.0.0.1", 80) and web.balance == "leastconn"
    assert web.backends == (("10.1.0.2", 8080), ("fd00::2", 8080))
    assert web.connect_timeout == 0.5 and web.idle_timeout == 60 and web.maxconn == 100
    assert web.check == config.HealthCheck(2.0, 1.0, 3, 2)
    assert db.check is None and db.balance == "roundrobin"
    assert config.to_dict(cfg)["services"][1]["listen"] == "127.0.0.1:5432"


@pytest.mark.parametrize("text,line,reason", [
    ("global\n    mode fast\nservice a\n    listen 1.2.3.4:1\n    backend 1.2.3.4:2\n", 2,
     "'fast' is not one of splice, copy, auto"),
    ("service a\n    listen 1.2.3.4:1\n    backends 1.2.3.4:2\n", 3, "unknown directive 'backends'"),
    ("service a\n    listen 1.2.3.4:99999\n", 2, "port '99999' is not in 1..65535"),
    ("service a\n    listen host:80\n", 2, "'host' is not an IP address"),
    ("service a\n    listen 1.2.3.4:1\n", 1, "has no `backend`"),
    ("service a\n    backend 1.2.3.4:1\n", 1, "has no `listen`"),
    ("service a\n    listen 1.2.3.4:1\n    listen 1.2.3.4:2\n", 3, "listen is given twice"),
    ("service a\n    listen 1.2.3.4:1\n    backend 1.1.1.1:1\n    backend 1.1.1.1:1\n", 4,
     "listed twice"),
    ("service a\n    listen 1.2.3.4:1\n    backend 1.1.1.1:1\n"
     "service b\n    listen 1.2.3.4:1\n    backend 1.1.1.1:1\n", 4, "like service 'a'"),
    ("service a\n    listen 1.2.3.4:1\n    backend 1.1.1.1:1\nservice a\n", 4, "defined twice"),
    ("    listen 1.2.3.4:1\n", 1, "outside a section"),
    ("frontend x\n", 1, "unknown section 'frontend'"),
    ("service A!\n", 1, "`service NAME`"),
    ("service a\n    listen 1.2.3.4:1\n    idle-timeout 5 s\n", 3, "takes one value, got 2"),
    ("service a\n    listen 1.2.3.4:1\n    connect-timeout 0s\n", 3, "must be > 0"),
    ("service a\n    listen 1.2.3.4:1\n    check interval 1s retries 2\n", 3, "unknown check option"),
    ("global\n    pipe-size 100\n", 2, "100 is not in 4096.."),
    ("global\n    workers 2\n", 1, "no `service` section"),
    ("", 1, "no `service` section"),
])
def test_bad_config_names_file_line_and_reason(text, line, reason):
    with pytest.raises(ConfigError) as ei:
        config.parse(text, "p.cfg")
    assert ei.value.where == f"p.cfg:{line}"
    assert reason in str(ei.value)
    assert str(ei.value).startswith(f"p.cfg:{line}: ")


def test_durations_and_sizes():
    assert config.parse_duration("250ms") == 0.25
    assert config.parse_duration("2m") == 120
    assert config.parse_duration("3") == 3
    assert config.parse_size("64k") == 65536
    with pytest.raises(ValueError):
        config.parse_duration("soon")


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError) as ei:
        config.load(str(tmp_path / "nope.cfg"))
    assert "nope.cfg" in str(ei.value)


def test_worker_count_defaults_to_cpus():
    import os
    cfg = config.parse("service a\n  listen 1.2.3.4:1\n  backend 1.1.1.1:1\n")
    assert cfg.worker_count() == len(os.sched_getaffinity(0))


def test_the_documented_example_parses():
    doc = config.__doc__
    start = doc.index("    global\n")
    end = doc.index("\nThe schema")
    example = "\n".join(line[4:] for line in doc[start:end].splitlines())
    cfg = config.parse(example, "doc")
    assert cfg.workers == 2 and cfg.pipe_size == 256 * 1024 and cfg.accel_check
    assert cfg.services[0].check == config.HealthCheck(1.0, 0.5, 2, 1)
