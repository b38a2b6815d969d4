"""Making many named namespaces at once (drivers/ns.create_many): two threads make half each; the
client handed back for each name acts inside that namespace, `then` runs for each as it is made,
and a failure in either half leaves none of them behind."""

from __future__ import annotations

import os
import threading

import pytest

from vnet.drivers import ns as nsmod
from vnet.drivers import rtnl


@pytest.fixture
def names():
    made = [f"vtc{os.getpid() % 10000}-{i}" for i in range(2 * nsmod.TWO_THREADS_FROM)]
    try:
        yield made
    finally:
        nsmod.remove_all([n for n in made if (nsmod.NETNS_DIR / n).exists()])


def _lo_alias(name: str) -> str | None:
    nl = nsmod.Namespace(name).nl
    try:
        return nl.link("lo").alias
    finally:
        nl.close()


def test_each_client_acts_in_its_own_namespace(names):
    threads = set()

    def mark(i, nl):
        threads.add(threading.current_thread().name)
        nl.request(*rtnl.set_link(ifname="lo", alias=names[i], up=True))

    made = nsmod.create_many(names, then=mark)
    try:
        assert len(made) == len(names)
        assert len(threads) == 2, threads  # the hopper and the helper made half each
        # the mark set through the i-th client is on the i-th name's lo, read from outside
        assert [_lo_alias(n) for n in names] == names
        # and the i-th client reads its own namespace
        assert [nl.link("lo").alias for nl in made] == names
    finally:
        for nl in made:
            nl.close()


@pytest.mark.parametrize("fail_at", [3, 2 * nsmod.TWO_THREADS_FROM - 2], ids=["first half", "second half"])
def test_a_failure_in_either_half_leaves_none(names, fail_at):
    def mark(i, nl):
        if i == fail_at:
            raise OSError(5, "refused by the test")
        nl.request(*rtnl.set_link(ifname="lo", alias=names[i], up=True))

    with pytest.raises(OSError, match="refused by the test"):
        nsmod.create_many(names, then=mark)
    assert [n for n in names if (nsmod.NETNS_DIR / n).exists()] == []


def test_a_ctrl_c_while_the_hopper_makes_them_is_taken_once_its_call_has_ended(names):
    """The interrupt reaches the main thread while the hopper is still making its half: cleaning
    up then would miss what the hopper makes after it (a client left open, holding its namespace)."""
    import signal

    main = threading.main_thread().ident
    clients = []

    def mark(i, nl):
        clients.append(nl)
        if i == 2:  # the hopper's half: it goes on while the main thread takes the interrupt
            signal.pthread_kill(main, signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        nsmod.create_many(names, then=mark)
    assert len(clients) > 3
    assert [nl for nl in clients if nl.sock.fileno() != -1] == []  # every client made was closed
    assert [n for n in names if (nsmod.NETNS_DIR / n).exists()] == []
