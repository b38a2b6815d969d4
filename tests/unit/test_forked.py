"""vnet/forked.py: a child's result, or each item of a generator as it is made, handed back as
plain values; a child that fails or dies gives Unavailable, never a wrong value."""

from __future__ import annotations

import os

import pytest

from vnet.forked import Forked, Unavailable


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def _items(n):
    for i in range(n):
        yield {"i": i, "text": "x" * (i * 40_000)}  # larger than a pipe's buffer from the third on


def test_one_result():
    with Forked(sum, [1, 2, 3]) as child:
        assert child.take() == 6


def test_each_item_of_a_generator_in_order():
    child = Forked(_items, 4)
    try:
        got = [child.take(last=False) for _ in range(3)] + [child.take()]
        assert [g["i"] for g in got] == [0, 1, 2, 3] and len(got[3]["text"]) == 120_000
        with pytest.raises(Unavailable):
            child.take()  # all taken: the pipe is closed
    finally:
        pid = child.pid
        child.close()
    assert _gone(pid)


def _fails_after_one():
    yield "first"
    raise ValueError("the second could not be read")


def _dies_after_one():
    yield "first"
    os._exit(3)


@pytest.mark.parametrize("fn, said", [(_fails_after_one, "the second could not be read"), (_dies_after_one, "died")])
def test_a_generator_that_fails_or_dies_gives_what_it_made_then_unavailable(fn, said):
    with Forked(fn) as child:
        assert child.take(last=False) == "first"
        with pytest.raises(Unavailable, match=said):
            child.take()


def test_what_marshal_cannot_write_is_unavailable():
    with Forked(lambda: object()) as child:
        with pytest.raises(Unavailable):
            child.take()
