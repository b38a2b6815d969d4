"""Daemons vnet supervises (dnsmasq, QEMU): started in a namespace, known by pid file.

A pid file alone can lie (a crashed daemon's pid reused by another process, or a file someone
wrote), so vnet records who it started in an identity file beside it (`<marker>.ident`): the
program's executable before it starts, then the daemon's pid, its start time (field 22 of
/proc/PID/stat) and the boot it started in. A process counts as vnet's only while all of these
still match, and its command line still names the marker (a path unique to the daemon under
vnet's state directory). Anything else — a pid file without an identity, a pid now held by
another program — is never signalled.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from vnet import libdir
from vnet.drivers.ns import Namespace
from vnet.errors import VnetError


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot: with the pid, it names one process."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def ident_file(pidfile: Path, marker: Path | str | None = None) -> Path:
    return Path(f"{marker or pidfile}.ident")


def _read_ident(path: Path) -> dict | None:
    try:
        ident = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return ident if isinstance(ident, dict) and isinstance(ident.get("exe"), str) else None


def _write_ident(path: Path, ident: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ident))
    tmp.replace(path)


def _program(argv0: str) -> str:
    import shutil  # here: it brings bz2 and lzma, ~2 ms of every start-up

    found = shutil.which(argv0)
    if found is None:
        raise VnetError(f"{argv0} is not installed (not found in PATH)")
    return os.path.realpath(found)


def is_ours(pid: int, ident: dict | None, marker: str) -> bool:
    """Whether `pid` is the process `ident` records (or, before its pid was recorded, a process
    of the recorded executable whose command line names `marker`)."""
    if ident is None or pid <= 0 or pid == os.getpid():
        return False
    if _exe(pid) != ident["exe"] or not any(marker in arg for arg in _cmdline(pid)):
        return False
    if "pid" in ident:
        return ident["pid"] == pid and _started_as_recorded(pid, ident)
    return True


def _started_as_recorded(pid: int, ident: dict) -> bool:
    """`pid` started when, and in the boot, the record says: the recorded process, not another
    that took its pid over (a zombie has no executable or command line left, but these)."""
    return ident.get("start") == start_time(pid) and ident.get("boot") == _boot_id()


def running(pidfile: Path, marker: Path | None = None) -> int | None:
    """The pid of the daemon that owns `pidfile`, or None if it is not running (or the pid file
    names a process vnet did not start). `marker` is the path its command line must name
    (default: the pid file itself)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if is_ours(pid, _read_ident(ident_file(pidfile, marker)), str(marker or pidfile)) else None


def reap(pidfile: Path, marker: Path | None = None, timeout: float = 5.0) -> None:
    """Collect the process recorded for `pidfile` if it has exited, or is exiting, and is a child
    of this process: QEMU is a child of the vnet that started it, and a guest that stopped by
    itself (a poweroff from inside, a panic) stays a zombie until that process waits for it. Init
    does so for the command line's guests once vnet exits; a program that uses vnet as a library
    would keep one zombie per such guest. Only the recorded process (pid, start time and boot
    match the record), never another child that took the pid over; waited for at most `timeout`."""
    ident = _read_ident(ident_file(pidfile, marker))
    pid = ident.get("pid") if ident else None
    if not isinstance(pid, int) or pid <= 0 or not is_gone(pid) or not _started_as_recorded(pid, ident):  # type: ignore[arg-type]
        return
    deadline = time.monotonic() + timeout
    while not collected(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def expect(pidfile: Path, program: str, marker: Path | None = None) -> None:
    """Before spawning a daemon whose pid file vnet writes itself: record the program, so a step
    cut short before the pid is known still finds (kill_named) what it started."""
    pidfile.unlink(missing_ok=True)
    _write_ident(ident_file(pidfile, marker), {"exe": _program(program)})


def record(pidfile: Path, pid: int, marker: Path | None = None) -> None:
    """The pid of a daemon vnet spawned, in its pid file and its identity record."""
    ident = ident_file(pidfile, marker)
    _write_ident(ident, {**(_read_ident(ident) or {}), "pid": pid, "start": start_time(pid), "boot": _boot_id()})
    tmp = pidfile.with_name(pidfile.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pidfile)


def start(ns: Namespace, argv: list[str], pidfile: Path, marker: Path | None = None, timeout: float = 10.0) -> int:
    """Run a self-daemonizing program in `ns`; wait until its pid file names a live process, and
    record that process's identity."""
    return start_many([(ns, argv, pidfile, marker)], timeout)[0]


def start_many(daemons: list[tuple[Namespace, list[str], Path, Path | None]], timeout: float = 10.0) -> list[int]:
    """`start` for several daemons (namespace, argv, pid file, marker) at once: all are spawned
    before any is waited for, so their start-ups overlap (ten dnsmasq one after another took ten
    times one). All or none: when one fails, those that did start are stopped."""
    spawned: list[tuple[Any, str, Path, Path | None]] = []  # (Popen, program, pid file, marker)
    try:
        for ns, argv, pidfile, marker in daemons:
            pidfile.unlink(missing_ok=True)
            # before it runs: a step cut short still knows what it started
            _write_ident(ident_file(pidfile, marker), {"exe": _program(argv[0])})
            proc = ns.spawn(argv)
            spawned.append((proc, Path(argv[0]).name, pidfile, marker))
        failed = None
        for proc, program, _, _ in spawned:  # each returns once its daemon has detached
            output = proc.communicate()[0]
            if proc.returncode != 0 and failed is None:
                failed = f"{program} did not start: {output.strip() or f'exit {proc.returncode}'}"
        if failed:
            raise VnetError(failed)
        pids: dict[Path, int] = {}
        deadline = time.monotonic() + timeout
        while len(pids) < len(spawned) and time.monotonic() < deadline:
            for _, _, pidfile, marker in spawned:
                if pidfile not in pids and (pid := running(pidfile, marker)) is not None:
                    ident = ident_file(pidfile, marker)
                    _write_ident(ident, {**_read_ident(ident), "pid": pid, "start": start_time(pid), "boot": _boot_id()})  # type: ignore[dict-item]
                    pids[pidfile] = pid
            if len(pids) < len(spawned):
                time.sleep(0.005)
        late = next((s for s in spawned if s[2] not in pids), None)
        if late is not None:
            raise VnetError(f"{late[1]} started but never wrote {late[2]}")
        return [pids[pidfile] for _, _, pidfile, _ in spawned]
    except BaseException:
        for proc, _, pidfile, marker in spawned:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            kill_named(str(marker or pidfile))  # one that detached may not have written its pid file yet
            stop(pidfile, marker)
        raise


def stop(pidfile: Path, marker: Path | None = None, timeout: float = 5.0) -> None:
    pid = running(pidfile, marker)
    if pid is not None:
        stop_pids([pid], timeout)
    reap(pidfile, marker)  # one that had stopped by itself
    pidfile.unlink(missing_ok=True)
    ident_file(pidfile, marker).unlink(missing_ok=True)


def is_gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie counts as gone: it runs nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def collected(pid: int) -> bool:
    """True once `pid` has exited and, if it is a child of this process, has been waited for. A
    process whose main thread has ended shows as a zombie while its other threads still exit
    (QEMU's do, for a while), and a wait does not collect it yet: `is_gone` alone would take it
    for done and leave it a zombie of this process."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return is_gone(pid)  # another's child (or collected already): its parent or init waits
    return done != 0


def _group_collected(pgid: int) -> bool:
    """True once every process of the group has exited, its leader waited for if it is ours."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True


def stop_pids(pids: list[int], timeout: float = 5.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL what is left after `timeout`; reaps those that are our children.
    With `group`, each pid leads a process group, and the whole group is stopped."""
    pids = list(pids)
    send, gone = (os.killpg, _group_collected) if group else (os.kill, collected)
    import signal  # here: `vnet status` stops nothing, and signal's enums cost its start-up ~0.6 ms

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                send(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            for pid in list(pids):
                if gone(pid):
                    pids.remove(pid)
            time.sleep(0.02)
        if not pids:
            return


def kill_named(marker: str, timeout: float = 5.0) -> None:
    """Stop the processes whose command line names `marker` (a path under vnet's state directory,
    unique to one daemon of one topology) and that run the program vnet recorded for it: a daemon
    started by a step cut short, pid file or not. Without a record, nothing is signalled."""
    ident = _read_ident(ident_file(Path(marker)))
    if ident is None:
        return
    intent = {"exe": ident["exe"]}  # any process of that program naming the marker, recorded pid or not
    pids = [int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit() and is_ours(int(proc.name), intent, marker)]
    stop_pids(pids, timeout)


def spawn(ns: Namespace, argv: list[str], pidfile: Path, log: Path, marker: Path | None = None, timeout: float = 10.0) -> int:
    """Run a program that stays in the foreground (`udhcpc -f`) in `ns`, detached in a session of
    its own, its output to `log`; record its identity as `start` does for a daemon. The pid file
    is written here: the program's own (if it writes one) names the same process."""
    import subprocess

    pidfile.unlink(missing_ok=True)
    ident = ident_file(pidfile, marker)
    exe = _program(argv[0])
    _write_ident(ident, {"exe": exe})  # before it runs: a step cut short still knows what it started
    with open(log, "ab") as out:
        proc = subprocess.Popen(ns.argv([exe, *argv[1:]]), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # nsenter enters, then execs the program: same pid
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise VnetError(f"{Path(argv[0]).name} exited at once ({proc.returncode}): {' '.join(tail) or 'no output'}")
        if _exe(proc.pid) == exe:
            _write_ident(ident, {"exe": exe, "pid": proc.pid, "start": start_time(proc.pid), "boot": _boot_id()})
            tmp = pidfile.with_name(pidfile.name + ".tmp")
            tmp.write_text(f"{proc.pid}\n")
            tmp.replace(pidfile)
            return proc.pid
        time.sleep(0.01)
    stop_pids([proc.pid])
    raise VnetError(f"{Path(argv[0]).name} did not start in {timeout:.0f}s")


def recorded_pids(state: Path) -> set[int]:
    """The live processes vnet started for one topology (dnsmasq, DHCP clients, QEMU), by the
    identity files in its state directory: what a namespace may run without being someone else's."""
    out: set[int] = set()
    for ident_path in libdir.named(state, "", ".ident"):
        ident = _read_ident(ident_path)
        marker = str(ident_path)[: -len(".ident")]
        if ident and isinstance(ident.get("pid"), int) and is_ours(ident["pid"], ident, marker):
            out.add(ident["pid"])
    return out


def with_children(ours: set[int], among: list[int]) -> set[int]:
    """`ours` and their descendants among `among` (dnsmasq's helper that runs the lease script)."""
    out = set(ours)
    grew = bool(ours)
    while grew:
        kids = {pid for pid in among if pid not in out and parent(pid) in out}
        out |= kids
        grew = bool(kids)
    return out


def parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])  # after the command name, which may hold spaces
