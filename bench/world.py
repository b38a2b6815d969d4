"""The namespaces the benchmark makes, and their removal — only ever of what it made.

Everything lives in namespaces created here: vnet's sandbox `bench` (bench-host plays the host,
bench-wan the internet), the endpoint namespaces vnet or the baselines make for topologies `bn`
and `bnf` (marked on their `lo` as vnet marks them), and a few bare ones (`bnv-a`, `bnv-b`,
`bnipt`) marked `vnet-bench` on their `lo`. Removal checks the mark first; a namespace without
one of these marks is never touched, whatever its name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.env import NETNS_DIR, run
from vnet.drivers import process

SANDBOX = "bench"
MARK = "vnet-bench"
TOPOLOGIES = ("bn", "bnf", "bnd")  # topology names the benchmark uses; their namespaces start with these


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def lo_alias(ns: str) -> str | None:
    proc = run(["ip", "-n", ns, "-o", "link", "show", "lo"], check=False)
    if proc.returncode != 0:
        return None
    words = proc.stdout.split()
    return words[words.index("alias") + 1] if "alias" in words else None


def bare(ns: str) -> None:
    """A fresh namespace with lo up, marked as the benchmark's."""
    if exists(ns):
        remove(ns)
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "alias", MARK, "up"])


def ours(ns: str) -> bool:
    alias = lo_alias(ns) or ""
    return alias == MARK or any(alias.startswith(f"vnet:{t}:") for t in TOPOLOGIES)


def remove(ns: str) -> None:
    if not exists(ns):
        return
    if not ours(ns):
        raise RuntimeError(f"namespace {ns} is not the benchmark's (its lo carries no bench or bn/bnf mark); not removing it")
    kill_in(ns)
    run(["ip", "netns", "del", ns], check=False)


def kill_in(ns: str) -> None:
    """Stop the processes that run inside namespace `ns` (one the benchmark made)."""
    try:
        target = os.stat(NETNS_DIR / ns).st_ino
    except FileNotFoundError:
        return
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if os.stat(proc / "ns" / "net").st_ino == target:
                pids.append(int(proc.name))
        except OSError:
            continue
    process.stop_pids(pids, timeout=3.0)


def leftovers() -> list[str]:
    """Namespaces a previous, interrupted run of the benchmark left (by mark, not by name alone)."""
    out = []
    for p in sorted(NETNS_DIR.iterdir()) if NETNS_DIR.exists() else []:
        name = p.name
        if name.startswith(("bn-", "bnf-", "bnd-", "bnv-", "bnipt", "bnft")) and ours(name):
            out.append(name)
    return out


def sweep(names: list[str]) -> None:
    for name in names:
        try:
            remove(name)
        except Exception as exc:  # keep going: report, never touch what is not ours
            print(f"bench: could not remove {name}: {exc}")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


LOCK = Path("/tmp/vnet-bench.lock")


def exclusive() -> int | None:
    """Hold the benchmark's lock (one benchmark or profile at a time: they share sandbox 'bench').
    Returns the fd to keep open, or None when another run holds it."""
    import fcntl

    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def stale_state_dirs() -> None:
    """State directories of earlier runs that were killed (only called while holding the lock)."""
    for p in Path("/tmp").glob("vnet-bench-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
