"""Daemons vnet supervises (dnsmasq, QEMU): started in a namespace, known by pid file.

A pid file alone can lie (a crashed daemon's pid reused by another process), so a process counts
as vnet's only while its command line still names a path unique to the topology under vnet's
state directory (its pid file, or its config file). Anything else is never signalled.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from vnet.drivers.ns import Namespace
from vnet.errors import VnetError


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def running(pidfile: Path, marker: Path | None = None) -> int | None:
    """The pid of the daemon that owns `pidfile`, or None if it is not running. `marker` is the
    path its command line must name (default: the pid file itself)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if any(str(marker or pidfile) in arg for arg in _cmdline(pid)):
        return pid
    return None


def start(ns: Namespace, argv: list[str], pidfile: Path, marker: Path | None = None, timeout: float = 10.0) -> int:
    """Run a self-daemonizing program in `ns`; wait until its pid file names a live process."""
    pidfile.unlink(missing_ok=True)
    proc = ns.run(argv, check=False)
    if proc.returncode != 0:
        raise VnetError(f"{Path(argv[0]).name} did not start: {(proc.stderr or proc.stdout).strip() or f'exit {proc.returncode}'}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running(pidfile, marker)
        if pid is not None:
            return pid
        time.sleep(0.02)
    stop(pidfile, marker)
    raise VnetError(f"{Path(argv[0]).name} started but never wrote {pidfile}")


def stop(pidfile: Path, marker: Path | None = None, timeout: float = 5.0) -> None:
    pid = running(pidfile, marker)
    if pid is not None:
        stop_pids([pid], timeout)
    pidfile.unlink(missing_ok=True)


def is_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts as gone: it runs nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


def stop_pids(pids: list[int], timeout: float = 5.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL what is left after `timeout`; reaps those that are our children.
    With `group`, each pid leads a process group, and the whole group is stopped."""
    pids = list(pids)
    send, gone = (os.killpg, _group_gone) if group else (os.kill, is_gone)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                send(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            for pid in list(pids):
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                if gone(pid):
                    pids.remove(pid)
            time.sleep(0.02)
        if not pids:
            return


def kill_named(marker: str, timeout: float = 5.0) -> None:
    """Stop the processes whose command line names `marker` (a path under vnet's state directory,
    unique to one daemon of one topology): a daemon started by a step cut short, pid file or not."""
    pids = [
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and int(proc.name) != os.getpid() and any(marker in arg for arg in _cmdline(int(proc.name)))
    ]
    stop_pids(pids, timeout)
