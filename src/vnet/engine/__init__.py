"""Plan, apply, destroy: the engine that runs a topology's plan on a host.

In parts a reader finds by name:
- lock.py      per-topology and per-namespace locks; claims of subnets, bridges and uplinks
- journal.py   the write-ahead journal of a run
- run.py       running a plan through the kinds' verbs, and undoing it on failure
- recovery.py  bringing the host back after a run that was killed
The kinds (vnet.kinds) do the work; the engine has no per-kind branches. The bridged uplink move
and its check are the uplink kind's (kinds/uplink.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vnet import overlay
from vnet.desired import desired
from vnet.drivers import kvm, sysctl
from vnet.drivers.ns import Namespaces
from vnet.engine.journal import Journal
from vnet.engine.lock import Claim, Claims, LockTimeout, flock
from vnet.engine.recovery import recover
from vnet.engine.run import Runner
from vnet.errors import ClashError, NotPermitted, StepFailed
from vnet.facts import HostFacts
from vnet.kinds import Ctx
from vnet.observe import Observation, observe
from vnet.plan import Action, diff
from vnet.preflight import check
from vnet.resources import Resource, make
from vnet.spec.models import NetnsSpec, Topology

__all__ = ["DEFAULT_STATE_DIR", "Engine", "LockTimeout", "Planned", "has_net_admin", "require_net_admin"]

DEFAULT_STATE_DIR = Path("/run/vnet")
CAP_NET_ADMIN = 12


def resolvers(netns: str | None) -> list[str]:
    """The host's DNS servers, as `ip netns exec` would show them to the target namespace."""
    candidates = [Path("/etc/netns") / netns / "resolv.conf"] if netns else []
    for path in [*candidates, Path("/etc/resolv.conf")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        return [line.split()[1] for line in text.splitlines() if line.startswith("nameserver") and len(line.split()) > 1]
    return []


def state_root(state_dir: Path | str, netns: str | None) -> Path:
    """Where a target namespace's topologies keep their state: each namespace its own, so that
    namespaces playing several hosts of one topology on one machine never share a journal."""
    return Path(state_dir) / "netns" / netns if netns else Path(state_dir)


def has_net_admin() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def require_net_admin(what: str) -> None:
    if not has_net_admin():
        raise NotPermitted(f"vnet {what} changes network state and needs root (CAP_NET_ADMIN); run it with sudo")


def _warn(msg: str) -> None:
    print(f"vnet: {msg}", file=sys.stderr, flush=True)


@dataclass
class Planned:
    topology: str
    actions: list[Action]
    desired: list[Resource]
    observation: Observation
    recovered: str | None = None  # what the command said about an interrupted run it undid


class Engine:
    def __init__(self, topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, host: str | None = None):
        self.topology = topology
        self.netns = netns
        self.host = host  # this host's name among a topology's `hosts:`, when not found by address
        self.state_root = state_root(state_dir, netns)
        self.state_dir = Path(state_dir)
        self.state = self.state_root / topology
        self.record = sysctl.SysctlRecord(self.state)
        self.journal = Journal(self.state / "journal.jsonl")
        self.claims = Claims(self.state_root, topology, netns)
        self.log: Callable[[str], None] = lambda msg: None
        self.warn: Callable[[str], None] = _warn  # things the user must hear of even from plan/status

    # --- reading ----------------------------------------------------------------------------

    def observe(self, nss: Namespaces, topo: Topology | None = None, extra_netns: tuple[str, ...] = ()) -> Observation:
        borrowed = tuple(ep.netns for ep in (topo.endpoints.values() if topo else ()) if isinstance(ep, NetnsSpec) and ep.netns)
        return observe(nss, self.topology, self.state, borrowed + extra_netns)

    def facts(self, topo: Topology, obs: Observation) -> HostFacts:
        wants_kvm = any(vm.accel == "auto" for vm in topo.vms.values())
        return HostFacts(
            default_uplink=obs.default_uplink,
            resolvers=tuple(resolvers(self.netns)),
            kvm=wants_kvm and kvm.usable(),
            vhost_net=os.path.exists("/dev/vhost-net"),
            state=self.state,
            tiny_guest=self._tiny_guest() if any(vm.image == "tiny" for vm in topo.vms.values()) else None,
            iptables=obs.filter,
            **overlay.locate(self.netns, topo, self.host),
        )

    def _tiny_guest(self) -> tuple[str, str]:
        from vnet import guest

        return str(guest.kernel_path()), str(guest.build_initrd(self.state_dir / "guest"))

    def _plan(self, nss: Namespaces, topo: Topology) -> Planned:
        obs = self.observe(nss, topo)
        facts = self.facts(topo, obs)
        want = desired(topo, facts)
        problems = check(topo, obs, want, facts) + self.claims.problems(topo, obs)
        if problems:
            raise ClashError(problems)
        return Planned(topo.name, diff(want, obs.owned), want, obs)

    def plan(self, topo: Topology) -> Planned:
        note = self._recover_if_needed()
        with Namespaces(self.netns) as nss:
            planned = self._plan(nss, topo)
        planned.recovered = note
        return planned

    def status(self, topo: Topology) -> Planned:
        """Like plan, but a clash is reported as part of the result rather than raised."""
        note = self._recover_if_needed()
        with Namespaces(self.netns) as nss:
            obs = self.observe(nss, topo)
            want = desired(topo, self.facts(topo, obs))
            return Planned(topo.name, diff(want, obs.owned), want, obs, recovered=note)

    # --- locks --------------------------------------------------------------------------------

    def _locked(self):
        return flock(self.state_root / f"{self.topology}.lock", f"topology {self.topology}", self.warn)

    def _host_locked(self):
        """Short lock per target namespace: claims and shared host state change under it."""
        return flock(self.state_root / f".netns-{self.netns or '@'}.lock", f"namespace {self.netns or '(current)'}")

    def _runner(self, nss: Namespaces) -> Runner:
        ctx = Ctx(nss=nss, topology=self.topology, state=self.state, state_root=self.state_root, record=self.record,
                  host_lock=self._host_locked, others=self.claims.others, log=self.log)
        return Runner(ctx, self.journal)

    # --- changing ---------------------------------------------------------------------------

    def apply(self, topo: Topology) -> list[Action]:
        require_net_admin("apply")
        with self._locked(), Namespaces(self.netns) as nss:
            self._recover(nss)
            with self._host_locked():
                planned = self._plan(nss, topo)
                had_claim = self.claims.file(self.topology).exists()
                self.claims.write(Claim.of(topo, self.netns))
            planned.actions = self._born_with_uplink_mac(planned.actions, planned.observation)
            try:
                self._runner(nss).run(planned.actions)
            except StepFailed:
                if not self.journal.exists() and not had_claim:  # rolled back whole: claim nothing
                    self.claims.file(self.topology).unlink(missing_ok=True)
                raise
            return planned.actions

    @staticmethod
    def _born_with_uplink_mac(actions: list[Action], obs: Observation) -> list[Action]:
        """In bridged mode the bridge takes the uplink's MAC. Give it that MAC from birth: its IPv6
        link-local address is made from the MAC it has when it comes up, and must be the same
        whether apply makes the bridge or a rollback of destroy makes it again."""
        uplinks = {a.new.get("bridge"): a.new.key for a in actions if a.op == "create" and a.new and a.new.kind == "uplink"}
        out = []
        for a in actions:
            r = a.new
            if a.op == "create" and r is not None and r.kind == "bridge" and r.get("mac") is None and r.key in uplinks:
                li = obs.links.get(uplinks[r.key])
                if li is not None and li.mac:
                    a = Action("create", make(r.kind, r.key, dict(r.extra), **{**r.a, "mac": li.mac}), None)
            out.append(a)
        return out

    def destroy(self) -> list[Action]:
        require_net_admin("destroy")
        with self._locked(), Namespaces(self.netns) as nss:
            self._recover(nss)
            actions = diff([], self.observe(nss).owned)
            self._runner(nss).run(actions)
            if not self.journal.exists():
                shutil.rmtree(self.state, ignore_errors=True)
            return actions

    # --- recovery of a killed run -------------------------------------------------------------

    def _recover_if_needed(self) -> str | None:
        """For plan and status: undo an interrupted run first (as root), or say that one is pending."""
        if not self.journal.exists():
            return None
        if not has_net_admin():
            msg = f"an interrupted run of {self.topology} left a journal ({self.journal.path}); run any vnet command on it as root to undo it"
            self.warn(msg)
            return msg
        with self._locked(), Namespaces(self.netns) as nss:
            return self._recover(nss)

    def _recover(self, nss: Namespaces) -> str | None:
        if not self.journal.exists():
            return None
        steps = self.journal.steps()
        finished = sum(1 for _, _, _, d in steps if d)
        msg = (
            f"found the journal of an interrupted run of {self.topology} ({len(steps)} steps begun, {finished} finished); "
            "undoing it to the state before that run"
        )
        self.warn(msg)
        recover(self._runner(nss), lambda extra: self.observe(nss, extra_netns=extra))
        if not self.observe(nss).owned:
            shutil.rmtree(self.state, ignore_errors=True)  # nothing of this topology is left
        return msg
