"""Reading many namespaces on the machine's other core.

Observing a topology reads every namespace it made: a no-op apply at a thousand endpoints enters
five hundred, dumps each one's links, addresses and routes, and decodes them. One Python process
does that on one core, while it could also be doing what needs no namespace (the host's links,
the desired state). A thread does not help: the GIL lets a thread that waits in a syscall give
way, but every return from one waits for the GIL again, thousands of times. So a forked child
does the reading: it enters each namespace (a throwaway process may move its only thread),
asks what it is told to, and writes the answers back through a pipe as plain values (marshal:
no code, nothing but data, and from a copy of vnet itself) for vnet to take when it needs them.

The child reads what vnet would read itself a moment later. A namespace the child could not read
(gone, or an error) is left out, and vnet reads it as before, errors and all; where the child
cannot be forked at all, nothing is read ahead.
"""

from __future__ import annotations

import marshal
import os
import signal
import socket
from typing import Any, Callable

from vnet.drivers.ns import NETNS_DIR, _enter
from vnet.drivers.rtnl import Rtnl

Reader = Callable[[Rtnl], Any]  # what to ask one namespace; returns values marshal can write


class ReadAhead:
    """A child reading namespaces; `take()` gives {name: what the reader returned}."""

    def __init__(self, names: list[str], reader: Reader) -> None:
        self._pid = 0
        self._fd = -1
        self._names = names
        if not names:
            return
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return
        if pid == 0:  # the child: never returns
            os.close(r)
            _child(names, reader, w)
        os.close(w)
        self._pid, self._fd = pid, r

    def take(self) -> dict[str, Any]:
        """What the child read, once it is done: {namespace: answer}, without those it could not read."""
        if not self._pid:
            return {}
        chunks = []
        try:
            while chunk := os.read(self._fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self._fd)
            self._fd = -1
        try:
            answers = marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError):
            return {}  # the child died before it wrote all: vnet reads for itself
        return {name: a for name, a in zip(self._names, answers) if a is not None}

    def close(self) -> None:
        """Stop the child if it is still at work (its answers are not wanted), and reap it. Apart
        from take(): the child closes the pipe before it exits, and its exit (the kernel tearing
        down a copy of vnet's memory) need not be waited for until then."""
        pid, self._pid = self._pid, 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)  # by the pid vnet forked
                except ProcessLookupError:
                    pass
        if pid:
            os.waitpid(pid, 0)


def _child(names: list[str], reader: Reader, w: int) -> None:
    code = 1
    try:
        answers = []
        for name in names:
            try:
                _enter(str(NETNS_DIR / name))
                nl = Rtnl(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
                try:
                    answers.append(reader(nl))
                finally:
                    nl.close()
            except Exception:
                answers.append(None)
        data = memoryview(marshal.dumps(answers))
        while data:
            data = data[os.write(w, data):]
        os.close(w)  # the parent's read ends here, not when this process's exit is done
        code = 0
    finally:
        os._exit(code)  # no atexit, no flushing of vnet's buffers: the parent owns them
