"""Network namespaces: one long-lived netlink socket and one worker thread per namespace.

The worker thread has entered the namespace with setns(2), so /proc/sys/net and /dev/net/tun act
on that namespace without forking a process; commands (nft, dnsmasq) run through nsenter.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from vnet.errors import VnetError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def listed() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
_rundir_shared = False


def _share_rundir() -> None:
    """Make /run/netns a shared mount, as `ip netns add` does, so bind mounts in it propagate."""
    global _rundir_shared
    if _rundir_shared:
        return
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    d = str(NETNS_DIR).encode()
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0 or _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot share {NETNS_DIR}: {os.strerror(err)}")
    _rundir_shared = True


def _unshare_and_bind(path: Path) -> None:
    # runs in a throwaway thread: unshare(CLONE_NEWNET) moves only this thread, never vnet itself
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    if _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind {path}: {os.strerror(err)}")


def create(name: str) -> None:
    """A named network namespace, made in-process (a thread unshares, no child process)."""
    _share_rundir()
    path = NETNS_DIR / name
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    with ThreadPoolExecutor(max_workers=1) as one:
        try:
            one.submit(_unshare_and_bind, path).result()
        except BaseException:
            path.unlink(missing_ok=True)
            raise


def remove(name: str) -> None:
    pr_netns.remove(name)


def _enter(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Namespace:
    """A network namespace by name; None is the namespace vnet itself runs in."""

    def __init__(self, name: str | None):
        if name is not None and not exists(name):
            raise VnetError(f"network namespace {name!r} does not exist — create it, or check --netns")
        self.name = name
        self._ipr: IPRoute | None = None
        self._worker: ThreadPoolExecutor | None = None

    @property
    def label(self) -> str:
        return self.name or "(current namespace)"

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            if self.name:
                # the socket is opened by the thread inside the namespace, so it belongs there;
                # pyroute2's own netns= would fork a child process per socket
                fd = self.call(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0).detach())
                self._ipr = IPRoute(fileno=fd)
            else:
                self._ipr = IPRoute()
        return self._ipr

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn inside the namespace (a thread that entered it once and stays there)."""
        if self.name is None:
            return fn(*args)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(
                max_workers=1, initializer=_enter, initargs=(str(NETNS_DIR / self.name),)
            )
        return self._worker.submit(fn, *args).result()

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net={NETNS_DIR / self.name}", "--", *argv] if self.name else list(argv)

    def run(self, argv: list[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(argv), input=input, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise VnetError(f"{argv[0]} failed in {self.label}: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None


class Namespaces:
    """The target namespace plus the endpoint namespaces opened on demand."""

    def __init__(self, target: str | None):
        self.target = target
        self.host = Namespace(target)
        self._others: dict[str, Namespace] = {}

    def get(self, ns: str) -> Namespace:
        """'' is the target namespace; anything else a named namespace."""
        if not ns:
            return self.host
        if ns not in self._others:
            self._others[ns] = Namespace(ns)
        return self._others[ns]

    def forget(self, ns: str) -> None:
        if ns in self._others:
            self._others.pop(ns).close()

    def close(self) -> None:
        for n in self._others.values():
            n.close()
        self._others.clear()
        self.host.close()

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
