"""Network namespaces made ahead, unnamed, while vnet works out its plan.

A first apply at a thousand endpoints makes five hundred namespaces, and making them is the first
step of the run; before it, vnet spends about a tenth of a second in Python on one core (observing,
the desired state, the checks, the plan) while the other core idles. A forked child makes
namespaces meanwhile: each one new and empty, with no name, held only by a descriptor the child
hands to vnet over a socket pair (SCM_RIGHTS) together with an rtnetlink socket opened inside it.
When the run makes its namespaces, it stops the child and gives the first of them their names (a
bind mount each, as `ip netns add` does), and makes only the rest itself.

Nothing the host has changes until then. A namespace nobody has named is seen by no tool that
lists namespaces by name, holds no link of the host's and vanishes when its last descriptor is
closed: when a plan is refused, fails or makes fewer namespaces, closing the spares (and killing
the child by the pid vnet forked) leaves the host as it was. A child forked after the topology's
file was loaded costs vnet a fork (~3 ms at this size) and the copy-on-write faults of the
pages it writes while the child lives; it makes none where fewer than WORTH would be made.

A thread cannot do it: each of its system calls would wait for the GIL again, held by vnet's
planning, and it made a namespace only every few milliseconds. (forked.py says more on children.)
"""

from __future__ import annotations

import array
import os
import socket

from vnet.drivers.ns import CLONE_NEWNET, _libc
from vnet.drivers.rtnl import Rtnl

WORTH = 32  # namespaces to make from which a child pays for its fork (Namespaces.make_ahead)
_FDS = array.array("i", [0, 0]).itemsize * 2
SO_SNDBUFFORCE = 32


class Spares:
    """Up to `count` unnamed namespaces, made by a child forked now; `take()` stops it and hands
    them over, `close()` drops whatever was not taken."""

    def __init__(self, count: int) -> None:
        self.pid = 0
        self._sock: socket.socket | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return  # none made ahead: the run makes them all, as it would have
        if pid == 0:  # the child: never returns
            ours.close()
            _make(count, theirs)
        theirs.close()
        self.pid, self._sock = pid, ours

    def take(self, at_least: int = 0) -> list[tuple[int, Rtnl]]:
        """Stop the child once it has made `at_least` (none: at once); the namespaces it made,
        each as (a descriptor holding it, an rtnetlink client inside it), in the order made. The
        caller owns them from here."""
        sock = self._sock
        if sock is None:
            return []
        made: list[tuple[int, Rtnl]] = []
        try:
            sock.settimeout(30.0)  # a child that hangs is killed by close(); the run makes them all then
            stop = at_least <= 0
            if stop:
                sock.send(b"s")  # the child finishes the namespace it is making, hands it over, exits
            while True:
                msg, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(_FDS))
                if not msg:
                    break  # the child has sent all it made and closed its end
                fds = array.array("i")
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                if len(fds) == 2:
                    made.append((fds[0], Rtnl(socket.socket(fileno=fds[1]))))
                else:  # not what the child sends: close what came, keep nothing of it
                    for fd in fds:
                        os.close(fd)
                if not stop and len(made) >= at_least:
                    sock.send(b"s")
                    stop = True
        except OSError:
            pass  # what came before is good; the rest is not waited for
        finally:
            self.close()
        return made

    def close(self) -> None:
        """Stop and reap the child; namespaces it made that were not taken vanish with it."""
        pid, self.pid = self.pid, 0
        if self._sock is not None:
            self._sock.close()  # namespaces still in flight go with the socket
            self._sock = None
        if pid:
            import signal  # here: a child is seldom killed

            try:
                os.kill(pid, signal.SIGKILL)  # by the pid vnet forked; gone already once it has said all
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _make(count: int, sock: socket.socket) -> None:
    """In the child: make namespaces until `count` are made or the parent says stop, handing each
    over as it is made."""
    code = 1
    try:
        try:  # room for every namespace not yet taken: a full socket would hold the child up
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 1 << 22)
        except OSError:
            pass
        for _ in range(count):
            try:
                sock.recv(1, socket.MSG_DONTWAIT)
                break  # the parent said stop (or went away)
            except BlockingIOError:
                pass
            if _libc.unshare(CLONE_NEWNET) != 0:
                break  # the parent makes the rest, and meets the error itself
            ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
            try:
                sock.sendmsg([b"n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [ns, nl.fileno()]))])
            finally:
                os.close(ns)
                nl.close()
        code = 0
    finally:
        sock.close()  # the parent's take ends here, not when this copy of vnet's memory is torn down
        os._exit(code)  # no atexit, no flushing of vnet's buffers: the parent owns them
