"""A head start for `vnet apply` of a topology applied here before.

Most of a no-op apply at a thousand endpoints is reading the topology's five hundred namespaces,
which a forked child does on the other core (drivers/readahead.py) while vnet reads the host and
works out the desired state. Started there, the child was the last to finish. Started here, as soon
as the command line is parsed, it also has the time vnet spends importing the rest of itself and
loading the file, and is done before it is needed.

What it reads is as current as what vnet would read itself:
- the topology's lock, the engine's own, is taken before the child is forked and handed to the
  engine, which holds it to the end of the run: no other vnet run changes the topology meanwhile;
- it starts only where a journal does not wait to be undone (recovery changes what it would read);
- the name is taken from a glance at the file (a top-level `name:` line). The engine uses the head
  start only for the topology, state directory and target it was made for; otherwise it is dropped
  (the child killed by its pid and reaped, the lock released) and apply goes its usual way.

It changes nothing on the host: it starts only where the topology's lock file is already there
(a first apply has nothing to read ahead), and never waits for a lock another run holds.
"""

from __future__ import annotations

import os
import re
import stat
from contextlib import ExitStack
from pathlib import Path

from vnet import readings, statedir
from vnet.drivers import ns as nsmod
from vnet.drivers.readahead import ReadAhead
from vnet.errors import VnetError
from vnet.flock import LockBusy, flock

_NAME_LINE = re.compile(r"""^name:[ \t]*(["']?)([a-z][a-z0-9_-]{0,31})\1[ \t]*(?:#.*)?$""", re.MULTILINE)


def guess_name(text: str) -> str | None:
    """The topology's name, as a top-level `name:` line in block style gives it; None otherwise.
    A guess: the loaded topology decides."""
    m = _NAME_LINE.search(text)
    return m.group(2) if m else None


class HeadStart:
    """The topology's lock and a child reading its namespaces, for the engine to take over. One
    that did not start (`started` False) holds nothing."""

    def __init__(self) -> None:
        self.lock_path: Path | None = None
        self.listed: list[str] = []  # the namespaces that could be entered, as the lock was taken
        self._lock = ExitStack()
        self._ahead: ReadAhead | None = None

    @property
    def started(self) -> bool:
        return self.lock_path is not None

    def _start(self, lock_path: Path, topology: str, netns: str | None) -> None:
        if not lock_path.is_file():
            return  # never applied here: nothing to read, and no lock file to make
        try:
            self._lock.enter_context(flock(lock_path, f"topology {topology}", wait=False))
        except (LockBusy, OSError):
            return  # another run has it (the engine waits for it, saying so), or no rights to it
        if statedir.journal(lock_path.parent, topology).exists():
            self._lock.close()
            return
        self.lock_path = lock_path
        self.listed = nsmod.listed()
        mine = sorted(n for n in self.listed if n.startswith(f"{topology}-"))
        # the target namespace too, first: vnet asks for it before the rest. Where the child is
        # the slower, vnet reads the last namespaces itself meanwhile (observe.View.read_rest)
        self._ahead = ReadAhead(mine, readings.read_namespace, target=(netns, readings.read_target))

    def take(self, lock_path: Path) -> tuple[ExitStack, tuple[ReadAhead, list[str]]] | None:
        """For the engine, if this head start was made for `lock_path`: the held lock (a context
        manager that releases it), and the child reading the namespaces with the namespaces listed."""
        if lock_path != self.lock_path or self._ahead is None:
            return None
        ahead, self._ahead = self._ahead, None
        return self._lock, (ahead, self.listed)

    def close(self) -> None:
        """Stop a child the engine did not take, and release a lock it did not."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        self._lock.close()

    def __enter__(self) -> HeadStart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def begin(path: str, state_dir: str, netns: str | None) -> HeadStart:
    """A head start for applying the file at `path` to `netns` with state in `state_dir`; one that
    holds nothing where it does not apply (the engine then does everything as usual)."""
    early = HeadStart()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return early  # a pipe, say: what the loader reads must not be read here first
        with open(path, encoding="utf-8") as f:
            name = guess_name(f.read())
        if name is None:
            return early
        root = statedir.target_root(statedir.secure(state_dir, create=False), netns)
    except (OSError, UnicodeDecodeError, VnetError):
        return early  # the loader or the engine says what is wrong, as usual
    early._start(statedir.topology_lock(root, name), name, netns)
    return early
