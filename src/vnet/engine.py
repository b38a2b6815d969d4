"""Plan, apply, destroy: lock, write-ahead journal, run actions through the drivers, roll back.

Every action and its inverse are written (and fsynced) to the topology's journal before the
action runs. A failing step makes the engine undo the steps already done, newest first; a journal
left behind by a killed run is undone by the next command (plan, status, apply, destroy) before it
does anything else: the host goes back to what it held before that run, for every resource the
run touched (see `_recover`).

Locks: one per topology (a second run waits, saying for whom, or gives up after
VNET_LOCK_TIMEOUT seconds), and a short one per target namespace, held while a topology claims
its subnets, bridges and uplinks (so two topologies applied at once cannot both take the same
range) and while shared host state (forwarding sysctls, iptables) changes.

Test hooks, all off unless set: `fail_at=k` / VNET_FAIL_AT=k (step k raises), VNET_KILL_AT
(SIGKILL at a chosen point: `k` before step k runs, `k:after` after it ran but before it is marked
done, `k:call<n>` after the n-th driver call inside step k, `recover:<n>` after the n-th action of a
recovery), VNET_STEP_DELAY=seconds (sleep before each step, to make runs overlap).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from vnet import dnsconf, qemuargs
from vnet.desired import HostFacts, bridge_name, desired, uplink_of
from vnet.drivers import dnsmasq, iptables, kvm, netlink, nft, process, qemu, rtnl, sysctl
from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespaces
from vnet.errors import ClashError, NotPermitted, Problem, StepFailed, VnetError
from vnet.observe import Observation, observe, read_links
from vnet.plan import Action, batches, diff
from vnet.preflight import check
from vnet.resources import Resource, make
from vnet.spec.models import NetnsSpec, Topology
from vnet.spec.validate import addressing

DEFAULT_STATE_DIR = Path("/run/vnet")
CAP_NET_ADMIN = 12
UPLINK_TIMEOUT = 5.0  # seconds the gateway has to answer after the uplink joined the bridge


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


class LockTimeout(VnetError):
    """Another vnet run holds the topology and did not finish in time."""


@dataclass
class Planned:
    topology: str
    actions: list[Action]
    desired: list[Resource]
    observation: Observation
    recovered: str | None = None  # what the command said about an interrupted run it undid


class Journal:
    """Write-ahead log of one run: each step is recorded before it runs, marked done after."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None

    def exists(self) -> bool:
        return self.path.exists()

    def _append(self, records: list[dict], durable: bool) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a")
        self._f.write("".join(json.dumps(r) + "\n" for r in records))
        self._f.flush()  # in the kernel's hands: survives a kill of vnet
        if durable:
            os.fsync(self._f.fileno())  # on disk: survives a crash of the machine

    def begin(self, actions: list[Action]) -> None:
        """Every step of the run, before the first one runs: one write and one fsync, not two per
        step. Recovery treats a step not marked done as possibly run in part, and converges from
        each resource's recorded old state, so recording steps that never ran costs nothing."""
        records = [{"journal": 2}] + [{"step": k, "action": a.to_json()} for k, a in enumerate(actions, 1)]
        self._append(records, durable=True)

    def start(self, steps: list[int]) -> None:
        """These steps are about to run (flushed: a kill of vnet cannot lose it). Recovery sweeps
        up after steps that started, never after those that were only recorded."""
        self._append([{"start": k} for k in steps], durable=False)

    def done(self, step: int) -> None:
        # not fsynced: a lost `done` only makes recovery check that step too
        self._append([{"done": step}], durable=False)

    def steps(self) -> list[tuple[int, Action, bool, bool]]:
        """(step, action, started, done) in journal order; a torn last line is ignored. A journal
        of an older vnet, which recorded each step as it started, has every step started."""
        begun: dict[int, Action] = {}
        started: set[int] = set()
        done: set[int] = set()
        marks_starts = False
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "step" in rec:
                begun[rec["step"]] = Action.from_json(rec["action"])
            elif "start" in rec:
                started.add(rec["start"])
            elif "done" in rec:
                done.add(rec["done"])
            elif rec.get("journal") == 2:
                marks_starts = True
        return [(k, begun[k], k in started or k in done or not marks_starts, k in done) for k in sorted(begun)]

    def close(self, remove: bool) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if remove:
            self.path.unlink(missing_ok=True)


# --- test hooks ----------------------------------------------------------------------------------


@dataclass
class Hooks:
    """Fault injection for tests: a failure or a SIGKILL at a chosen point of a run."""

    fail_at: int | None = None
    kill_phase: str | None = None  # "step" or "recover"
    kill_at: int = 0
    kill_when: str = "before"  # before | after | call
    kill_call: int = 0
    delay: float = 0.0
    _step: int = 0
    _calls: int = 0

    @classmethod
    def from_env(cls, fail_at: int | None = None) -> Hooks:
        h = cls(fail_at=fail_at)
        if h.fail_at is None and os.environ.get("VNET_FAIL_AT"):
            h.fail_at = int(os.environ["VNET_FAIL_AT"])
        h.delay = float(os.environ.get("VNET_STEP_DELAY") or 0)
        spec = os.environ.get("VNET_KILL_AT")
        if spec:
            head, _, tail = spec.partition(":")
            if head == "recover":
                h.kill_phase, h.kill_at = "recover", int(tail)
            else:
                h.kill_phase, h.kill_at = "step", int(head)
                tail = tail or "before"
                if tail.startswith("call"):
                    h.kill_when, h.kill_call = "call", int(tail[4:] or 1)
                    _count_driver_calls(h)
                elif tail in ("before", "after"):
                    h.kill_when = tail
                else:
                    raise ValueError(f"VNET_KILL_AT={spec}: use k, k:after, k:call<n> or recover:<n>")
        return h

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def step(self, k: int, when: str) -> None:
        self._step, self._calls = k, 0
        if self.kill_phase == "step" and self.kill_at == k and self.kill_when == when:
            self.die()

    def recovered(self, n: int) -> None:
        if self.kill_phase == "recover" and self.kill_at == n:
            self.die()

    def called(self) -> None:
        if self.kill_phase == "step" and self.kill_when == "call" and self._step == self.kill_at:
            self._calls += 1
            if self._calls == self.kill_call:
                self.die()


def _count_driver_calls(hooks: Hooks) -> None:
    """Count every call a driver makes into the kernel or a tool (netlink request, command run,
    call inside a namespace), so that a kill can land in the middle of a step. Test-only: the
    process dies anyway, so the patch is never undone."""
    ns_class = nsmod.Namespace
    orig_run, orig_call, orig_ipr, orig_nl = ns_class.run, ns_class.call, ns_class.ipr, ns_class.nl

    def run(self, *a, **kw):
        try:
            return orig_run(self, *a, **kw)
        finally:
            hooks.called()

    def call(self, *a, **kw):
        try:
            return orig_call(self, *a, **kw)
        finally:
            hooks.called()

    class Counted:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            attr = getattr(self._inner, name)
            if not callable(attr) or name.startswith("_") or name == "close":
                return attr

            def counted(*a, **kw):
                try:
                    return attr(*a, **kw)
                finally:
                    hooks.called()

            return counted

    ns_class.run, ns_class.call = run, call
    ns_class.ipr = property(lambda self: Counted(orig_ipr.fget(self)))
    ns_class.nl = property(lambda self: Counted(orig_nl.fget(self)))


# --- the uplink check of bridged mode ----------------------------------------------------------------


def _default_routes(ns: nsmod.Namespace) -> list[tuple[str | None, int | None]]:
    """(gateway, oif) of the IPv4 default routes in the main table."""
    return [(rt.gateway, rt.oif) for rt in ns.nl.routes(table=rtnl.RT_TABLE_MAIN) if rt.dst_len == 0]


def arp_probe(ifname: str, src: str, target: str, timeout: float) -> bool:
    """True when `target` answers an ARP request sent from `ifname` within `timeout` seconds.
    Runs in the namespace's worker thread (a packet socket binds to that namespace's device)."""
    eth_p_arp = 0x0806
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_arp))
    try:
        s.bind((ifname, eth_p_arp))
        mac = s.getsockname()[4]
        tpa = socket.inet_aton(target)
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(src), b"\0" * 6, tpa)
        frame = (b"\xff" * 6 + mac + struct.pack("!H", eth_p_arp) + arp).ljust(60, b"\0")
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return False
            if now >= next_send:
                s.send(frame)
                next_send = now + 0.5
            ready, _, _ = select.select([s], [], [], max(0.0, min(deadline, next_send) - now))
            if ready:
                data = s.recv(128)
                if len(data) >= 42 and data[12:14] == b"\x08\x06":
                    op, spa = struct.unpack("!H", data[20:22])[0], data[28:32]
                    if op == 2 and spa == tpa:
                        return True
    finally:
        s.close()


# --- the engine ----------------------------------------------------------------------------------


def _warn(msg: str) -> None:
    print(f"vnet: {msg}", file=sys.stderr, flush=True)


@dataclass
class _Claim:
    netns: str
    subnets: dict[str, str] = field(default_factory=dict)  # network → subnet
    bridges: dict[str, str] = field(default_factory=dict)  # network → bridge
    uplinks: dict[str, str] = field(default_factory=dict)  # network → NIC (bridged)


class Engine:
    def __init__(self, topology: str, netns: str | None = None, state_dir: Path | str = DEFAULT_STATE_DIR):
        self.topology = topology
        self.netns = netns
        self.state_root = Path(state_dir)
        self.state = self.state_root / topology
        self.record = sysctl.SysctlRecord(self.state)
        self.journal = Journal(self.state / "journal.jsonl")
        self.log: Callable[[str], None] = lambda msg: None
        self.warn: Callable[[str], None] = _warn  # things the user must hear of even from plan/status
        self.hooks = Hooks()

    # --- reading ----------------------------------------------------------------------------

    def observe(self, nss: Namespaces, topo: Topology | None = None, extra_netns: tuple[str, ...] = ()) -> Observation:
        borrowed = tuple(ep.netns for ep in (topo.endpoints.values() if topo else ()) if isinstance(ep, NetnsSpec) and ep.netns)
        obs = observe(nss, self.topology, self.state, borrowed + extra_netns)
        obs.filter = iptables.read(nss.host)
        for r in iptables.observe(self.topology, obs.filter):
            obs.add(r)
        return obs

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

    def _desired(self, topo: Topology, obs: Observation, facts: HostFacts) -> list[Resource]:
        want = desired(topo, facts)
        want += iptables.desired(self.topology, obs.filter, self._forward_paths(topo, facts))
        return want

    @staticmethod
    def _forward_paths(topo: Topology, facts: HostFacts) -> list[tuple[str, str, str | None]]:
        """(in, out, conntrack states) of the traffic vnet forwards: what a foreign FORWARD DROP
        policy must let through (vnet's own table still filters all of it)."""
        paths: list[tuple[str, str, str | None]] = []
        for net_name, net in topo.networks.items():
            br = bridge_name(topo, net_name)
            paths.append((br, br, None))  # switched inside the bridge: crosses FORWARD with br_netfilter
            up = uplink_of(topo, net_name, facts) if net.mode == "nat" else None
            if up:
                paths.append((br, up, None))
                paths.append((up, br, "RELATED,ESTABLISHED"))
                if net.forwards:
                    paths.append((up, br, "DNAT"))
        for allow in topo.allow:
            if allow.from_ in topo.networks and allow.to in topo.networks:
                a, b = bridge_name(topo, allow.from_), bridge_name(topo, allow.to)
                paths.append((a, b, None))
                paths.append((b, a, "RELATED,ESTABLISHED"))
        return paths

    def _plan(self, nss: Namespaces, topo: Topology) -> Planned:
        obs = self.observe(nss, topo)
        facts = self.facts(topo, obs)
        want = self._desired(topo, obs, facts)
        problems = check(topo, obs, want, facts) + self._claim_problems(topo, obs)
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
            want = self._desired(topo, obs, self.facts(topo, obs))
            return Planned(topo.name, diff(want, obs.owned), want, obs, recovered=note)

    # --- locks --------------------------------------------------------------------------------

    @contextmanager
    def _flock(self, path: Path, what: str, quiet: bool = False) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not self._try_lock(fd, patience=0.3):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                limit = os.environ.get("VNET_LOCK_TIMEOUT")
                if not quiet:
                    self.warn(f"waiting for another vnet run on {what} (pid {holder}) to finish")
                if limit is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                elif not self._try_lock(fd, patience=float(limit)):
                    raise LockTimeout(
                        f"another vnet run (pid {holder}) holds {what}; gave up after {float(limit):g}s — "
                        "let it finish, then try again"
                    )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _try_lock(fd: int, patience: float) -> bool:
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.02)

    def _locked(self):
        return self._flock(self.state_root / f"{self.topology}.lock", f"topology {self.topology}")

    def _host_locked(self):
        """Short lock per target namespace: claims and shared host state change under it."""
        return self._flock(self.state_root / f".netns-{self.netns or '@'}.lock", f"namespace {self.netns or '(current)'}", quiet=True)

    @staticmethod
    def _held(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # --- claims: what a topology takes in the namespace, so that another cannot take it too -----

    def _claim(self, topo: Topology) -> _Claim:
        c = _Claim(self.netns or "")
        for net_name, net in topo.networks.items():
            c.bridges[net_name] = bridge_name(topo, net_name)
            if net.mode in ("host", "nat") and net.subnet:
                c.subnets[net_name] = str(addressing(topo, net_name).subnet)
            if net.mode == "bridged" and net.uplink:
                c.uplinks[net_name] = net.uplink
        return c

    def _claims_file(self, topology: str) -> Path:
        return self.state_root / topology / "claim.json"

    def _read_claim(self, topology: str) -> _Claim | None:
        try:
            data = json.loads(self._claims_file(topology).read_text())
            return _Claim(data["netns"], data["subnets"], data["bridges"], data["uplinks"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_claim(self, claim: _Claim) -> None:
        path = self._claims_file(self.topology)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(claim.__dict__, sort_keys=True))
        tmp.replace(path)

    def _alive(self, other: str, obs: Observation) -> bool:
        """A claim counts while its topology has objects here, a journal, or a run in progress."""
        return (
            (self.state_root / other / "journal.jsonl").exists()
            or any(li.mark and li.mark[0] == other for li in obs.links.values())
            or self._held(self.state_root / f"{other}.lock")
        )

    def _others(self, obs: Observation | None = None) -> Iterator[tuple[str, _Claim]]:
        try:
            dirs = sorted(p for p in self.state_root.iterdir() if p.is_dir() and p.name != self.topology)
        except FileNotFoundError:
            return
        for d in dirs:
            claim = self._read_claim(d.name)
            if claim is not None and claim.netns == (self.netns or "") and (obs is None or self._alive(d.name, obs)):
                yield d.name, claim

    def _claim_problems(self, topo: Topology, obs: Observation) -> list[Problem]:
        mine = self._claim(topo)
        problems = []
        for other, claim in self._others(obs):
            for net, subnet in mine.subnets.items():
                for onet, osubnet in claim.subnets.items():
                    if ipaddress.IPv4Network(subnet).overlaps(ipaddress.IPv4Network(osubnet)):
                        problems.append(Problem(f"networks.{net}.subnet", f"{subnet} overlaps {osubnet}, claimed by topology {other!r} (network {onet})", f"choose a free range, or destroy topology {other} first"))
            for net, br in mine.bridges.items():
                if br in claim.bridges.values():
                    problems.append(Problem(f"networks.{net}.bridge", f"bridge {br} is claimed by topology {other!r}", "name another bridge"))
            for net, up in mine.uplinks.items():
                if up in claim.uplinks.values():
                    problems.append(Problem(f"networks.{net}.uplink", f"{up} is the uplink of topology {other!r} already", "a NIC joins one bridge only"))
        return problems

    # --- changing ---------------------------------------------------------------------------

    def _namespaces(self) -> Namespaces:
        return Namespaces(self.netns)

    def apply(self, topo: Topology, fail_at: int | None = None) -> list[Action]:
        require_net_admin("apply")
        self.hooks = Hooks.from_env(fail_at)
        with self._locked(), self._namespaces() as nss:
            self._recover(nss)
            with self._host_locked():
                planned = self._plan(nss, topo)
                had_claim = self._claims_file(self.topology).exists()
                self._write_claim(self._claim(topo))
            planned.actions = self._born_with_uplink_mac(planned.actions, planned.observation)
            try:
                self._run(nss, planned.actions)
            except StepFailed:
                if not self.journal.exists() and not had_claim:  # rolled back whole: claim nothing
                    self._claims_file(self.topology).unlink(missing_ok=True)
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

    def destroy(self, fail_at: int | None = None) -> list[Action]:
        require_net_admin("destroy")
        self.hooks = Hooks.from_env(fail_at)
        with self._locked(), self._namespaces() as nss:
            self._recover(nss)
            obs = self.observe(nss)
            actions = diff([], obs.owned)
            self._run(nss, actions)
            if not self.journal.exists():
                shutil.rmtree(self.state, ignore_errors=True)
            return actions

    def _complete(self, nss: Namespaces, action: Action) -> Action:
        """Fill in what undoing the action needs but observing did not read: a ruleset's full
        text (observe lists tables terse, so its cost does not grow with forwards)."""
        if action.old is not None and action.old.kind == "ruleset" and action.old.get("text") is None:
            return Action(action.op, action.new, nft.with_text(nss.host, action.old, self.state / "ruleset.nft"))
        return action

    def _execute(self, nss: Namespaces, action: Action, verify: bool = False) -> None:
        r = action.resource
        if r.kind in ("service", "vm"):
            driver = dnsmasq if r.kind == "service" else qemu
            {"create": lambda: driver.create(nss, self.state, action.new),
             "delete": lambda: driver.delete(nss, self.state, action.old),
             "update": lambda: driver.update(nss, self.state, action.old, action.new)}[action.op]()
        elif r.kind == "sysctl":
            with self._host_locked():  # a forwarding switch may be shared with another topology
                if action.op == "delete" and self._sysctl_still_needed(action.old):
                    return
                {"create": lambda: sysctl.create(nss, self.record, action.new),
                 "delete": lambda: sysctl.delete(nss, self.record, action.old),
                 "update": lambda: sysctl.update(nss, self.record, action.old, action.new)}[action.op]()
        elif r.kind == "ruleset":
            if action.op == "delete":
                nft.delete(nss.host, action.old, self.state / "ruleset.nft")
            else:
                nft.replace(nss.host, action.new, action.old, self.state / "ruleset.nft")
        elif r.kind == iptables.KIND:
            with self._host_locked():
                {"create": lambda: iptables.create(nss.host, action.new),
                 "delete": lambda: iptables.delete(nss.host, action.old),
                 "update": lambda: iptables.update(nss.host, action.old, action.new)}[action.op]()
        elif action.op == "create":
            if r.kind == "uplink" and verify:
                before = _default_routes(nss.host)
                netlink.create(nss, action.new)
                self._verify_uplink(nss, action.new, before)
            else:
                netlink.create(nss, action.new)
        elif action.op == "delete":
            netlink.delete(nss, action.old)
        else:
            netlink.update(nss, action.old, action.new)

    def _run(self, nss: Namespaces, actions: list[Action]) -> None:
        hooks = self.hooks
        done: list[Action] = []
        try:
            actions[:] = [self._complete(nss, a) for a in actions]
            if actions:
                self.journal.begin(actions)
            for run in batches(actions):
                steps: list[int] = []
                fault = None
                for i in run:
                    step = i + 1
                    if hooks.delay:
                        time.sleep(hooks.delay)
                    hooks.step(step, "before")
                    if hooks.fail_at == step:
                        fault = VnetError(f"fault injected at step {step}")
                        break
                    steps.append(step)
                if steps:
                    self.journal.start(steps)
                if len(steps) > 1:
                    netlink.delete_links(nss, [actions[k - 1].old for k in steps])  # type: ignore[misc]
                elif steps:
                    self._execute(nss, actions[steps[0] - 1], verify=True)
                for step in steps:
                    hooks.step(step, "after")
                    done.append(actions[step - 1])
                    self.journal.done(step)
                    self.log(actions[step - 1].describe())
                if fault is not None:
                    raise fault
        except BaseException as exc:
            hooks._step = 0
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

    # --- shared host state ----------------------------------------------------------------------

    def _sysctl_still_needed(self, r: Resource) -> bool:
        """When another topology in the same namespace also set this sysctl, leave the value: that
        topology still needs it. Hand it the value found before this one changed it, if it recorded
        this one's value as its own "before", so the last one out restores the original."""
        if r.get("ns"):  # endpoint namespaces belong to one topology
            return False
        sharers = []
        for other, _ in self._others():
            rec = sysctl.SysctlRecord(self.state_root / other)
            entry = rec.load().get(r.key)
            if entry is not None:
                sharers.append((rec, entry))
        if not sharers:
            return False
        mine = self.record.load()
        entry = mine.pop(r.key, None)
        if entry is not None:
            for rec, theirs in sharers:
                if theirs["before"] == r.get("value") and theirs["before"] != entry["before"]:
                    data = rec.load()
                    data[r.key]["before"] = entry["before"]
                    rec.save(data)
                    break
        self.record.save(mine)
        self.log(f"{r.get('path')} stays as it is: another topology here needs it too")
        return True

    # --- bridged mode: verify the host still reaches its gateway, or put the uplink back --------

    def _verify_uplink(self, nss: Namespaces, r: Resource, before: list[tuple[str | None, int | None]]) -> None:
        timeout = float(os.environ.get("VNET_UPLINK_TIMEOUT") or UPLINK_TIMEOUT)
        ns = nss.host
        after = _default_routes(ns)
        problem = None
        if before and not after:
            problem = "the host lost its default route"
        else:
            for gateway, oif in after:
                if not gateway:
                    continue
                dev = self._ifname(ns, oif)
                src = self._source_for(ns, oif, gateway)
                if not ns.call(arp_probe, dev, src, gateway, timeout):
                    problem = f"the default gateway {gateway} did not answer ARP on {dev} within {timeout:g}s"
                break
        if problem is None:
            return
        netlink.delete(nss, r)  # put the NIC and the host's addressing back, now
        hint = ""
        restored = _default_routes(ns)
        for gateway, oif in restored:
            if gateway:
                dev = self._ifname(ns, oif)
                if not ns.call(arp_probe, dev, self._source_for(ns, oif, gateway), gateway, 1.0):
                    hint = f" (it does not answer on {dev} either: check the gateway and the cable)"
                break
        raise VnetError(f"uplink check failed after {r.key} joined {r.get('bridge')}: {problem}{hint}; {r.key} was taken out of the bridge and the host's addresses and routes moved back")

    @staticmethod
    def _ifname(ns: nsmod.Namespace, index: int | None) -> str:
        link = ns.nl.link_by_index(index) if index else None
        return link.ifname if link else f"#{index}"

    @staticmethod
    def _source_for(ns: nsmod.Namespace, oif: int, gateway: str) -> str:
        gw = ipaddress.IPv4Address(gateway)
        for a in ns.nl.addrs(oif):
            if gw in ipaddress.IPv4Interface(f"{a.address}/{a.prefixlen}").network:
                return a.address
        return "0.0.0.0"

    # --- recovery of a killed run -------------------------------------------------------------

    def _recover_if_needed(self) -> str | None:
        """For plan and status: undo an interrupted run first (as root), or say that one is pending."""
        if not self.journal.exists():
            return None
        if not has_net_admin():
            msg = f"an interrupted run of {self.topology} left a journal ({self.journal.path}); run any vnet command on it as root to undo it"
            self.warn(msg)
            return msg
        with self._locked(), self._namespaces() as nss:
            return self._recover(nss)

    def _recover(self, nss: Namespaces) -> str | None:
        """Bring every resource a killed run touched back to what it was before that run.

        Convergent rather than a replay of inverses: the journal says, for each resource the run
        touched, what it was before (the action's `old`, None for absent); the host is observed;
        the difference is planned and run. So a recovery that is itself killed is simply done again,
        and a step that ran in part (or not at all, or fully without being marked done) needs no
        guess. Parts of a step cut short that carry no ownership mark yet (a link or namespace made
        but not yet marked, a daemon not yet in its pid file) are removed first."""
        if not self.journal.exists():
            return None
        steps = self.journal.steps()
        finished = sum(1 for _, _, _, d in steps if d)
        msg = (
            f"found the journal of an interrupted run of {self.topology} ({len(steps)} steps begun, {finished} finished); "
            "undoing it to the state before that run"
        )
        self.warn(msg)
        hooks = self.hooks if self.hooks.kill_phase == "recover" else Hooks.from_env()
        before: dict[str, Resource | None] = {}
        extra_ns: set[str] = set()
        for _, a, _, _ in steps:
            before.setdefault(a.resource.id, a.old)
            for r in (a.new, a.old):
                if r is not None and r.kind == "veth" and r.get("peer_ns"):
                    extra_ns.add(r.get("peer_ns"))
                if r is not None and r.kind == "netns":
                    extra_ns.add(r.key)
        extra = tuple(sorted(n for n in extra_ns if nsmod.exists(n)))
        errors: list[str] = []
        obs = self.observe(nss, extra_netns=extra)
        for _, a, started, done in steps:
            if started and not done and a.op in ("create", "update"):
                try:
                    self._sweep(nss, a.new, obs)
                except Exception as exc:
                    errors.append(f"removing what '{a.describe()}' left: {exc}")
        obs = self.observe(nss, extra_netns=tuple(n for n in extra if nsmod.exists(n)))
        have = {rid: r for rid, r in obs.owned.items() if rid in before}
        actions = diff([r for r in before.values() if r is not None], have)
        for n, action in enumerate(actions, 1):
            try:
                self._execute(nss, action)
                self.log(f"recovery: {action.describe()}")
            except Exception as exc:  # keep going; report at the end
                errors.append(f"'{action.describe()}': {exc}")
            hooks.recovered(n)
        if errors:
            raise VnetError(
                f"could not undo the interrupted run recorded in {self.journal.path}: " + "; ".join(errors)
                + " — the journal is kept; fix the cause and run the command again"
            )
        self.journal.close(remove=True)
        if not self.observe(nss).owned:
            shutil.rmtree(self.state, ignore_errors=True)  # nothing of this topology is left
        return msg

    def _sweep(self, nss: Namespaces, r: Resource | None, obs: Observation) -> None:
        """Remove what a step cut short made before it could mark it as vnet's."""
        if r is None:
            return
        if r.kind in ("bridge", "tap", "veth"):
            li = obs.links.get(r.key)
            if li is not None and li.mark is None and r.id not in obs.owned:
                netlink.delete(nss, r)
        elif r.kind == "netns":
            if nsmod.exists(r.key) and r.id not in obs.owned:
                lo = read_links(nss.get(r.key)).get("lo")
                if lo is None or lo.mark is None:
                    netlink.delete(nss, r)
        elif r.kind == "service":
            process.kill_named(str(dnsconf.files(self.state, r.get("network"))["conf"]))
        elif r.kind == "vm":
            process.kill_named(str(qemuargs.files(self.state, r.key)["pid"]))
