"""Grace-period bookkeeping with a fake clock and fake readers."""

import pytest

from fastpath.rcu.grace import GracePeriods, Slot


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def reader(index, qs, tid=None, start=1):
    return Slot(index=index, qs=qs, tid=tid or 1000 + index, pid=tid or 1000 + index, starttime=start)


def everyone_alive(_slot):
    return True


@pytest.fixture
def clock():
    return Clock()


def test_nothing_pending_nothing_to_do(clock):
    g = GracePeriods(clock)
    p = g.poll([reader(0, 5)], everyone_alive)
    assert not p.reclaimable and not p.blocking


def test_reclaim_waits_for_every_online_reader(clock):
    g = GracePeriods(clock)
    g.retire("v1", token=2)
    p = g.poll([reader(0, 1), reader(1, 2)], everyone_alive)
    assert p.reclaimable == [] and [s.index for s in p.blocking] == [0]
    clock.t += 0.003
    p = g.poll([reader(0, 2), reader(1, 2)], everyone_alive)
    assert p.reclaimable == ["v1"]
    assert g.completed == 1 and g.max_latency == pytest.approx(0.003)


def test_offline_and_free_slots_do_not_block(clock):
    g = GracePeriods(clock)
    g.retire("v1", token=7)
    offline = reader(0, 0)
    free = Slot(1, qs=3, tid=0, pid=0, starttime=0)
    assert g.poll([offline, free], everyone_alive).reclaimable == ["v1"]


def test_in_token_order_partially(clock):
    g = GracePeriods(clock)
    g.retire("a", 2)
    g.retire("b", 3)
    g.retire("c", 4)
    assert g.poll([reader(0, 3)], everyone_alive).reclaimable == ["a", "b"]
    assert g.pending == 1 and g.oldest_token == 4
    assert g.poll([reader(0, 9)], everyone_alive).reclaimable == ["c"]
    assert g.completed == 3 and g.pending == 0
    with pytest.raises(ValueError):
        g.retire("old", 1)


def test_dead_reader_is_checked_only_after_a_while_then_unblocks(clock):
    g = GracePeriods(clock, check_dead_after=0.01)
    g.retire("v", 5)
    checked = []

    def alive(s):
        checked.append(s.index)
        return s.index != 1

    slots = [reader(0, 5), reader(1, 4)]
    p = g.poll(slots, alive)
    assert p.reclaimable == [] and checked == []       # too early to pay for /proc
    clock.t += 0.02
    p = g.poll(slots, alive)
    assert [s.index for s in p.dead] == [1] and p.reclaimable == ["v"]
    assert g.dead_readers == 1


def test_live_stalled_reader_reported_once_per_grace_period(clock):
    g = GracePeriods(clock, stall_after=1.0)
    g.retire("v", 5)
    slots = [reader(0, 4)]
    clock.t += 0.5
    assert g.poll(slots, everyone_alive).stalled == []
    clock.t += 0.6
    p = g.poll(slots, everyone_alive)
    assert [(s.slot.index, s.token) for s in p.stalled] == [(0, 5)]
    assert p.stalled[0].waited == pytest.approx(1.1)
    clock.t += 5
    assert g.poll(slots, everyone_alive).stalled == []    # reported already
    assert g.stalls == 1
    p = g.poll([reader(0, 5)], everyone_alive)             # it came back
    assert p.reclaimable == ["v"]
    g.retire("w", 6)
    clock.t += 2
    assert len(g.poll([reader(0, 5)], everyone_alive).stalled) == 1   # a new period, a new report


def test_mean_latency_and_direct_record(clock):
    g = GracePeriods(clock)
    g.record(0.002)
    g.record(0.004)
    assert g.mean_latency == pytest.approx(0.003) and g.max_latency == 0.004
