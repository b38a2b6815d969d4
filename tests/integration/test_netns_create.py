"""Making many named namespaces at once (drivers/ns.create_many): two threads make half each; the
client handed back for each name acts inside that namespace, `then` runs for each as it is made,
and a failure in either half leaves none of them behind. Namespaces made ahead by a child
(drivers/spares.py) take the first names; the names are links to one file, each its own mount."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from vnet.drivers import ns as nsmod
from vnet.drivers import rtnl
from vnet.drivers.spares import Spares


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


def _netns_id(name: str) -> tuple[int, int]:
    st = os.stat(nsmod.NETNS_DIR / name)  # the namespace mounted there, not the file under it
    return st.st_dev, st.st_ino


def test_names_linked_to_one_file_each_hold_a_namespace_of_their_own(names):
    """The mount points are hard links to one empty file (see ns._mount_points): each name still
    holds its own namespace, and `ip netns delete` of one leaves the others as they were."""
    made = nsmod.create_many(names)
    try:
        ids = [_netns_id(n) for n in names]
        assert len(set(ids)) == len(names)
        subprocess.run(["ip", "netns", "delete", names[0]], check=True)  # the file the others link to
        assert not (nsmod.NETNS_DIR / names[0]).exists()
        assert [_netns_id(n) for n in names[1:]] == ids[1:]
        assert all(nsmod.exists(n) for n in names[1:])
    finally:
        for nl in made:
            nl.close()


def test_a_name_taken_leaves_none_of_the_others_and_the_holder_alone(names):
    taken = nsmod.NETNS_DIR / names[5]
    taken.touch()  # someone's file (a namespace being made by `ip netns add`, say)
    try:
        with pytest.raises(FileExistsError):
            nsmod.create_many(names)
        assert taken.exists() and taken.stat().st_nlink == 1  # theirs, untouched, linked to nothing of ours
        assert [n for n in names if n != names[5] and (nsmod.NETNS_DIR / n).exists()] == []
    finally:
        taken.unlink()


def test_namespaces_made_ahead_get_the_first_names_and_the_rest_are_made(names):
    spares = Spares(len(names) // 2)
    ahead = spares.take(at_least=len(names) // 2)
    assert len(ahead) == len(names) // 2 and spares.pid == 0  # all it was asked for; the child reaped
    ids = [os.fstat(fd).st_ino for fd, _ in ahead]

    def mark(i, nl):
        nl.request(*rtnl.set_link(ifname="lo", alias=names[i], up=True))

    made = nsmod.create_many(names, then=mark, ahead=ahead)
    try:
        assert [_netns_id(n)[1] for n in names[: len(ids)]] == ids  # the ones made ahead, named in order
        assert len({_netns_id(n) for n in names}) == len(names)
        assert [_lo_alias(n) for n in names] == names  # each client acts in its own
    finally:
        for nl in made:
            nl.close()


def test_namespaces_made_ahead_and_not_needed_vanish_with_their_maker(names):
    """A plan refused after the child began: nothing was named, and closing leaves no process
    and no namespace behind (held by nothing, the kernel frees them)."""
    before = set(os.listdir(nsmod.NETNS_DIR))
    spares = Spares(len(names))
    pid = spares.pid
    assert pid > 0
    spares.close()
    assert not os.path.exists(f"/proc/{pid}")  # killed by its pid and reaped
    assert set(os.listdir(nsmod.NETNS_DIR)) == before
    # more made ahead than names to give: the rest are closed by create_many
    ahead = Spares(len(names)).take(at_least=4)
    fds = [fd for fd, _ in ahead]
    assert len(fds) >= 4
    made = nsmod.create_many(names[:2], ahead=ahead)
    try:
        assert len(made) == 2
        closed = []
        for fd in fds[2:]:
            try:
                os.fstat(fd)
            except OSError:
                closed.append(fd)
        assert closed == fds[2:]
    finally:
        for nl in made:
            nl.close()
        nsmod.remove_all(names[:2])
