"""Reading many namespaces on the machine's other core (vnet/forked.py says why a child).

Observing a topology reads every namespace it made: a no-op apply at a thousand endpoints enters
five hundred, dumps each one's links, addresses and routes, and decodes them. Children forked
for it enter each namespace (a throwaway process may move its only thread), ask what they are
told to, and hand the answers back as plain values, while vnet reads the host and works out the
desired state. What they read is what vnet would read itself a moment later. A namespace a child
could not read (gone, or an error), or the share of a child that died, is read by vnet as before,
errors and all.
"""

from __future__ import annotations

import os
import _socket  # not socket.py: ~3 ms of start-up (drivers/rtnl.py)

from vnet.drivers.ns import NETNS_DIR, _enter
from vnet.drivers.rtnl import Rtnl
from vnet.forked import Forked, Unavailable

TYPE_CHECKING = False  # as typing's, without importing typing before the head start's fork (values.py)
if TYPE_CHECKING:
    from typing import Any, Callable

    Reader = Callable[[Rtnl], Any]  # what to ask one namespace; returns values marshal can write


CHUNK = 16  # namespaces per hand-over: vnet takes them as they come, and knows how far the child is


class ReadAhead:
    """A child reading namespaces, in the order given, handing them over CHUNK at a time:
    `take()` gives {name: what the reader returned} of the next ones. One child: forked before
    vnet reads the host, it reads while vnet works out the desired state; a second one only took
    CPU from vnet itself (measured on two cores: 197 vs 213 ms for observing and desired state at
    N=1000). `given` says how many of `names`, from the first, were handed over; vnet may read the
    last ones itself meanwhile (observe.View.read_rest).

    `target` (netns, reader): the child reads the target namespace first (None: the one vnet runs
    in) and hands it over before it goes on, for `take_target()`."""

    def __init__(self, names: list[str], reader: Reader, target: tuple[str | None, Reader] | None = None) -> None:
        self._names = names
        self._target = target is not None
        self._given = 0
        self._child = Forked(_read_all, names, reader, target) if names or target else None

    def take_target(self) -> Any:
        """What the child read of the target namespace, or None (not asked, or not read)."""
        if not self._target or self._child is None:
            return None
        self._target = False
        try:
            return self._child.take(last=False)
        except Unavailable:
            self._given = len(self._names)  # nothing more comes
            return None

    def take(self, wait: bool = True) -> dict[str, Any]:
        """What the child read and has not handed over yet: {namespace: answer}, without those
        it could not read. `wait`: all of it, once the child is done (none, if it died); without,
        only what it has handed over by now. `done` says when nothing more will come (the rest, if
        any, is vnet's to read)."""
        out: dict[str, Any] = {}
        if self._child is None:
            return out
        if self._target:
            self.take_target()
        while not self.done and (wait or self._child.ready()):
            first = self._given
            self._given = min(first + CHUNK, len(self._names))
            try:
                answers = self._child.take(last=self._given == len(self._names))
            except Unavailable:
                self._given = len(self._names)
                break
            out.update((name, a) for name, a in zip(self._names[first:], answers) if a is not None)
        return out

    @property
    def given(self) -> int:
        """How many of `names`, from the first, the child has handed over (all of them once it died)."""
        return self._given

    @property
    def done(self) -> bool:
        return self._given >= len(self._names)

    def close(self) -> None:
        """Stop the child if it is still at work (its answers are not wanted), and reap it."""
        if self._child is not None:
            self._child.close()

    @property
    def names(self) -> list[str]:
        return self._names

    @property
    def pid(self) -> int:
        return self._child.pid if self._child is not None else 0


def _read_all(names: list[str], reader: Reader, target: tuple[str | None, Reader] | None):
    """In the child: the target's answer first where asked, then the namespaces', CHUNK at a time."""
    if target is not None:
        netns, read_target = target
        yield _read_in(netns, read_target)
    for i in range(0, len(names), CHUNK):
        yield [_read_in(name, reader) for name in names[i : i + CHUNK]]


def _read_in(name: str | None, reader: Reader) -> Any:
    """In the child: what `reader` asks of the namespace `name` (None: the one the child is in),
    or None where it could not be read."""
    try:
        if name is not None:
            _enter(str(NETNS_DIR / name))
        nl = Rtnl(_socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0))
        try:
            return reader(nl)
        finally:
            nl.close()
    except Exception:
        return None
