"""iptables-save parsing and chain evaluation, on text as iptables-save prints it."""

from pathlib import Path

import pytest

from fastpath.errors import ConfigError
from fastpath.trace import iptables
from fastpath.trace.iptables import Packet, evaluate, evaluate_hook, parse

SAMPLE = (Path(__file__).parent / "data" / "node-sample.rules").read_text()


def rules(*lines: str, policy: str = "DROP", table: str = "filter", extra=()) -> iptables.Ruleset:
    chains = {"filter": [":INPUT ACCEPT [0:0]", f":FORWARD {policy} [0:0]",
                         ":OUTPUT ACCEPT [0:0]"],
              "nat": [":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]",
                      ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]}[table]
    text = "\n".join([f"*{table}", *chains, *extra, *lines, "COMMIT", ""])
    return parse(text)


PKT = Packet(src="10.244.1.2", dst="10.244.2.2", proto="tcp", dport=80,
             in_iface="fpaaaa", out_iface="eth0")


def test_parse_sample_tables_policies_and_rules():
    rs = parse(SAMPLE)
    assert set(rs.tables) == {"raw", "filter", "nat"}
    assert rs.chain("filter", "FORWARD").policy == "DROP"
    assert rs.chain("filter", "FP-FORWARD").policy is None
    fp = rs.chain("filter", "FP-FORWARD").rules
    assert [r.index for r in fp] == [1, 2, 3]
    assert fp[0].target == "ACCEPT" and fp[0].matches[0].option == "-i"
    assert fp[1].matches[0].negated and fp[1].matches[0].value == "10.0.0.0/8"
    assert rs.chain("nat", "POSTROUTING").rules[0].target == "MASQUERADE"


def test_sample_forward_accepts_pod_interfaces_by_wildcard():
    rs = parse(SAMPLE)
    v = evaluate(rs, "filter", "FORWARD", Packet("10.244.1.2", "10.244.2.2", dport=80,
                                                  in_iface="fp123", out_iface="eth0"))
    assert v.verdict == "ACCEPT" and v.rule.chain == "FP-FORWARD" and v.rule.index == 1
    assert v.trail == ["FORWARD#1 -> FP-FORWARD", "FP-FORWARD#1"]


def test_sample_negated_source_port_and_ctstate_drop():
    rs = parse(SAMPLE)
    v = evaluate(rs, "filter", "FORWARD", Packet("192.168.1.1", "10.244.2.2", dport=80,
                                                  in_iface="eth0", out_iface="eth1"))
    assert v.verdict == "DROP" and v.rule.index == 2
    # inside 10/8 the negated -s does not match: falls off to the policy
    v = evaluate(rs, "filter", "FORWARD", Packet("10.1.1.1", "10.244.2.2", dport=80,
                                                  in_iface="eth0", out_iface="eth1"))
    assert v.verdict == "DROP" and v.by_policy and v.rule is None
    assert v.explain() == "filter FORWARD policy DROP"


def test_return_from_user_chain_falls_to_policy():
    rs = parse(SAMPLE)
    v = evaluate(rs, "filter", "FORWARD", Packet("10.1.1.1", "10.244.2.2", proto="udp",
                                                  dport=1500, in_iface="eth0"))
    assert v.by_policy and "FP-FORWARD#3 RETURN" in v.trail


def test_raw_prerouting_drop_and_hook_order():
    rs = parse(SAMPLE)
    vs = evaluate_hook(rs, "PREROUTING", Packet("1.2.3.4", "10.244.2.2", in_iface="eth0"))
    assert [v.table for v in vs] == ["raw"] and vs[0].drops
    vs = evaluate_hook(rs, "PREROUTING", Packet("1.2.3.5", "10.244.2.2", in_iface="eth0"))
    assert [v.table for v in vs] == ["raw", "nat"] and not any(v.drops for v in vs)


def test_nat_target_is_reported():
    rs = parse(SAMPLE)
    vs = evaluate_hook(rs, "POSTROUTING", Packet("10.244.1.2", "8.8.8.8", out_iface="eth0"))
    assert vs[-1].verdict == "MASQUERADE"


def test_icmp_type_and_input():
    rs = parse(SAMPLE)
    assert evaluate(rs, "filter", "INPUT", Packet("1.1.1.1", "2.2.2.2", proto="icmp",
                                                   icmp_type=8)).rule.index == 1
    v = evaluate(rs, "filter", "INPUT", Packet("1.1.1.1", "2.2.2.2", proto="icmp", icmp_type=0))
    assert v.rule is None and v.verdict == "ACCEPT"


def test_devgroup_with_and_without_mask():
    rs = rules("-A FORWARD -m devgroup --src-group 0x6670 -j ACCEPT",
               "-A FORWARD -m devgroup --dst-group 0x70/0xff -j REJECT --reject-with icmp-port-unreachable")
    assert evaluate(rs, "filter", "FORWARD", Packet("1.1.1.1", "2.2.2.2",
                                                     in_group=0x6670)).verdict == "ACCEPT"
    v = evaluate(rs, "filter", "FORWARD", Packet("1.1.1.1", "2.2.2.2", in_group=0, out_group=0x6670))
    assert v.verdict == "REJECT" and v.drops and v.rule.index == 2
    assert evaluate(rs, "filter", "FORWARD", Packet("1.1.1.1", "2.2.2.2")).by_policy


def test_goto_returns_past_the_calling_chain():
    rs = rules("-A FORWARD -j A", "-A FORWARD -j ACCEPT", "-A A -g B", "-A A -j DROP",
               "-A B -p udp -j DROP", extra=[":A - [0:0]", ":B - [0:0]"])
    # B falls through; the goto returns to FORWARD (past A's DROP), which accepts.
    v = evaluate(rs, "filter", "FORWARD", PKT)
    assert v.verdict == "ACCEPT" and v.rule.chain == "FORWARD" and v.rule.index == 2


def test_ports_ranges_multiport_and_unknown_sport():
    rs = rules("-A FORWARD -p tcp -m multiport --dports 22,8000:8100 -j ACCEPT",
               "-A FORWARD -p tcp -m tcp --sport 1024: -j ACCEPT")
    assert evaluate(rs, "filter", "FORWARD", Packet("1.1.1.1", "2.2.2.2", dport=8080)).rule.index == 1
    v = evaluate(rs, "filter", "FORWARD", Packet("1.1.1.1", "2.2.2.2", dport=80))
    assert v.by_policy and any("--sport" in n for n in v.notes)
    assert evaluate(rs, "filter", "FORWARD", Packet("1.1.1.1", "2.2.2.2", dport=80,
                                                     sport=40000)).rule.index == 2


def test_ctstate_first_packet_is_new_reply_is_established():
    rs = rules("-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
               "-A FORWARD -m state --state NEW -p tcp --syn -j ACCEPT")
    assert evaluate(rs, "filter", "FORWARD", PKT).rule.index == 2
    reply = Packet("2.2.2.2", "1.1.1.1", sport=80, ctstate="ESTABLISHED")
    assert evaluate(rs, "filter", "FORWARD", reply).rule.index == 1
    assert evaluate(rs, "filter", "FORWARD", Packet("1.1.1.1", "2.2.2.2", proto="icmp")).by_policy


def test_unsupported_match_never_matches_and_says_so():
    rs = rules("-A FORWARD -m set --match-set allowed src -j ACCEPT",
               "-A FORWARD -m mark --mark 0x1 -j ACCEPT")
    v = evaluate(rs, "filter", "FORWARD", PKT)
    assert v.by_policy and v.verdict == "DROP"
    assert any("-m set" in n for n in v.notes) and any("-m mark" in n for n in v.notes)


def test_non_terminal_targets_continue_and_missing_table_accepts():
    rs = rules('-A FORWARD -j LOG --log-prefix "fwd: "', "-A FORWARD -o eth0 -j ACCEPT")
    v = evaluate(rs, "filter", "FORWARD", PKT)
    assert v.rule.index == 2
    assert evaluate(rs, "mangle", "FORWARD", PKT).verdict == "ACCEPT"
    assert evaluate_hook(iptables.Ruleset(), "FORWARD", PKT) == []


def test_counters_and_long_options_and_inverted_iface():
    text = ("*filter\n:FORWARD DROP [3:180]\n"
            "[0:0] -A FORWARD ! --in-interface eth+ --destination 10.244.0.0/16 -j ACCEPT\nCOMMIT\n")
    rs = parse(text)
    assert evaluate(rs, "filter", "FORWARD", PKT).verdict == "ACCEPT"
    assert evaluate(rs, "filter", "FORWARD", Packet(**{**PKT.__dict__, "in_iface": "eth1"})).by_policy


@pytest.mark.parametrize("text", ["-A FORWARD -j ACCEPT\n", "*filter\n-A\nCOMMIT\n",
                                  "*filter\n-A FORWARD -s 'x\nCOMMIT\n", "*filter\n:\nCOMMIT\n",
                                  "*filter\n-A FORWARD -j\nCOMMIT\n"])
def test_malformed_input_names_the_line(text):
    with pytest.raises(ConfigError, match="iptables-save line"):
        parse(text)
