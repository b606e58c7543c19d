from fastpath.trace.rpfilter import decide, effective_mode


def test_effective_mode_is_the_max_of_all_and_iface():
    assert effective_mode(0, 0) == 0
    assert effective_mode(1, 0) == 1
    assert effective_mode(0, 2) == 2
    assert effective_mode(1, 2) == 2


def test_off_never_drops():
    d = decide(src="10.0.0.1", ingress="eth0", all_value=0, iface_value=0, reverse_oif=None)
    assert d.passes and d.mode_name == "off"


def test_strict_needs_the_route_back_through_the_ingress():
    ok = decide(src="10.0.0.1", ingress="eth0", all_value=1, iface_value=0, reverse_oif="eth0")
    bad = decide(src="10.0.0.1", ingress="eth0", all_value=1, iface_value=0, reverse_oif="eth1")
    none = decide(src="10.0.0.1", ingress="eth0", all_value=0, iface_value=1, reverse_oif=None)
    assert ok.passes and not bad.passes and not none.passes
    assert "leaves via eth1, not eth0" in bad.reason
    assert "max of all=1, eth0=0" in bad.reason


def test_loose_needs_only_some_route_back():
    assert decide(src="10.0.0.1", ingress="eth0", all_value=2, iface_value=1,
                  reverse_oif="eth1").passes
    d = decide(src="10.0.0.1", ingress="eth0", all_value=1, iface_value=2, reverse_oif=None)
    assert not d.passes and d.mode == 2 and "no route back" in d.reason
