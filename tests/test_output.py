"""Output for people outside a terminal keeps every cell whole; --json is unchanged."""

import argparse
import json

from fastpath.output import emit, table

WIDE = [("node1", "10.255.0.1/24", "10.244.1.0/24", "pid 4242 on a-long-host-name-" + "x" * 60)]


def test_a_table_in_a_pipe_is_never_cut(capsys):
    emit(argparse.Namespace(), WIDE, lambda d: table("nodes", ["node", "address", "pod CIDR", "agent"], d))
    out = capsys.readouterr().out
    assert "…" not in out
    for cell in WIDE[0]:
        assert cell in out, f"{cell!r} was cut or wrapped"
    assert max(len(line) for line in out.splitlines()) > 80


def test_json_stays_the_machine_format(capsys):
    emit(argparse.Namespace(json=True), {"rows": WIDE}, lambda d: "never rendered")
    assert json.loads(capsys.readouterr().out) == {"rows": [list(WIDE[0])]}
