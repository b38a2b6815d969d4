"""FRR for `overlay: {control: evpn}`: vnet's own zebra and bgpd in the target namespace, one
pair per topology, supervised like dnsmasq (identity files, stopped by pid, started again by the
next apply when either has died). The config is rendered by vnet.frrconf; every file sits under
the topology's state directory, the pathspace (-N) is unique to it.

vnet never touches an FRR it did not start: a zebra of someone else's in the target namespace
makes the apply fail before vnet starts its own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vnet import frrconf
from vnet.drivers import ns as nsmod
from vnet.drivers import process
from vnet.errors import VnetError
from vnet.facts import HostFacts
from vnet.kinds.base import Ctx, Kind
from vnet.names import sha256
from vnet.resources import Resource, make
from vnet.spec.models import Topology

FRR_DIR = Path("/usr/lib/frr")
ZEBRA, BGPD = FRR_DIR / "zebra", FRR_DIR / "bgpd"
RELOAD = FRR_DIR / "frr-reload.py"  # Debian's frr-pythontools: applies the difference of two configs through vtysh
RUN_BASE = Path("/var/run/frr")  # where FRR makes a directory per pathspace, even with every path given
TMP_BASE = Path("/var/tmp/frr")  # where each FRR daemon keeps a directory for its crash logs
# vnet's daemons run as root (their files are in vnet's 0700 state directory); FRR wants the
# user to be in its vty group
RUN_AS = ["-u", "root", "-g", "frrvty"]


def digest(config: str) -> str:
    return sha256(config.encode()).hexdigest()[:16]


def installed() -> str | None:
    """None when FRR's zebra and bgpd are here, else what is missing."""
    missing = [str(p) for p in (ZEBRA, BGPD) if not os.access(p, os.X_OK)]
    return ", ".join(missing) or None


def vtysh(state: Path) -> list[str]:
    """The vtysh command line that reaches vnet's FRR of the topology whose state is `state`."""
    return ["vtysh", "--vty_socket", str(frrconf.files(state)["run"])]


def sessions(state: Path) -> list[dict]:
    """The BGP sessions of vnet's FRR for the topology whose state is `state` (`vnet status`):
    peer, state, EVPN prefixes received and sent, uptime. Empty when it does not run."""
    if _running(state) is None:
        return []
    import json
    import subprocess  # here, once FRR runs: `vnet status` of a topology without it runs no command

    try:
        proc = subprocess.run([*vtysh(state), "-c", "show bgp l2vpn evpn summary json"], capture_output=True, text=True, timeout=10)
        peers = json.loads(proc.stdout).get("peers", {}) if proc.returncode == 0 else {}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    return [{"peer": peer, "state": p.get("state", "?"), "received": p.get("pfxRcd", 0), "sent": p.get("pfxSnt", 0), "up": p.get("peerUptime", "")}
            for peer, p in sorted(peers.items())]


class Frr(Kind):
    name = "frr"
    after = ("vxlan", "address", "bridge_address", "ruleset")  # zebra reads the vxlan devices; BGP binds to the underlay

    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        if not frrconf.wanted(topo, facts):
            return []
        config = frrconf.render(topo, facts)
        return [make("frr", "frr", {"config": config}, digest=digest(config))]

    def observe(self, view, obs) -> None:
        f = frrconf.files(view.state)
        if _running(view.state) is None:
            return  # not there, or one daemon died: apply starts both again
        try:
            text = f["conf"].read_text()
        except OSError:
            return
        obs.add(make("frr", "frr", {"config": text}, digest=digest(text)))

    def create(self, ctx: Ctx, r: Resource) -> None:
        config = r.get("config") or ""
        f = frrconf.files(ctx.state)
        if ctx.undoing:
            _restorable(config, f["log"])
        missing = installed()
        if missing:
            raise VnetError(f"control: evpn needs FRR, and {missing} is missing: install the frr package (apt-get install frr)")
        long = frrconf.too_long(ctx.state)
        if long:
            raise VnetError(f"FRR's socket path {long} is longer than a unix socket takes ({frrconf.SUN_PATH_MAX} bytes): use a shorter --state-dir")
        _stop(ctx.state)  # what is left of a pair where one daemon died
        _refuse_foreign(ctx.nss.target)
        f["run"].mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_configs(f, config)
        ns = ctx.nss.host
        common = ["-d", "-N", frrconf.pathspace(ctx.state), "-z", str(f["zserv"]), "--vty_socket", str(f["run"]), *RUN_AS]
        try:
            for daemon, conf in ((ZEBRA, f["zconf"]), (BGPD, f["bconf"])):
                pidfile = f[f"{daemon.name}_pid"]
                pid = process.start(ns, [str(daemon), *common, "-f", str(conf), "-i", str(pidfile)], pidfile, marker=conf)
                # its crash-log directory, removed when it stops (also after it died)
                pidfile.with_suffix(".tmpdir").write_text("".join(f"{d}\n" for d in _tmpdirs(pid)))
        except VnetError:
            _remove(ctx.state, ctx.nss.target)
            raise

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        """A changed config in place: frr-reload.py sends the running daemons the difference (a
        host gone from `hosts:` loses its neighbor, every other session stays up and keeps its
        routes). When that cannot be done (no frr-reload.py, a daemon down, the reload fails, or
        undoing), FRR is restarted with the new config."""
        if not ctx.undoing and _reload(ctx.state, new.get("config") or ""):
            return
        self.delete(ctx, old)
        self.create(ctx, new)

    def delete(self, ctx: Ctx, r: Resource) -> None:
        _remove(ctx.state, ctx.nss.target)

    def sweep(self, ctx: Ctx, r: Resource, obs) -> None:
        # started, but killed before its pid was recorded: found by its config path, and all
        # the rest removed as by delete
        _remove(ctx.state, ctx.nss.target)


_FORWARDING = re.compile(r"(no )?ip(v6)? forwarding")


def _reload(state: Path, config: str) -> bool:
    """Apply `config` to the running daemons of this topology in place; True when done. The
    files are written first (a daemon that restarts later reads the new config); a reload that
    fails leaves the caller to restart FRR, which writes them again."""
    import subprocess

    if not os.access(RELOAD, os.X_OK) or _running(state) is None:
        return False
    f = frrconf.files(state)
    _write_configs(f, config)
    # frr-reload.py compares with what FRR shows and sends the difference. FRR shows lines that
    # are not config but the kernel's state (`no ip forwarding`, `no ipv6 forwarding`: the
    # sysctls as zebra reads them) and the machine's hostname that vtysh adds; compared with vnet's
    # config they would be "removed", which switches forwarding on. They are added to the copy
    # that frr-reload.py reads, so they are no difference.
    try:
        shown = subprocess.run([*vtysh(state), "-c", "show running-config"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if shown.returncode != 0:
        return False
    ours = set(config.splitlines())
    extra = [line for line in shown.stdout.splitlines()
             if line not in ours and (_FORWARDING.fullmatch(line) or line.startswith("hostname "))]
    # the copy is frr.conf of --confdir: frr-reload.py then does not `write` the running config
    # over the daemons' own files afterwards (it does for any other file name)
    copy = f["run"] / "frr.conf"
    _write(copy, config + "".join(line + "\n" for line in extra))
    argv = [str(RELOAD), "--reload", "--stdout", "--log-level", "error", "--vty_socket", str(f["run"]),
            "--rundir", str(f["run"]), "--confdir", str(f["run"]), "--bindir", "/usr/bin", str(copy)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        copy.unlink(missing_ok=True)
    return proc.returncode == 0 and _running(state) is not None


def _write_configs(f: dict[str, Path], config: str) -> None:
    """The whole config (what observe reads back) and each daemon's part of it."""
    _write(f["conf"], config)
    _write(f["zconf"], frrconf.part(config, "zebra"))
    _write(f["bconf"], frrconf.part(config, "bgpd"))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _daemons(state: Path) -> list[tuple[Path, Path]]:
    """(pid file, marker) of bgpd, then zebra: the order they stop in."""
    f = frrconf.files(state)
    return [(f["bgpd_pid"], f["bconf"]), (f["zebra_pid"], f["zconf"])]


def _running(state: Path) -> tuple[int, int] | None:
    """The pids of vnet's bgpd and zebra for this topology, when both run."""
    pids = [process.running(pidfile, marker) for pidfile, marker in _daemons(state)]
    return None if None in pids else (pids[0], pids[1])  # type: ignore[return-value]


_TMPDIR = re.compile(r"(zebra|bgpd)\.\d+")


def _tmpdirs(pid: int) -> list[Path]:
    """The crash-log directories under /var/tmp/frr the daemon holds open (FRR names them by the
    pid it had before it daemonized, so they are found by what the daemon holds, not by name)."""
    out = []
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return []
    for fd in fds:
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue
        if target.parent == TMP_BASE and _TMPDIR.fullmatch(target.name):
            out.append(target)
    return out


def _stop(state: Path) -> None:
    """Stop vnet's bgpd and zebra of this topology (by the pids vnet recorded), and remove the
    crash-log directories they held: as root without CAP_DAC_OVERRIDE they cannot remove those
    themselves from FRR's /var/tmp/frr."""
    for pidfile, marker in _daemons(state):
        pid = process.running(pidfile, marker)
        held = set(_tmpdirs(pid)) if pid is not None else set()
        try:
            recorded = {Path(line) for line in pidfile.with_suffix(".tmpdir").read_text().splitlines()}
        except OSError:
            recorded = set()
        process.stop(pidfile, marker)
        import shutil  # here: it brings bz2 and lzma, ~2 ms of every start-up

        for d in held | recorded:
            if d.parent == TMP_BASE and _TMPDIR.fullmatch(d.name):
                shutil.rmtree(d, ignore_errors=True)
        pidfile.with_suffix(".tmpdir").unlink(missing_ok=True)


def _remove(state: Path, target: str | None) -> None:
    """Stop vnet's daemons of this topology, also those whose pid was never recorded (a step cut
    short: found by the config path on their command line and the program vnet recorded), and
    remove every file: config, run directory, FRR's pathspace directory, crash-log directories."""
    import shutil

    f = frrconf.files(state)
    _stop(state)
    for marker in (f["bconf"], f["zconf"]):
        unrecorded = [pid for pid in nsmod.pids_in(target) if any(str(marker) == arg for arg in _cmdline(pid))]
        held = [d for pid in unrecorded for d in _tmpdirs(pid)]
        process.kill_named(str(marker))
        for d in held:
            shutil.rmtree(d, ignore_errors=True)
        process.ident_file(Path(marker)).unlink(missing_ok=True)
    for path in (f["conf"], f["zconf"], f["bconf"]):
        path.unlink(missing_ok=True)
    shutil.rmtree(f["run"], ignore_errors=True)
    try:
        (RUN_BASE / frrconf.pathspace(state)).rmdir()
    except OSError:
        pass  # not made, or someone put something there: left alone


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _refuse_foreign(target: str | None) -> None:
    """A zebra vnet did not start (for this topology) in the target namespace: vnet never edits or
    runs beside a foreign FRR (two zebras would fight over the same kernel tables)."""
    zebra = os.path.realpath(ZEBRA)
    for pid in nsmod.pids_in(target):
        try:
            exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        except OSError:
            continue
        if exe == zebra:
            where = f"namespace {target}" if target else "this namespace"
            raise VnetError(f"a zebra that this topology's vnet did not start runs in {where} (pid {pid}): vnet runs its own FRR "
                            f"and never edits another; stop that FRR, or use overlay control: static")


def _restorable(config: str, log: Path) -> None:
    """A recorded config (undo, recovery) is run only when it logs to vnet's own log file: FRR
    opens that path as root."""
    for line in config.splitlines():
        if line.startswith("log ") and line.strip() != f"log file {log}":
            raise VnetError("refusing to restart FRR from a recorded config that logs elsewhere: run `vnet apply` to start it from the topology")


KINDS = (Frr(),)
