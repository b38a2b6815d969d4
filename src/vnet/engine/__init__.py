"""Plan, apply, destroy: the engine that runs a topology's plan on a host.

In parts a reader finds by name:
- lock.py      per-topology and per-namespace locks (taken with vnet/flock.py); claims of
               subnets, bridges and uplinks
- journal.py   the write-ahead journal of a run
- run.py       running a plan through the kinds' verbs; bringing the host back to what it was
               before a run that failed or was killed (convergent, from the journal)
The kinds (vnet.kinds) do the work; the engine has no per-kind branches. The bridged uplink move
and its check are the uplink kind's (kinds/uplink.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from vnet import names, overlay, statedir
from vnet.desired import desired
from vnet.drivers import nft, process, sysctl
from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespaces
from vnet.engine.journal import Journal
from vnet.engine.lock import Claim, Claims
from vnet.errors import ClashError, NotPermitted, Problem, StepFailed
from vnet.facts import HostFacts, offloading
from vnet.flock import LockTimeout, flock
from vnet.kinds import Ctx
from vnet.observe import Observation, Observing
from vnet.plan import Action, diff
from vnet.resources import Resource, make
from vnet.spec.models import NetnsSpec, Topology

if TYPE_CHECKING:  # imported where used: `vnet status` runs nothing and checks no clash
    from vnet.drivers.readahead import ReadAhead
    from vnet.engine.run import Runner
    from vnet.headstart import HeadStart

    Early = tuple[ReadAhead, list[str]]  # a head start's child reading the namespaces, and those listed

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


class Planned:
    """A plan: its actions, what was desired and observed, and what it says before it runs."""

    __slots__ = ("topology", "actions", "desired", "observation", "recovered", "warnings")
    topology: str
    actions: list[Action]
    desired: list[Resource]
    observation: Observation
    recovered: str | None  # what the command said about an interrupted run it undid
    warnings: list[str]  # what the plan disrupts: said before it runs

    def __init__(self, topology: str, actions: list[Action], desired: list[Resource], observation: Observation,
                 recovered: str | None = None, warnings: list[str] | None = None) -> None:
        self.topology = topology
        self.actions = actions
        self.desired = desired
        self.observation = observation
        self.recovered = recovered
        self.warnings = [] if warnings is None else warnings

    def __repr__(self) -> str:
        return f"Planned(topology={self.topology!r}, actions={self.actions!r}, recovered={self.recovered!r}, warnings={self.warnings!r})"


def disruptions(actions: list[Action], state: Path | None = None) -> tuple[list[str], dict[str, list[int]]]:
    """What a plan would disrupt, in words, and the namespaces it deletes that still run processes
    other than vnet's own daemons and their children (recorded in `state`: they go with their
    resources) (name → pids): those are refused unless forced."""
    words: list[str] = []
    busy: dict[str, list[int]] = {}
    # one walk of /proc for every namespace the plan deletes, and vnet's daemons read once
    in_ns = nsmod.pids_by_netns([a.resource.key for a in actions if a.resource.kind == "netns" and a.op == "delete"])
    recorded = process.recorded_pids(state) if state is not None and any(in_ns.values()) else set()
    for a in actions:
        r = a.resource
        if r.kind == "vm" and a.op == "update":
            words.append(f"VM {r.key} restarts: its command line changes (the guest is shut down, then started again)")
        elif r.kind == "vm" and a.op == "delete":
            words.append(f"VM {r.key} is shut down")
        elif r.kind == "netns" and a.op == "delete":
            found = in_ns[r.key]
            ours = process.with_children(recorded, found)
            pids = [p for p in found if p not in ours]
            if pids:
                busy[r.key] = pids
                words.append(f"namespace {r.key} still runs {len(pids)} process(es) (pids {', '.join(map(str, pids[:5]))}"
                             f"{' …' if len(pids) > 5 else ''}): deleting it is refused unless --force, which stops them")
        elif r.kind == "service" and a.op == "update":
            words.append(f"dnsmasq of network {r.get('network')} restarts with a new configuration: DHCP guests keep their "
                         "old lease until they renew (restart them, or renew, to pick up a changed subnet or gateway)")
    return words, busy


def _refuse_busy(busy: dict[str, list[int]], force: bool, log: Callable[[str], None]) -> None:
    if not busy:
        return
    if not force:
        raise ClashError([Problem(f"namespace {name}", f"{len(pids)} process(es) still run in it (pids {', '.join(map(str, pids[:5]))})",
                                  "stop them first, or pass --force to stop them and delete the namespace")
                          for name, pids in busy.items()])
    for name, pids in busy.items():
        log(f"stopping {len(pids)} process(es) in namespace {name} (--force)")
        process.stop_pids(pids)


class Engine:
    def __init__(self, topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR, host: str | None = None):
        self.topology = topology
        self.netns = netns
        # what root replays from the state directory must be root's alone; without the rights to
        # change the network, vnet only reads it (and says that an interrupted run needs root)
        self.state_base = statedir.secure(state_dir, create=True) if has_net_admin() else Path(os.path.abspath(state_dir))
        self.state_root = statedir.target_root(self.state_base, netns)  # this target's topologies
        self.host = host  # this host's name among a topology's `hosts:`, when not found by address
        self.state = self.state_root / topology
        self.record = sysctl.SysctlRecord(self.state)
        self.journal = Journal(statedir.journal(self.state_root, topology))
        self.claims = Claims(self.state_root, topology, netns)
        self.log: Callable[[str], None] = lambda msg: None
        self.warn: Callable[[str], None] = _warn  # things the user must hear of even from plan/status

    # --- reading ----------------------------------------------------------------------------

    def observe(self, nss: Namespaces, topo: Topology | None = None, extra_netns: tuple[str, ...] = ()) -> Observation:
        return self.observing(nss, topo, extra_netns).finish()

    def observing(self, nss: Namespaces, topo: Topology | None = None, extra_netns: tuple[str, ...] = (),
                  early: Early | None = None) -> Observing:
        borrowed = tuple(ep.netns for ep in (topo.endpoints.values() if topo else ()) if isinstance(ep, NetnsSpec) and ep.netns)
        ahead, listed = early or (None, None)
        return Observing(nss, self.topology, self.state, borrowed + extra_netns, names.target_id(self.netns), ahead, listed)

    def _observe_and_want(self, nss: Namespaces, topo: Topology, early: Early | None = None) -> tuple[Observation, HostFacts, list[Resource]]:
        """What the host holds and what the topology wants of it. The desired state is worked out
        while the namespaces are read on the other core (observe.Observing)."""
        with self.observing(nss, topo, early=early) as seen:
            facts = self.facts(topo, seen.obs, nss)  # reads only what Observing has read by now
            want = desired(topo, facts)
            return seen.finish(), facts, want

    def facts(self, topo: Topology, obs: Observation, nss: Namespaces | None = None) -> HostFacts:
        """What desired state needs of the host. Without `nss` the kernel is not asked about
        flowtables (then no flow is offloaded: for what needs no ruleset, a VM's command line)."""
        wants_kvm = any(vm.accel == "auto" for vm in topo.vms.values())
        # asked only where a nat network would offload: the question may load the kernel's module
        wants_offload = nss is not None and bool(offloading(topo))
        if wants_kvm:
            from vnet.drivers import kvm
        return HostFacts(
            default_uplink=obs.default_uplink,
            resolvers=tuple(resolvers(self.netns)),
            kvm=wants_kvm and kvm.usable(),
            vhost_net=os.path.exists("/dev/vhost-net"),
            state=self.state,
            tiny_guest=self._tiny_guest() if any(vm.image == "tiny" for vm in topo.vms.values()) else None,
            iptables=obs.filter,
            target=names.target_id(self.netns),
            flowtables=wants_offload and nft.flowtables(nss.host, self.state_base / ".flowtables"),  # type: ignore[union-attr]
            **overlay.locate(self.netns, topo, self.host),
        )

    def _tiny_guest(self) -> tuple[str, str]:
        from vnet import guest

        return str(guest.kernel_path()), str(guest.build_initrd(self.state_base / "guest"))

    def _plan(self, nss: Namespaces, topo: Topology, source: str | None = None, early: Early | None = None) -> Planned:
        obs, facts, want = self._observe_and_want(nss, topo, early)
        from vnet.preflight import check

        problems = check(topo, obs, want, facts) + self.claims.problems(topo, obs) + self.claims.identity_problems(source, obs)
        if problems:
            raise ClashError(problems)
        actions = diff(want, obs.owned)
        return Planned(topo.name, actions, want, obs, warnings=disruptions(actions, self.state)[0])

    def plan(self, topo: Topology, source: str | None = None) -> Planned:
        note = self._recover_if_needed()
        with Namespaces(self.netns) as nss:
            planned = self._plan(nss, topo, source)
        planned.recovered = note
        return planned

    def status(self, topo: Topology) -> Planned:
        """Like plan, but a clash is reported as part of the result rather than raised."""
        note = self._recover_if_needed()
        with Namespaces(self.netns) as nss:
            obs, _, want = self._observe_and_want(nss, topo)
            return Planned(topo.name, diff(want, obs.owned), want, obs, recovered=note)

    # --- locks --------------------------------------------------------------------------------

    def _locked(self):
        return flock(statedir.topology_lock(self.state_root, self.topology), f"topology {self.topology}", self.warn)

    def _host_locked(self):
        """Short lock per target namespace: claims and shared host state change under it."""
        return flock(self.state_root / ".target.lock", f"namespace {self.netns or '(current)'}")

    def _runner(self, nss: Namespaces) -> Runner:
        from vnet.engine.run import Runner

        ctx = Ctx(nss=nss, topology=self.topology, state=self.state, state_root=self.state_root, record=self.record,
                  host_lock=self._host_locked, others=self.claims.others, log=self.log)
        return Runner(ctx, self.journal, lambda extra: self.observe(nss, extra_netns=extra))

    # --- changing ---------------------------------------------------------------------------

    def apply(self, topo: Topology, source: str | None = None, force: bool = False, head: HeadStart | None = None) -> list[Action]:
        """Make the target hold `topo`. `source`, the file it came from, is its identity here:
        another file under the same name is refused unless `force`. `head`, a head start made
        for this topology here (headstart.py), holds its lock and reads its namespaces already."""
        require_net_admin("apply")
        taken = head.take(statedir.topology_lock(self.state_root, self.topology)) if head is not None else None
        lock, early = taken or (self._locked(), None)
        with lock, Namespaces(self.netns) as nss:
            self._recover(nss)  # nothing to undo where a head start was taken: it saw no journal
            nss.make_ahead(self._namespaces_to_make(topo, early[1] if early else None))
            with self._host_locked():
                planned = self._plan(nss, topo, None if force else source, early)
                had_claim = self.claims.file(self.topology).exists()
                self.claims.write(Claim.of(topo, self.netns, source))
            planned.actions = self._born_with_uplink_mac(planned.actions, planned.observation)
            _refuse_busy(disruptions(planned.actions, self.state)[1], force, self.log)
            if not planned.actions:
                return []  # nothing to run: the runner (and its module) are not needed
            try:
                self._runner(nss).run(planned.actions)
            except StepFailed:
                if not self.journal.exists() and not had_claim:  # rolled back whole: claim nothing
                    self.claims.file(self.topology).unlink(missing_ok=True)
                raise
            return planned.actions

    @staticmethod
    def _namespaces_to_make(topo: Topology, listed: list[str] | None) -> int:
        """How many of the topology's own namespaces do not exist yet: what the run will make
        unless the plan is refused (then those made ahead are dropped; drivers/spares.py).
        `listed`: the namespaces a head start has just listed."""
        from vnet.kinds.netns import owned

        wanted = owned(topo)
        if len(wanted) < 2:
            return len(wanted)
        there = set(nsmod.listed() if listed is None else listed)
        return sum(name not in there for _, name in wanted)

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

    def destroy(self, force: bool = False) -> list[Action]:
        """Remove what vnet made for the topology here. A namespace it made that still runs
        processes is refused unless `force`, which stops them first."""
        require_net_admin("destroy")
        with self._locked(), Namespaces(self.netns) as nss:
            self._recover(nss)
            actions = diff([], self.observe(nss).owned)
            _refuse_busy(disruptions(actions, self.state)[1], force, self.log)
            self._runner(nss).run(actions)
            if not self.journal.exists():
                import shutil  # here: it brings bz2 and lzma, ~2 ms of every start-up

                shutil.rmtree(self.state, ignore_errors=True)
                from vnet.spec import parsed

                parsed.forget(self.state_root, self.topology)
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
        self._runner(nss).recover()
        if not self.observe(nss).owned:
            import shutil

            shutil.rmtree(self.state, ignore_errors=True)  # nothing of this topology is left
        return msg
