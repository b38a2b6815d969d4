"""Exclusive locks on files, for the engine's per-topology and per-namespace locks (engine/lock.py
says what each guards). Apart from the engine, with nothing but the standard library, so that
`vnet apply` can take its topology's lock before it imports the rest of vnet (headstart.py)."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from vnet.errors import VnetError

TYPE_CHECKING = False  # as typing's, without importing typing before the head start's fork (values.py)
if TYPE_CHECKING:
    from typing import Callable, Iterator


class LockTimeout(VnetError):
    """Another vnet run holds the topology and did not finish in time."""


class LockBusy(Exception):
    """Another process holds the lock, and the caller would rather not wait."""


def _try_lock(fd: int, patience: float) -> bool:
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


@contextmanager
def flock(path: Path, what: str, warn: Callable[[str], None] | None = None, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `path`, writing our pid into it for whoever waits. Without
    `wait`, a lock held by another process raises LockBusy at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if not _try_lock(fd, patience=0.3 if wait else 0):
            if not wait:
                raise LockBusy(what)
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            limit = os.environ.get("VNET_LOCK_TIMEOUT")
            if warn is not None:
                warn(f"waiting for another vnet run on {what} (pid {holder}) to finish")
            if limit is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            elif not _try_lock(fd, patience=float(limit)):
                raise LockTimeout(
                    f"another vnet run (pid {holder}) holds {what}; gave up after {float(limit):g}s — "
                    "let it finish, then try again"
                )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def held(path: Path) -> bool:
    """True while some process holds the lock on `path`."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
