"""QEMU guests as supervised processes, run as an unprivileged user inside a seccomp sandbox.

vnet starts QEMU itself (no -daemonize: QEMU's fork would break `-sandbox spawn=deny`), through
`setpriv` to QEMU's user (see qemuargs). What QEMU needs from the state directory, which only root
can enter, vnet makes and hands over open: the listening QMP and agent sockets, the console log
(owned by QEMU's user, so it can reopen it through /dev/fd), and the tiny guest's kernel and initrd.
QEMU's stderr goes to `vm-<name>.log`.

Stopping is graceful first: the ACPI power button through QMP (`system_powerdown`), then a bounded
wait for the guest to power off (QEMU then exits), then SIGTERM and SIGKILL. The tiny guest powers
off on the button (busybox acpid); a guest that ignores it is killed once the wait is over.

The pid file is vnet's own record of the process it started, written by root: QEMU never writes it
(a pid file written by the confined process could name any process to be signalled). The command
line names that record (an inert `-object secret`), which is how `process.running` and
`process.kill_named` know the process as this VM's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vnet import libdir, qemuargs
from vnet.drivers import process
from vnet.drivers.ns import Namespaces
from vnet.errors import VnetError
from vnet.names import sha256
from vnet.resources import Resource, make

if TYPE_CHECKING:
    import socket

START_TIMEOUT = 30.0  # seconds until QEMU greets on QMP: it has parsed its options and opened its files
POWERDOWN_TIMEOUT = float(os.environ.get("VNET_POWERDOWN_TIMEOUT", "30"))  # for the guest to power off on ACPI
REPRESS_S = 2.0  # between presses of the power button while waiting
QEMU = "qemu-system-x86_64"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def digest(argv: list[str] | tuple[str, ...], inputs: dict | tuple | None = None) -> str:
    parts = list(argv)
    for fd, path in sorted(dict(inputs or {}).items()):
        parts.append(f"fd{fd}={path}")  # the files behind /dev/fd/N in the command line
    return sha256("\0".join(parts).encode()).hexdigest()[:16]


class Exited(Exception):
    """QEMU exited before it was ready; args[0] is its exit status."""


def _ids(argv: list[str]) -> tuple[int, int]:
    """QEMU's uid and gid, from the setpriv prefix of its command line."""
    uid = next(int(a.split("=", 1)[1]) for a in argv if a.startswith("--reuid="))
    gid = next(int(a.split("=", 1)[1]) for a in argv if a.startswith("--regid="))
    if uid == 0 or gid == 0:
        raise VnetError("refusing to start QEMU as root")
    return uid, gid


def _listener(path: Path) -> socket.socket:
    import socket  # here, not at the top: every `vnet apply` imports this module, few start a VM

    path.unlink(missing_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # root alone connects
    try:
        s.bind(str(path))
    finally:
        os.umask(old)
    s.listen(8)
    return s


def _high(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)  # out of the way of the numbers QEMU expects


def _inheritable() -> list[int]:
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.get_inheritable(int(name)):
                out.append(int(name))
        except OSError:
            pass  # the directory's own descriptor, closed by now
    return out


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-lines:])


def _reap(pid: int) -> int | None:
    """QEMU's exit status if it has exited (it is our child while this vnet runs), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None if not process.is_gone(pid) else 0
    return os.waitstatus_to_exitcode(status) if done else None


def _wait_ready(pid: int, qmp: Path, timeout: float) -> None:
    """Until QEMU answers a command on QMP: it greets as soon as the socket is up, but commands are
    answered only from its main loop, after the machine is built (kernel loaded, disks and taps
    open). VnetError with its last words if it exits first."""
    import socket

    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(qmp))  # queued by the kernel: vnet made the socket listen already
        s.settimeout(0.1)
        received = b""
        try:
            s.sendall(b'{"execute": "qmp_capabilities"}\n{"execute": "query-status", "id": "vnet-ready"}\n')
        except OSError:
            pass  # QEMU is exiting already: its status tells
        while time.monotonic() < deadline:
            code = _reap(pid)
            if code is not None:
                raise Exited(code)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""  # reset: QEMU is exiting
            if not chunk:
                time.sleep(0.05)  # QEMU closed the connection: it is exiting
                continue
            msg, received = _reply(received + chunk, "vnet-ready")
            if msg is not None:
                if "return" in msg:
                    return
                raise VnetError(f"QEMU answered query-status with {msg.get('error')}")
    raise TimeoutError


def _reply(received: bytes, ident: str) -> tuple[dict | None, bytes]:
    """The QMP reply with id `ident` among the complete lines received (events and greetings are
    passed over), and what is left of an unfinished line."""
    *lines, rest = received.split(b"\n")
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("id") == ident:
            return msg, rest
    return None, rest


def create(nss: Namespaces, state: Path, r: Resource) -> None:
    f = qemuargs.files(state, r.key)
    process.reap(f["pid"])  # the guest this one replaces, if it stopped by itself: before its record goes
    argv = list(r.get("argv"))
    inputs = {int(k): v for k, v in dict(r.get("inputs") or {}).items()}
    uid, gid = _ids(argv)
    f["argv"].parent.mkdir(parents=True, exist_ok=True)
    f["argv"].write_text(json.dumps({"argv": argv, "inputs": {str(k): v for k, v in inputs.items()}}))
    opened: list[int] = []
    sockets: list[socket.socket] = []
    pid = None
    try:
        qmp, agent, serial = _listener(f["qmp"]), _listener(f["agent"]), _listener(f["serial"])
        sockets += [qmp, agent, serial]
        f["console"].unlink(missing_ok=True)  # a fresh log per boot
        console = os.open(f["console"], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        opened.append(console)
        os.fchown(console, uid, gid)  # QEMU's user reopens it through /dev/fd; the directory stays root's
        log = os.open(f["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        opened.append(log)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        opened.append(null)
        given = {qemuargs.FD_QMP: qmp.fileno(), qemuargs.FD_AGENT: agent.fileno(), qemuargs.FD_CONSOLE: console,
                 qemuargs.FD_SERIAL: serial.fileno()}
        for fd, path in inputs.items():
            given[fd] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened.append(given[fd])
        high = {}
        for target, fd in given.items():
            high[target] = _high(fd)
            opened.append(high[target])
        # nothing of vnet's leaks into QEMU: descriptors vnet inherited itself are closed, too
        actions = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable() if fd > 2]
        actions += [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in high.items()]
        full = nss.host.argv(argv)  # nsenter and setpriv exec in place: the pid is QEMU's
        process.expect(f["pid"], next(a for a in argv if Path(a).name.startswith("qemu-system-")))
        pid = os.posix_spawnp(full[0], full, {"PATH": SAFE_PATH, "LC_ALL": "C"}, file_actions=actions, setsid=True)
        # the pid, its start time and the boot name this process alone (they stay the same as
        # nsenter and setpriv exec into QEMU), so `process.running` knows it as this VM's
        process.record(f["pid"], pid)
        _wait_ready(pid, f["qmp"], START_TIMEOUT)
    except BaseException as exc:
        if pid is not None:
            process.stop_pids([pid], timeout=5.0)
        f["pid"].unlink(missing_ok=True)
        process.ident_file(f["pid"]).unlink(missing_ok=True)
        f["argv"].unlink(missing_ok=True)
        if isinstance(exc, Exited):
            raise VnetError(f"QEMU for VM {r.key} exited at start (status {exc.args[0]}): {_tail(f['log']) or 'no message'}") from None
        if isinstance(exc, TimeoutError):
            raise VnetError(f"QEMU for VM {r.key} did not answer on QMP within {START_TIMEOUT:.0f}s: {_tail(f['log'])}") from None
        raise
    finally:
        for s in sockets:
            s.close()
        for fd in opened:
            os.close(fd)


def qmp(path: Path, command: str, timeout: float = 5.0) -> dict:
    """Run one QMP command on a VM's monitor socket; its reply (`return` or `error`)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b'{"execute": "qmp_capabilities"}\n' + json.dumps({"execute": command, "id": "vnet"}).encode() + b"\n")
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            msg, received = _reply(received + chunk, "vnet")
            if msg is not None:
                return msg
    raise VnetError(f"QEMU did not answer {command} on {path} within {timeout:.0f}s")


def shutdown(state: Path, name: str, timeout: float | None = None) -> str:
    """Stop a VM: ACPI powerdown through QMP (pressed again every REPRESS_S), a bounded wait for
    the guest to power off, then SIGTERM and SIGKILL. Says how it ended: "powered off", "killed" (the guest ignored the power
    button for `timeout` seconds, or QMP did not answer) or "not running"."""
    f = qemuargs.files(state, name)
    timeout = POWERDOWN_TIMEOUT if timeout is None else timeout
    pid = process.running(f["pid"])
    how = "not running"
    if pid is not None:
        how = "killed"
        try:
            pressed = "return" in qmp(f["qmp"], "system_powerdown", timeout=min(5.0, max(timeout, 0.5)))
        except (OSError, VnetError):
            pressed = False
        if pressed:
            deadline = time.monotonic() + timeout
            again = time.monotonic() + REPRESS_S
            while time.monotonic() < deadline:
                if process.collected(pid):  # our child while the vnet that started it runs
                    how = "powered off"
                    break
                if time.monotonic() >= again:
                    # a press while the guest still boots is lost (nothing listens for the button
                    # yet): press again, as a person would, so a booting guest is not waited out
                    again = time.monotonic() + REPRESS_S
                    try:
                        qmp(f["qmp"], "system_powerdown", timeout=2.0)
                    except (OSError, VnetError):
                        pass
                time.sleep(0.05)
    process.stop(f["pid"], timeout=10.0)  # what is left: SIGTERM, then SIGKILL; the records go
    return how


def delete(nss: Namespaces, state: Path, r: Resource) -> None:
    shutdown(state, r.key)
    f = qemuargs.files(state, r.key)
    for k in ("argv", "agent", "qmp", "serial"):
        f[k].unlink(missing_ok=True)


def update(nss: Namespaces, state: Path, old: Resource, new: Resource) -> None:
    delete(nss, state, old)
    create(nss, state, new)


def _record(path: Path) -> tuple[list[str], dict[str, str]]:
    data = json.loads(path.read_text())
    if isinstance(data, list):  # written by an older vnet: the command line alone
        return data, {}
    return list(data["argv"]), dict(data.get("inputs") or {})


def observe(state: Path) -> list[Resource]:
    out = []
    for argv_file in sorted(libdir.named(state, "vm-", ".argv")):
        name = argv_file.name[len("vm-") : -len(".argv")]
        if process.running(qemuargs.files(state, name)["pid"]) is None:
            continue  # not running: apply starts it again
        try:
            argv, inputs = _record(argv_file)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out.append(make("vm", name, {"argv": argv, "inputs": inputs}, digest=digest(argv, inputs)))
    return out


def uid_of(pid: int) -> int | None:
    """The real uid a process runs as (from /proc/PID/status), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None

