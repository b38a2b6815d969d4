"""Plan, apply, destroy: lock, write-ahead journal, run actions through the drivers, roll back.

Every action and its inverse are written (and fsynced) to the topology's journal before the
action runs. A failing step makes the engine undo the steps already done, newest first; a journal
left behind by a killed run is undone by the next command before it does anything else.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from vnet.desired import HostFacts, desired
from vnet.drivers import dnsmasq, kvm, netlink, nft, qemu, sysctl
from vnet.drivers.ns import Namespaces
from vnet.errors import ClashError, NotPermitted, StepFailed, VnetError
from vnet.observe import Observation, observe
from vnet.plan import Action, diff
from vnet.preflight import check
from vnet.resources import Resource
from vnet.spec.models import NetnsSpec, Topology

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


@dataclass
class Planned:
    topology: str
    actions: list[Action]
    desired: list[Resource]
    observation: Observation


class Journal:
    """Write-ahead log of one run: each step is recorded before it runs, marked done after."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None

    def exists(self) -> bool:
        return self.path.exists()

    def _append(self, record: dict) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a")
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def begin(self, step: int, action: Action) -> None:
        self._append({"step": step, "action": action.to_json()})

    def done(self, step: int) -> None:
        self._append({"done": step})

    def steps(self) -> list[tuple[int, Action, bool]]:
        """(step, action, known done) in journal order; a torn last line is ignored."""
        begun: dict[int, Action] = {}
        done: set[int] = set()
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "step" in rec:
                begun[rec["step"]] = Action.from_json(rec["action"])
            elif "done" in rec:
                done.add(rec["done"])
        return [(k, begun[k], k in done) for k in sorted(begun)]

    def close(self, remove: bool) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if remove:
            self.path.unlink(missing_ok=True)


class Engine:
    def __init__(self, topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR):
        self.topology = topology
        self.netns = netns
        self.state_root = Path(state_dir)
        self.state = self.state_root / topology
        self.record = sysctl.SysctlRecord(self.state)
        self.journal = Journal(self.state / "journal.jsonl")
        self.log: Callable[[str], None] = lambda msg: None

    # --- reading ----------------------------------------------------------------------------

    def observe(self, nss: Namespaces, topo: Topology | None = None) -> Observation:
        borrowed = tuple(ep.netns for ep in (topo.endpoints.values() if topo else ()) if isinstance(ep, NetnsSpec) and ep.netns)
        return observe(nss, self.topology, self.state, borrowed)

    def facts(self, topo: Topology, obs: Observation) -> HostFacts:
        wants_kvm = any(vm.accel == "auto" for vm in topo.vms.values())
        return HostFacts(
            default_uplink=obs.default_uplink,
            resolvers=tuple(resolvers(self.netns)),
            kvm=wants_kvm and kvm.usable(),
            vhost_net=os.path.exists("/dev/vhost-net"),
            state=self.state,
            tiny_guest=self._tiny_guest() if any(vm.image == "tiny" for vm in topo.vms.values()) else None,
        )

    def _tiny_guest(self) -> tuple[str, str]:
        from vnet import guest

        return str(guest.kernel_path()), str(guest.build_initrd(self.state_root / "guest"))

    def _plan(self, nss: Namespaces, topo: Topology) -> Planned:
        obs = self.observe(nss, topo)
        facts = self.facts(topo, obs)
        want = desired(topo, facts)
        problems = check(topo, obs, want, facts)
        if problems:
            raise ClashError(problems)
        return Planned(topo.name, diff(want, obs.owned), want, obs)

    def plan(self, topo: Topology) -> Planned:
        with Namespaces(self.netns) as nss:
            return self._plan(nss, topo)

    def status(self, topo: Topology) -> Planned:
        """Like plan, but a clash is reported as part of the result rather than raised."""
        with Namespaces(self.netns) as nss:
            obs = self.observe(nss, topo)
            want = desired(topo, self.facts(topo, obs))
            return Planned(topo.name, diff(want, obs.owned), want, obs)

    # --- changing ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_root.mkdir(parents=True, exist_ok=True)
        with open(self.state_root / f"{self.topology}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def apply(self, topo: Topology, fail_at: int | None = None) -> list[Action]:
        require_net_admin("apply")
        with self._locked(), Namespaces(self.netns) as nss:
            self._recover(nss)
            planned = self._plan(nss, topo)
            self._run(nss, planned.actions, fail_at)
            return planned.actions

    def destroy(self, fail_at: int | None = None) -> list[Action]:
        require_net_admin("destroy")
        with self._locked(), Namespaces(self.netns) as nss:
            self._recover(nss)
            obs = self.observe(nss)
            actions = diff([], obs.owned)
            self._run(nss, actions, fail_at)
            if not self.journal.exists():
                shutil.rmtree(self.state, ignore_errors=True)
            return actions

    def _complete(self, nss: Namespaces, action: Action) -> Action:
        """Fill in what undoing the action needs but observing did not read: a ruleset's full
        text (observe lists tables terse, so its cost does not grow with forwards)."""
        if action.old is not None and action.old.kind == "ruleset" and action.old.get("text") is None:
            return Action(action.op, action.new, nft.with_text(nss.host, action.old, self.state / "ruleset.nft"))
        return action

    def _execute(self, nss: Namespaces, action: Action) -> None:
        r = action.resource
        if r.kind in ("service", "vm"):
            driver = dnsmasq if r.kind == "service" else qemu
            {"create": lambda: driver.create(nss, self.state, action.new),
             "delete": lambda: driver.delete(nss, self.state, action.old),
             "update": lambda: driver.update(nss, self.state, action.old, action.new)}[action.op]()
        elif r.kind == "sysctl":
            {"create": lambda: sysctl.create(nss, self.record, action.new),
             "delete": lambda: sysctl.delete(nss, self.record, action.old),
             "update": lambda: sysctl.update(nss, self.record, action.old, action.new)}[action.op]()
        elif r.kind == "ruleset":
            if action.op == "delete":
                nft.delete(nss.host, action.old, self.state / "ruleset.nft")
            else:
                nft.replace(nss.host, action.new, action.old, self.state / "ruleset.nft")
        elif action.op == "create":
            netlink.create(nss, action.new)
        elif action.op == "delete":
            netlink.delete(nss, action.old)
        else:
            netlink.update(nss, action.old, action.new)

    def _run(self, nss: Namespaces, actions: list[Action], fail_at: int | None) -> None:
        if fail_at is None and os.environ.get("VNET_FAIL_AT"):
            fail_at = int(os.environ["VNET_FAIL_AT"])
        done: list[Action] = []
        try:
            for step, action in enumerate(actions, 1):
                action = actions[step - 1] = self._complete(nss, action)
                self.journal.begin(step, action)
                if fail_at == step:
                    raise VnetError(f"fault injected at step {step}")
                self._execute(nss, action)
                done.append(action)
                self.journal.done(step)
                self.log(action.describe())
        except BaseException as exc:
            failed = len(done) + 1
            ok = self._undo(nss, done)
            self.journal.close(remove=ok)
            raise StepFailed(failed, actions[failed - 1].describe(), exc, rolled_back=ok) from exc
        self.journal.close(remove=True)

    def _undo(self, nss: Namespaces, done: list[Action]) -> bool:
        ok = True
        for action in reversed(done):
            try:
                self._execute(nss, action.inverse())
            except Exception as exc:  # keep undoing the rest; report at the end
                ok = False
                self.log(f"undo of '{action.describe()}' failed: {exc}")
        return ok

    def _recover(self, nss: Namespaces) -> None:
        """Undo what a killed run left half done, using its journal."""
        if not self.journal.exists():
            return
        steps = self.journal.steps()
        self.log(f"found the journal of an interrupted run ({len(steps)} steps); undoing it")
        # the last step may have run in part: undo it too (drivers tolerate absent objects)
        ok = self._undo(nss, [a for _, a, _ in steps])
        if not ok:
            raise VnetError(f"could not undo the interrupted run recorded in {self.journal.path}; see the messages above")
        self.journal.close(remove=True)
