"""Boot persistence: a systemd unit per topology file (`vnet enable FILE`, `vnet disable FILE`).

The unit is a oneshot that stays active (RemainAfterExit): start and reload apply the file, stop
destroys what it made. It runs early, as nftables.service does: after local file systems and
the firewalls (vnet's table must not be flushed by a ruleset loaded after it), before
network-pre.target so the distribution's network configuration finds vnet's bridges there. A
file whose networks span hosts needs the underlay first: it runs after network-online instead.

What must outlive a reboot (dnsmasq leases, generated VM disks) is kept under the lib directory
(/var/lib/vnet); the journal and the rest of the state stay in /run, which a reboot empties.

The unit directory is a parameter, so tests write into a temporary one. The unit carries a mark
naming its file: disable removes only a unit vnet wrote for that file, enable never overwrites a
unit someone else wrote.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vnet.errors import VnetError

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_LIB_DIR = Path("/var/lib/vnet")
WANTED_BY = "multi-user.target"
MARK = "# vnet-unit file="


def unit_name(topology: str) -> str:
    return f"vnet-{topology}.service"


def _exec_arg(arg: str) -> str:
    """One argument of an Exec= line, as systemd reads it: quoted when it has to be, with `%` and
    `$` escaped so systemd expands nothing."""
    if any(ord(c) < 32 or c == "\x7f" for c in arg):
        raise VnetError(f"{arg!r} holds a control character; systemd cannot run it: move or rename the file")
    arg = arg.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec(argv: list[str]) -> str:
    return " ".join(_exec_arg(a) for a in argv)


def vnet_program() -> str:
    """The vnet the unit runs: the one running now (its entry point beside this Python)."""
    beside = Path(sys.executable).with_name("vnet")
    found = beside if beside.exists() else shutil.which("vnet")
    if not found:
        raise VnetError("cannot find the vnet program to run at boot; install vnet so that `vnet` is in PATH")
    return os.path.abspath(found)


@dataclass(frozen=True)
class Unit:
    topology: str
    file: Path  # the topology file, absolute
    program: str
    netns: str | None = None
    state_dir: Path | None = None
    lib_dir: Path | None = None
    multi_host: bool = False

    @property
    def name(self) -> str:
        return unit_name(self.topology)

    def argv(self, *command: str) -> list[str]:
        out = [self.program]
        if self.netns:
            out += ["--netns", self.netns]
        if self.state_dir:
            out += ["--state-dir", str(self.state_dir)]
        if self.lib_dir:
            out += ["--lib-dir", str(self.lib_dir)]
        return out + list(command)

    def render(self) -> str:
        file = str(self.file)
        if self.multi_host:
            order = ["After=network-online.target local-fs.target nftables.service firewalld.service",
                     "Wants=network-online.target"]
        else:
            order = ["DefaultDependencies=no",
                     "After=local-fs.target nftables.service firewalld.service",
                     "Wants=network-pre.target",
                     "Before=network-pre.target shutdown.target",
                     "Conflicts=shutdown.target"]
        lines = [
            f"{MARK}{file}",
            "# written by `vnet enable`; `vnet disable` removes it",
            "[Unit]",
            f"Description=vnet topology {self.topology} ({file})",
            *order,
            f"RequiresMountsFor={_exec_arg(file)}",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            f"ExecStart={_exec(self.argv('apply', file))}",
            f"ExecReload={_exec(self.argv('apply', file))}",
            # at shutdown the namespaces vnet made may still run programs (DHCP clients): stop them
            f"ExecStop={_exec(self.argv('destroy', '--force', file))}",
            "",
            "[Install]",
            f"WantedBy={WANTED_BY}",
        ]
        return "\n".join(lines) + "\n"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each with its values in order (comments
    and blank lines skipped, `\\` continuations joined). Enough to check what vnet writes."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            raise ValueError(f"not a unit file line: {line!r}")
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def _marked_for(path: Path) -> str | None:
    try:
        first = path.read_text().splitlines()[:1]
    except (OSError, UnicodeDecodeError):
        return None
    return first[0][len(MARK):] if first and first[0].startswith(MARK) else None


def _systemd_running(unit_dir: Path) -> bool:
    return unit_dir == DEFAULT_UNIT_DIR and Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def enable(unit: Unit, unit_dir: Path = DEFAULT_UNIT_DIR) -> Path:
    """Write the unit and link it into multi-user.target.wants (what `systemctl enable` does for
    a unit in /etc/systemd/system); tell a running systemd. Returns the unit's path."""
    unit_dir = Path(unit_dir)
    path = unit_dir / unit.name
    if path.exists() or path.is_symlink():
        owner = _marked_for(path) if not path.is_symlink() else None
        if owner is None:
            raise VnetError(f"{path} exists and is not a unit vnet wrote; remove or rename it, then run vnet enable again")
        if owner != str(unit.file):
            raise VnetError(f"{path} starts topology {unit.topology} from {owner}; run `vnet disable {owner}` first")
    unit_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(unit.render())
    tmp.chmod(0o644)
    tmp.replace(path)
    wants = unit_dir / f"{WANTED_BY}.wants"
    wants.mkdir(exist_ok=True)
    link = wants / unit.name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(path)
    if _systemd_running(unit_dir):
        subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True)
    return path


def disable(topology: str, file: Path, unit_dir: Path = DEFAULT_UNIT_DIR) -> Path | None:
    """Remove the unit vnet wrote for `file` and its wants link; None when there was none. The
    network stays as it is (`vnet destroy` removes it)."""
    unit_dir = Path(unit_dir)
    path = unit_dir / unit_name(topology)
    if not path.exists():
        return None
    owner = _marked_for(path)
    if owner is None:
        raise VnetError(f"{path} is not a unit vnet wrote; leaving it alone")
    if owner != str(file):
        raise VnetError(f"{path} was enabled for {owner}, not {file}; run `vnet disable {owner}`")
    link = unit_dir / f"{WANTED_BY}.wants" / path.name
    if link.is_symlink():
        link.unlink()
    path.unlink()
    if _systemd_running(unit_dir):
        subprocess.run(["systemctl", "daemon-reload"], check=False, capture_output=True)
    return path
