import pytest

from fastpath import naming
from fastpath.errors import UsageError


def test_instance_scopes_every_name(monkeypatch):
    monkeypatch.setenv("FASTPATH_INSTANCE", "ab12")
    assert naming.scope() == "fp-ab12-"
    assert naming.name("node1") == "fp-ab12-node1"
    assert naming.owned("fp-ab12-node1-pod2")
    assert not naming.owned("fp-node1")
    assert naming.bpf_pin_dir() == "/sys/fs/bpf/fastpath/ab12"


def test_default_scope_is_all_of_fp(monkeypatch):
    monkeypatch.delenv("FASTPATH_INSTANCE", raising=False)
    assert naming.name("underlay") == "fp-underlay"
    assert naming.owned("fp-anything")
    assert naming.bpf_pin_dir() == "/sys/fs/bpf/fastpath"


@pytest.mark.parametrize("bad", ["UP", "a b", "x" * 9, "-a"])
def test_bad_instance_refused(monkeypatch, bad):
    monkeypatch.setenv("FASTPATH_INSTANCE", bad)
    with pytest.raises(UsageError):
        naming.scope()


def test_link_names_fit_ifnamsiz_and_are_stable():
    a = naming.link_name("node1", "pod-a")
    assert len(a) <= 15 and a.startswith("fp")
    assert a == naming.link_name("node1", "pod-a")
    assert a != naming.link_name("node1", "pod-b")


def test_chain_names():
    assert naming.chain("forward") == "FP-FORWARD"
    with pytest.raises(UsageError):
        naming.chain("x" * 40)
