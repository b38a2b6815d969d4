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
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running(pidfile, marker) == pid:
        time.sleep(0.02)
    if running(pidfile, marker) == pid:
        os.kill(pid, signal.SIGKILL)
        while running(pidfile, marker) == pid:
            time.sleep(0.02)
    pidfile.unlink(missing_ok=True)
