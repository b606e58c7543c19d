"""The version layout on a plain bytearray: build, in-place apply, rebuild, poison."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.rcu import layout

SIZE = 1 << 14


def fresh(items, size=SIZE):
    buf = bytearray(size * 2)
    layout.build(buf, 0, size, items, gen=1)
    return buf


def test_build_and_lookup():
    items = {b"k%d" % i: b"v" * i for i in range(50)}
    buf = fresh(items)
    for k, v in items.items():
        assert bytes(layout.lookup(buf, 0, k, SIZE)) == v
    assert layout.lookup(buf, 0, b"nope", SIZE) is None
    assert layout.items(buf, 0, SIZE) == items
    assert layout.magic(buf, 0) == layout.VERSION_MAGIC and layout.gen(buf, 0) == 1


def test_copy_then_apply_leaves_the_source_alone():
    items = {b"a": b"1", b"b": b"22", b"c": b"333"}
    buf = fresh(items)
    layout.copy(buf, 0, SIZE)
    assert layout.apply(buf, SIZE, SIZE, {b"a": b"9", b"b": b"longer", b"d": b"new"}, [b"c"], gen=2)
    assert layout.items(buf, SIZE, SIZE) == {b"a": b"9", b"b": b"longer", b"d": b"new"}
    assert layout.items(buf, 0, SIZE) == items
    assert layout.gen(buf, SIZE) == 2


def test_apply_asks_for_a_rebuild_when_full():
    buf = fresh({})
    big = {b"k%d" % i: b"x" * 100 for i in range(200)}
    assert not layout.apply(buf, 0, SIZE, big, [], gen=2)
    with pytest.raises(layout.TableFull):
        layout.build(buf, 0, SIZE, big, gen=2)


def test_deleted_buckets_are_reused_and_probing_continues_past_them():
    buf = fresh({})
    keys = [b"key%03d" % i for i in range(8)]
    assert layout.apply(buf, 0, SIZE, {k: k for k in keys}, [], gen=2)
    assert layout.apply(buf, 0, SIZE, {}, keys[:4], gen=3)
    for k in keys[4:]:
        assert bytes(layout.lookup(buf, 0, k, SIZE)) == k
    assert layout.apply(buf, 0, SIZE, {keys[0]: b"back"}, [], gen=4)
    assert layout.items(buf, 0, SIZE) == {keys[0]: b"back", **{k: k for k in keys[4:]}}


def test_poisoned_version_fails_loudly():
    buf = fresh({b"a": b"1"})
    layout.poison(buf, 0, SIZE)
    with pytest.raises(layout.TornRead):
        layout.lookup(buf, 0, b"a", SIZE)


def test_bad_keys_refused():
    with pytest.raises(ValueError):
        layout.check_item(b"", b"v")
    with pytest.raises(TypeError):
        layout.check_item("str", b"v")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "del"]), st.integers(0, 40),
                          st.binary(max_size=40)), max_size=120), st.integers(1, 8))
def test_copy_update_matches_a_dict(ops, batch):
    """Random batches applied copy-on-write between two buffers equal a dict model."""
    model: dict[bytes, bytes] = {}
    buf = fresh({})
    cur, nxt = 0, SIZE
    for i in range(0, len(ops), batch):
        puts, dels = {}, []
        for op, k, v in ops[i:i + batch]:
            key = b"k%d" % k
            if op == "put":
                puts[key] = v
                if key in dels:
                    dels.remove(key)
            else:
                dels.append(key)
                puts.pop(key, None)
        for k in dels:
            model.pop(k, None)
        model.update(puts)
        layout.copy(buf, cur, nxt)
        if not layout.apply(buf, nxt, SIZE, puts, dels, gen=i):
            layout.build(buf, nxt, SIZE, model, gen=i)
        cur, nxt = nxt, cur
        assert layout.items(buf, cur, SIZE) == model
    for k in range(41):
        got = layout.lookup(buf, cur, b"k%d" % k, SIZE)
        assert (None if got is None else bytes(got)) == model.get(b"k%d" % k)
