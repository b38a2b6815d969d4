"""vnet/forked.py: a child's result, or each item of a generator as it is made, handed back as
plain values; a child that fails or dies gives Unavailable, never a wrong value."""

from __future__ import annotations

import os
import time

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


def _makes_more_than_a_pipe_holds(done: str):
    for i in range(6):
        yield "x" * 1_000_000 + str(i)  # 6 MB: more than the pipe takes (1 MiB at most, here)
    open(done, "w").close()  # the child went on to the end while nobody read


def test_the_child_is_not_held_up_by_a_parent_that_does_not_read_yet(tmp_path):
    """The child hands its items over as it makes them, into the pipe and, past what the pipe takes,
    a queue of its own: it finishes its work while the parent is busy elsewhere."""
    done = tmp_path / "done"
    with Forked(_makes_more_than_a_pipe_holds, str(done)) as child:
        deadline = time.monotonic() + 60
        while not done.exists():
            assert time.monotonic() < deadline, "the child waited for the parent to read"
            time.sleep(0.01)
        got = [child.take(last=False) for _ in range(5)] + [child.take()]
    assert [g[-1] for g in got] == list("012345") and all(len(g) == 1_000_001 for g in got)


def test_ready_says_when_a_result_can_be_taken():
    r, w = os.pipe()  # the child's signal to go on, for a result that is surely not there yet
    child = Forked(os.read, r, 1)
    try:
        assert not child.ready()
        os.write(w, b"!")
        deadline = time.monotonic() + 60
        while not child.ready():
            assert time.monotonic() < deadline, "no result"
            time.sleep(0.01)
        assert child.take() == b"!" and not child.ready()
    finally:
        child.close()
        os.close(r)
        os.close(w)
