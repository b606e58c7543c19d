"""The torture test, short form: zero bad reads; and proof that it catches a broken writer."""

import json

from fastpath.rcu import torture, values
from fastpath.rcu.grace import GracePeriods, Poll


def test_values_carry_their_own_checksum():
    import random
    v = values.make_value(b"svc-1", 7, random.Random(1))
    assert values.check_value(b"svc-1", v) is None
    assert "belongs to" in values.check_value(b"svc-2", v)
    torn = v[:-1] + bytes([v[-1] ^ 1]) if len(v) > 20 else v
    assert values.check_value(b"svc-1", torn)
    assert values.check_value(b"svc-1", b"\xde" * len(v))


def test_short_torture_zero_bad_reads(fastpath):
    p = fastpath("rcu", "torture", "--seconds", "8", "--readers", "3", "--threads", "2",
                 "--kill-every", "0.4", "--json", timeout=60)
    r = json.loads(p.stdout)
    assert r["ok"], r["errors"]
    assert r["bad_reads"] == 0 and r["crashed"] == 0
    assert r["reads"] > 10_000 and r["writer_ops"] > 100
    assert r["readers_killed"] >= 5 and r["readers_started"] >= 3 + r["readers_killed"] - 1
    assert r["dead_readers_reclaimed"] >= 1


def test_torture_catches_reuse_before_the_grace_period(monkeypatch):
    """A writer that reclaims without waiting: the torture must see bad reads."""
    def no_grace(self, slots, alive):
        out = Poll(reclaimable=[p.item for p in self._pending])
        self._pending.clear()
        return out
    monkeypatch.setattr(GracePeriods, "poll", no_grace)
    r = torture.run(3, readers=2, threads=1, nkeys=64, kill_every=float("inf"), domain_threads=0,
                    seed=1)
    assert r["bad_reads"] > 0 and not r["ok"]
    assert r["errors"]


def test_bad_arguments(fastpath):
    p = fastpath("rcu", "torture", "--seconds", "0", check=False)
    assert p.returncode == 2 and "--seconds" in p.stderr
    p = fastpath("rcu", "torture", "--seconds", "1", "--name", "Bad Name", check=False)
    assert p.returncode == 2 and "table name" in p.stderr
    p = fastpath("rcu", "torture", "--readers", "1000", check=False)
    assert p.returncode == 2 and "at most" in p.stderr
