"""The engine's pure parts, without root: fault points, journal reading, claims between topologies,
shared sysctls, the iptables rules it adds beside a foreign DROP policy, and the doctor's words."""

from __future__ import annotations

import json

import pytest

from vnet import doctor, spec
from vnet.drivers import iptables
from vnet.engine import Engine
from vnet.engine.journal import Journal
from vnet.engine.lock import Claim, Claims
from vnet.facts import HostFacts, forward_paths
from vnet.kinds import sysctl as sysctl_kind
from vnet.kinds.base import Ctx
from vnet.drivers.sysctl import SysctlRecord
from vnet.observe import LinkInfo, Observation
from vnet.plan import Action, diff, rank
from vnet.resources import Resource, make

from tests.faults import Faults, InjectedFault, Point


# --- fault points (tests/faults.py, installed from outside the engine) ---------------------------


@pytest.mark.parametrize(
    "value, phase, at, when, call",
    [("7", "step", 7, "before", 0), ("7:before", "step", 7, "before", 0), ("7:after", "step", 7, "after", 0),
     ("7:call3", "step", 7, "call", 3), ("recover:2", "recover", 2, "before", 0)],
)
def test_fault_point_spec(value, phase, at, when, call):
    p = Point.parse(value)
    assert (p.phase, p.at, p.when, p.call) == (phase, at, when, call)


def test_bad_fault_point_is_refused():
    with pytest.raises(ValueError, match="k:call<n>"):
        Point.parse("3:sometime")


def test_faults_fire_only_at_their_point(monkeypatch):
    died = []
    monkeypatch.setattr(Faults, "die", staticmethod(lambda: died.append(True)))
    f = Faults(kill_at="2:call2")
    f.starting([1])
    f.called(), f.called(), f.called()
    f.finishing(1)
    f.starting([2])
    f.called()
    assert not died
    f.called()
    assert died == [True]
    f = Faults(kill_at="3:after")
    f.starting([3])
    assert len(died) == 1
    f.finishing(3)
    assert len(died) == 2


def test_a_fault_inside_a_step_fires_after_the_call_it_names():
    f = Faults(fail_at="4:call2")
    f.starting([4])
    f.called()
    with pytest.raises(InjectedFault, match="inside step 4, after driver call 2"):
        f.called()
    f = Faults(fail_at=2)
    f.starting([1])
    with pytest.raises(InjectedFault, match="before step 2"):
        f.starting([2])


def test_no_driver_call_outside_a_step_counts():
    f = Faults(fail_at="1:call1")
    f.called()  # observing, before any step: not step 1's first call
    f.starting([1])
    with pytest.raises(InjectedFault):
        f.called()


# --- journal ---------------------------------------------------------------------------------------


def test_journal_ignores_a_torn_last_line(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    a = Action("create", make("bridge", "br0", mark="vnet:t:bridge:n"), None)
    b = Action("create", iptables.resource("FORWARD", ["-A FORWARD -j ACCEPT"], "d1"), None)
    c = Action("create", make("bridge", "br1", mark="vnet:t:bridge:m"), None)
    j.begin([a, b, c])
    j.start([1])
    j.done([1])
    j.start([2])
    j.close(remove=False)
    with open(j.path, "a") as f:
        f.write('{"done": ')  # killed while writing
    steps = j.steps()
    assert [(k, started, done) for k, _, started, done in steps] == [(1, True, True), (2, True, False), (3, False, False)]
    assert steps[1][1] == b  # the engine's own kinds come back from the journal too


def test_every_step_of_a_batch_is_marked_done(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    a, b, c = (Action("create", make("bridge", f"br{i}", mark=f"vnet:t:bridge:n{i}"), None) for i in range(3))
    j.begin([a, b, c])
    j.start([1, 2])
    size = j.path.stat().st_size
    j.done([1, 2])
    assert j.path.read_text()[size:].count("\n") == 2
    assert [(k, started, done) for k, _, started, done in j.steps()] == [(1, True, True), (2, True, True), (3, False, False)]


def test_a_journal_of_an_older_vnet_counts_every_recorded_step_as_started(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    a = Action("create", make("bridge", "br0", mark="vnet:t:bridge:n"), None)
    j.path.write_text(json.dumps({"step": 1, "action": a.to_json()}) + "\n")
    assert [(k, started, done) for k, _, started, done in j.steps()] == [(1, True, False)]


# --- plan order for the engine's extra kind --------------------------------------------------------


def test_iptables_rules_come_after_the_ruleset_and_before_forwarding():
    want = [
        make("sysctl", "@host/net/ipv4/conf/eth0/forwarding", ns="", path="net/ipv4/conf/eth0/forwarding", value="1"),
        iptables.resource("DOCKER-USER", ["-A DOCKER-USER -i br -o br -j ACCEPT"], "x"),
        make("ruleset", "vnet-t", digest="d", rules=1),
    ]
    assert [a.resource.kind for a in diff(want, {})] == ["ruleset", "iptables", "sysctl"]
    assert [a.resource.kind for a in diff([], {r.id: r for r in want})] == ["sysctl", "iptables", "ruleset"]
    assert rank("ruleset") < rank("iptables") < rank("sysctl")
    r = want[1]
    assert Resource.from_json(json.loads(json.dumps(r.to_json()))) == r


# --- iptables ------------------------------------------------------------------------------------

DOCKER = """# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [12:720]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -i vb-t-n -o vb-t-n -m comment --comment "vnet:t:abc" -j ACCEPT
-A DOCKER-USER -i vb-u-n -o vb-u-n -m comment --comment vnet:u:def -j ACCEPT
-A DOCKER-USER -i vb-t-n -o eth0 -m comment --comment "vnet:t:abd" -j ACCEPT
-A DOCKER-USER -m comment --comment "not vnet's" -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
"""


def test_filter_parse_and_where_rules_go():
    f = iptables.parse(DOCKER)
    assert f.forward_policy == "DROP" and f.drops_forward and f.chain == "DOCKER-USER"
    assert {"DOCKER", "DOCKER-USER", "FORWARD"} <= f.chains
    assert sorted({t for t, _, _ in f.owned()}) == ["t", "u"]
    plain = iptables.parse("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j REJECT\nCOMMIT\n")
    assert plain.drops_forward and plain.chain == "FORWARD" and plain.unconditional_drops() == ["-A FORWARD -j REJECT"]
    assert not iptables.parse("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -o x -j DROP\nCOMMIT\n").drops_forward


def test_rules_only_when_forward_drops_and_observed_by_their_mark():
    paths = [("vb-t-n", "vb-t-n", None), ("vb-t-n", "eth0", None), ("eth0", "vb-t-n", "RELATED,ESTABLISHED")]
    assert iptables.desired("t", iptables.parse("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"), paths) == []
    (r,) = iptables.desired("t", iptables.parse(DOCKER), paths)
    assert r.key == "DOCKER-USER" and r.get("rules") == 3
    lines = r.get("lines")
    assert lines[2] == f"-A DOCKER-USER -i eth0 -o vb-t-n -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment vnet:t:{r.get('digest')} -j ACCEPT"
    # the same paths in FORWARD are other rules (another digest)
    (r2,) = iptables.desired("t", iptables.parse("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n"), paths)
    assert r2.key == "FORWARD" and r2.get("digest") != r.get("digest")
    # observed: t's two rules, with two digests (one rule changed by hand) → digest None: drift
    (seen,) = iptables.observe("t", iptables.parse(DOCKER))
    assert seen.key == "DOCKER-USER" and seen.get("rules") == 2 and seen.get("digest") is None
    (u,) = iptables.observe("u", iptables.parse(DOCKER))
    assert u.get("digest") == "def" and u.get("rules") == 1
    assert iptables._inserts(r)[0].startswith("-I DOCKER-USER 1 -i vb-t-n -o vb-t-n ")


def test_forward_paths_of_a_topology():
    topo = spec.load_text(
        "name: t\nnetworks:\n  n: {mode: nat, subnet: 10.9.0.0/24, uplink: eth0, forwards: [{port: 80, to: 10.9.0.5}]}\n"
        "  m: {mode: host, subnet: 10.10.0.0/24}\n  i: {mode: isolated}\nallow: [{from: m, to: n}]\n"
    )
    paths = forward_paths(topo, HostFacts())
    assert ("vb-t-n", "vb-t-n", None) in paths and ("vb-t-m", "vb-t-m", None) in paths
    assert ("vb-t-n", "eth0", None) in paths and ("eth0", "vb-t-n", "RELATED,ESTABLISHED") in paths
    assert ("eth0", "vb-t-n", "DNAT") in paths
    assert ("vb-t-m", "vb-t-n", None) in paths and ("vb-t-n", "vb-t-m", "RELATED,ESTABLISHED") in paths
    assert not any("eth0" in p[:2] and "vb-t-m" in p[:2] for p in paths)  # host mode: not to the uplink
    assert [p for p in paths if "vb-t-i" in p[:2]] == [("vb-t-i", "vb-t-i", None)]


# --- claims between topologies -----------------------------------------------------------------------


def _topo(name: str, subnet: str, bridge: str | None = None):
    extra = f", bridge: {bridge}" if bridge else ""
    return spec.load_text(f"name: {name}\nnetworks:\n  n: {{mode: host, subnet: {subnet}{extra}}}\n")


def test_claims_of_live_topologies_are_clear_errors(tmp_path):
    a = Claims(tmp_path, "a", "h")
    a.write(Claim.of(_topo("a", "10.7.0.0/24", "brx"), "h"))
    obs = Observation("b")
    b = Claims(tmp_path, "b", "h")
    # a's claim is stale: no objects, no journal, no run in progress
    assert b.problems(_topo("b", "10.7.0.0/25", "brx"), obs) == []
    # a's bridge exists with its mark: the claim counts
    obs.links["brx"] = LinkInfo("brx", 5, "bridge", ("a", "bridge", "n", ("host",)), None, None, 1500, True)
    problems = [str(p) for p in b.problems(_topo("b", "10.7.0.0/25", "brx"), obs)]
    assert problems == [
        "networks.n.subnet: 10.7.0.0/25 overlaps 10.7.0.0/24, claimed by topology 'a' (network n) — choose a free range, or destroy topology a first",
        "networks.n.bridge: bridge brx is claimed by topology 'a' — name another bridge",
    ]
    assert b.problems(_topo("b", "10.8.0.0/24"), obs) == []
    # IPv6 prefixes are claimed the same way, and never compared with IPv4 ones
    six = lambda name, s6: spec.load_text(f"name: {name}\nnetworks:\n  n: {{mode: nat, subnet: 10.9.{len(name)}.0/24, subnet6: '{s6}'}}\n")  # noqa: E731
    a.write(Claim.of(six("a", "fd00:5::/64"), "h"))
    assert [str(p) for p in b.problems(six("bb", "fd00:5::/64"), obs)] == [
        "networks.n.subnet6: fd00:5::/64 overlaps fd00:5::/64, claimed by topology 'a' (network n) — choose a free range, or destroy topology a first"]
    assert b.problems(six("bb", "fd00:6::/64"), obs) == []
    # another namespace's claims are not this one's business
    other = Claims(tmp_path, "b", "elsewhere")
    assert other.problems(_topo("b", "10.7.0.0/24", "brx"), obs) == []


def test_a_shared_forwarding_sysctl_stays_and_its_first_value_is_handed_over(tmp_path):
    key = "@host/net/ipv4/conf/eth0/forwarding"
    r = make("sysctl", key, {"before": "0"}, ns="", path="net/ipv4/conf/eth0/forwarding", value="1")
    def ctx(name: str, subnet: str) -> Ctx:
        claims = Claims(tmp_path, name, "h")
        claims.write(Claim.of(_topo(name, subnet), "h"))
        return Ctx(nss=None, topology=name, state=tmp_path / name, state_root=tmp_path, record=SysctlRecord(tmp_path / name),
                   host_lock=None, others=claims.others)

    a, b = ctx("a", "10.7.0.0/24"), ctx("b", "10.8.0.0/24")
    a.record.save({key: {"ns": "", "path": "net/ipv4/conf/eth0/forwarding", "before": "0"}})
    b.record.save({key: {"ns": "", "path": "net/ipv4/conf/eth0/forwarding", "before": "1"}})  # a had set it
    assert sysctl_kind.still_needed(a, r)  # b still needs it: a leaves it on...
    assert a.record.load() == {}
    assert b.record.load()[key]["before"] == "0"  # ...and b will restore what was there first
    assert not sysctl_kind.still_needed(b, r)  # b is the last one: it restores


def test_bridged_bridge_is_born_with_the_uplink_mac():
    br = make("bridge", "br-lan", mark="vnet:t:bridge:lan:bridged", mtu=None, mac=None)
    up = make("uplink", "eth0", bridge="br-lan")
    other = make("bridge", "vb-t-x", mark="vnet:t:bridge:x:host", mtu=None, mac="02:00:00:00:00:01")
    obs = Observation("t")
    obs.links["eth0"] = LinkInfo("eth0", 2, None, None, None, "0e:00:00:00:00:02", 1500, True)
    actions = Engine._born_with_uplink_mac([Action("create", r, None) for r in (br, other, up)], obs)
    assert actions[0].new.get("mac") == "0e:00:00:00:00:02"
    assert actions[1].new == other and actions[2].new == up


# --- doctor ----------------------------------------------------------------------------------------


def test_doctor_words():
    calm = doctor.report([doctor.Finding("ip-forward", "info", "Forwarding is off", "That is fine.")])
    assert calm.startswith("Nothing here gets in the way")
    loud = doctor.report([doctor.Finding("forward-drop", "warning", "Forwarded traffic is dropped", "word " * 60)])
    assert loud.startswith("Some settings of this host get in the way")
    assert all(len(line) <= 100 for line in loud.splitlines())
    assert json.loads(doctor.as_json([doctor.Finding("a", "info", "t", "e")])) == [{"topic": "a", "level": "info", "title": "t", "explanation": "e"}]


# --- what is put back from records is checked (issue 12 item 2) ------------------------------------


def _undo_ctx(tmp_path, logged: list[str]) -> Ctx:
    return Ctx(nss=None, topology="t", state=tmp_path, state_root=tmp_path, record=SysctlRecord(tmp_path),
               host_lock=None, others=lambda: iter(()), log=logged.append, undoing=True)


def test_a_vm_is_never_restarted_from_a_recorded_command_line(tmp_path, monkeypatch):
    from vnet.drivers import qemu
    from vnet.kinds import vm as vm_kind

    started = []
    monkeypatch.setattr(qemu, "create", lambda *a: started.append(a))
    r = make("vm", "web", {"argv": ["/tmp/evil", "--as-root"]}, digest="x")
    logged: list[str] = []
    vm_kind.Vm().create(_undo_ctx(tmp_path, logged), r)
    assert started == [] and "stays stopped" in logged[0]
    ctx = _undo_ctx(tmp_path, logged)
    ctx.undoing = False  # the control: a run from the topology starts it
    vm_kind.Vm().create(ctx, r)
    assert len(started) == 1


@pytest.mark.parametrize("line", ["dhcp-script=/tmp/x", "conf-file=/tmp/more.conf", "conf-dir=/tmp", "user=root"])
def test_dnsmasq_is_not_restarted_from_a_recorded_config_that_runs_programs(tmp_path, monkeypatch, line):
    from vnet.drivers import dnsmasq
    from vnet.errors import VnetError
    from vnet import snoop
    from vnet.kinds import service

    started = []
    monkeypatch.setattr(dnsmasq, "create_many", lambda nss, state, rs: started.extend(rs))
    safe = "interface=vb-t-n\nbind-interfaces\ndhcp-range=10.0.0.10,10.0.0.20,1h\n"
    ctx = _undo_ctx(tmp_path, [])
    service.Service().create(ctx, make("service", "dnsmasq-n", {"config": safe}, network="n", ns="", digest="d"))
    assert len(started) == 1
    with pytest.raises(VnetError, match=line.split("=")[0]):
        service.Service().create(ctx, make("service", "dnsmasq-n", {"config": safe + line + "\n"}, network="n", ns="", digest="e"))
    assert len(started) == 1
    own = f"dhcp-script={snoop.script_path(tmp_path, 'n')}\n"  # vnet's own lease script (DHCP snooping) is fine
    service.Service().create(ctx, make("service", "dnsmasq-n", {"config": safe + own}, network="n", ns="", digest="f"))
    assert len(started) == 2
    # started together: one unfit config among several, and none of them starts
    with pytest.raises(VnetError, match=line.split("=")[0]):
        service.Service().create_many(ctx, [make("service", "dnsmasq-m", {"config": safe}, network="m", ns="", digest="g"),
                                            make("service", "dnsmasq-n", {"config": safe + line + "\n"}, network="n", ns="", digest="h")])
    assert len(started) == 2


def test_sysctl_paths_and_values_from_records_are_checked(tmp_path):
    from vnet.drivers import sysctl

    rec = SysctlRecord(tmp_path)
    good = {"ns": "", "path": "net/ipv4/conf/eth0/forwarding", "before": "0"}
    rec.file.write_text(json.dumps({
        "@host/net/ipv4/conf/eth0/forwarding": good,
        "@host/kernel/core_pattern": {"ns": "", "path": "kernel/core_pattern", "before": "|/tmp/x"},
        "@host/net/ipv4/conf/../../../kernel/x": {"ns": "", "path": "net/ipv4/conf/../../../kernel/x", "before": "1"},
        "@host/net/ipv4/conf/eth1/forwarding": {"ns": "", "path": "net/ipv4/conf/eth1/forwarding", "before": "1; rm -rf /"},
    }))
    assert rec.load() == {"@host/net/ipv4/conf/eth0/forwarding": good}
    with pytest.raises(Exception, match="refusing sysctl"):
        sysctl._write("kernel/core_pattern", "1")


def test_a_kernel_without_force_forwarding_is_named_with_the_fix(tmp_path):
    from contextlib import nullcontext

    from vnet.drivers import sysctl
    from vnet.errors import VnetError
    from vnet.kinds import sysctl as sysctl_kind

    class NoSuchSwitch:  # a namespace whose /proc/sys has none of the switches asked for
        label = "the target namespace"

        def call(self, fn, paths):
            return [None for _ in paths]

    class Nss:
        def get(self, name):
            return NoSuchSwitch()

    ctx = Ctx(nss=Nss(), topology="t", state=tmp_path, state_root=tmp_path, record=SysctlRecord(tmp_path),
              host_lock=nullcontext, others=lambda: iter(()), log=lambda m: None)
    ff = make("sysctl", "@host/net/ipv6/conf/eth0/force_forwarding", ns="", path="net/ipv6/conf/eth0/force_forwarding", value="1")
    fwd = make("sysctl", "@host/net/ipv4/conf/eth0/forwarding", ns="", path="net/ipv4/conf/eth0/forwarding", value="1")
    with pytest.raises(VnetError, match="needs Linux 6.17 or later.*no net/ipv6/conf/eth0/force_forwarding"):
        sysctl_kind.Sysctl().create_many(ctx, [ff])
    # any other missing switch is named as it is, with its namespace
    with pytest.raises(sysctl.MissingSwitch, match="/proc/sys/net/ipv4/conf/eth0/forwarding does not exist in the target namespace"):
        sysctl_kind.Sysctl().create_many(ctx, [fwd])
    assert not SysctlRecord(tmp_path).file.exists()
