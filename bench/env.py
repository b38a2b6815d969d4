"""Helpers: the machine's description, timed commands, waiting for the kernel to settle."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETNS_DIR = Path("/run/netns")
VNET = str(Path(sys.executable).parent / "vnet")  # the console script of the venv running the bench


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ((proc.stdout or proc.stderr).strip().splitlines() or ["?"])[0]


def describe() -> dict:
    """Kernel, CPUs and the versions of everything measured."""
    import pyroute2

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    git = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout.strip()
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "pyroute2": getattr(pyroute2, "__version__", "?"),
        "nft": _first_line(["nft", "--version"]),
        "iproute2": _first_line(["ip", "-V"]),
        "iptables": _first_line(["iptables", "--version"]),
        "iperf3": _first_line(["iperf3", "--version"]),
        "dnsmasq": _first_line(["dnsmasq", "--version"]),
        "vnet_commit": git + (" + uncommitted changes in src/" if dirty else ""),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    """argv run inside a named network namespace (nsenter: no mount namespace, no /sys remount)."""
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--", *argv] if ns else list(argv)


def run(argv: list[str], input: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:8])}{' …' if len(argv) > 8 else ''} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[:800]}")
    return proc


@dataclass
class Timed:
    seconds: float
    returncode: int
    maxrss_kib: int  # peak resident set of the process (and the children it waited for)
    output: str
    timed_out: bool = False


def timed(argv: list[str], timeout: float, input_path: Path | None = None) -> Timed:
    """Wall time of one process, and its peak memory from wait4(2) (the per-child form of
    getrusage(RUSAGE_CHILDREN)). Killed (its whole group) after `timeout` seconds."""
    with tempfile.TemporaryFile() as out:
        stdin = open(input_path, "rb") if input_path else subprocess.DEVNULL
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            expired = threading.Event()

            def kill() -> None:
                expired.set()
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            elapsed = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if input_path:
                stdin.close()
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Timed(elapsed, proc.returncode, usage.ru_maxrss, text, expired.is_set())


def cpu_idle_fraction(interval: float) -> float:
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    i0, t0 = sample()
    time.sleep(interval)
    i1, t1 = sample()
    return (i1 - i0) / max(1, t1 - t0)


# How idle the CPUs must be, in two 0.1 s windows in a row, before the next measurement. 95%: at
# 85% a no-op at N=1000 began while the kernel still delivered the IPv6 start-up packets of the
# apply's 500 new namespaces (12-19% of the machine in softirq for ~2.5 s), and paid ~55 ms for it
# (settle_ab in docs/benchmarks.md, Method). An idle machine here is 100% idle in most windows.
IDLE = 0.95
WAKE_IDLE = 0.85  # the old criterion: the no-op "in the apply's wake" row is measured after it


def settle(max_wait: float = 8.0, idle: float = IDLE) -> float:
    """Flush the filesystems, then wait until the CPUs are mostly idle again (namespace teardown
    runs in kernel workers after the command that asked for it has returned), at most `max_wait`
    seconds. Returns the wait.

    The flush: every namespace is a file in /run/netns, on this machine the root ext4 (not a
    tmpfs), and creating 500 of them went from 0.39 to 0.92 s over ten cycles of making and
    deleting them 5 s apart, with no such climb when each cycle began with a sync of 2–4 ms
    (0.49–0.61 and 0.34–0.47 s in two series; docs/benchmarks.md, Method). Without it a build
    pays for the journal its predecessors left, by its place in the run."""
    t0 = time.monotonic()
    os.sync()
    calm = 0
    while time.monotonic() - t0 < max_wait:
        if cpu_idle_fraction(0.1) >= idle:
            calm += 1
            if calm >= 2:
                break
        else:
            calm = 0
    return time.monotonic() - t0


def cpu_probe() -> float:
    """Seconds of a fixed piece of pure Python (300,000 stores into a dict): how fast the host runs
    Python at that moment. On this machine the same loop took 27–57 ms within seconds of itself,
    0.25 s apart, with no steal time reported, and a no-op apply, which is CPU-bound, moves with
    it where an apply, much of it waiting on the kernel, moves less (docs/benchmarks.md,
    nineteenth round). Reported next to the no-op, so that a reader sees the phase it met."""
    d: dict[int, str] = {}
    t0 = time.perf_counter()
    for i in range(300_000):
        d[i % 1000] = str(i)
    return time.perf_counter() - t0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (make setup installs it)")
    return path


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    return _ANSI.sub("", text)
