"""Desired vs observed → ordered actions (`vnet.plan.diff`), and actions' inverse and JSON form."""

from __future__ import annotations

import json
import random

import pytest

from vnet.desired import desired
from vnet.facts import HostFacts
from vnet.plan import Action, batches, diff, matches
from vnet.kinds import ordered, rank
from vnet.resources import Resource, make

# creation order, as the kinds' `after` declare it: namespaces hold links, bridges hold ports,
# links hold addresses, the firewall comes after the links it names, forwarding goes on once the
# firewall guards it, services bind to addresses that exist, VMs start last (they open taps)
ORDER = ("netns", "bridge", "bridge_address", "tap", "veth", "vxlan", "macvlan", "qdisc", "ifsysctl", "address", "uplink", "route", "ruleset", "dhcp_script",
         "iptables", "sysctl", "service", "frr", "vm", "dhcpclient", "bridgeconf")


def test_the_registry_orders_kinds_by_their_after():
    assert tuple(k.name for k in ordered()) == ORDER
    for kind in ordered():
        assert all(rank(dep) < rank(kind.name) for dep in kind.after), kind.name
from vnet.spec import load_text

# --- helpers ------------------------------------------------------------------------------------


def r(kind: str, key: str, extra: dict | None = None, **attrs) -> Resource:
    return make(kind, key, extra, **attrs)


def observed(*resources: Resource) -> dict[str, Resource]:
    return {x.id: x for x in resources}


def ops(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.op, a.resource.id) for a in actions]


def roundtrip(action: Action) -> Action:
    return Action.from_json(json.loads(json.dumps(action.to_json())))


# one resource of each kind the ordering test cares about, in ORDER
LADDER = [
    r("netns", "lab-c1", mark="vnet:lab:netns:c1"),
    r("bridge", "vb-lab-lan0", mark="vnet:lab:bridge:lan0:nat", mtu=None),
    r("tap", "vt-lab-vm", master="vb-lab-lan0"),
    r("veth", "ve-lab-c1", master="vb-lab-lan0", peer_ns="lab-c1"),
    r("address", "lab-c1/eth0/10.0.0.5/24", ns="lab-c1", address="10.0.0.5", prefixlen=24),
    r("route", "lab-c1/default", ns="lab-c1", gateway="10.0.0.1"),
]


# --- what diff decides --------------------------------------------------------------------------


def test_create_for_missing():
    want = [r("bridge", "br0", mtu=1500)]
    assert ops(diff(want, {})) == [("create", "bridge:br0")]
    action = diff(want, {})[0]
    assert action.new == want[0] and action.old is None


def test_delete_for_extra():
    extra = r("tap", "vt-lab-old", master="br0")
    actions = diff([], observed(extra))
    assert ops(actions) == [("delete", "tap:vt-lab-old")]
    assert actions[0].old == extra and actions[0].new is None


def test_update_when_an_attribute_differs():
    want = r("bridge", "br0", mtu=9000, mac="02:00:00:00:00:01")
    have = r("bridge", "br0", mtu=1500, mac="02:00:00:00:00:01")
    actions = diff([want], observed(have))
    assert ops(actions) == [("update", "bridge:br0")]
    assert actions[0].new == want and actions[0].old == have
    assert "mtu: 1500 → 9000" in actions[0].describe()
    assert "mac" not in actions[0].describe()


def test_update_when_observed_lacks_a_wanted_attribute():
    assert ops(diff([r("bridge", "br0", mtu=9000)], observed(r("bridge", "br0")))) == [("update", "bridge:br0")]


def test_nothing_when_equal():
    rs = [r("bridge", "br0", mtu=1500), r("sysctl", "@host/x", path="x", value="1")]
    assert diff(rs, observed(*rs)) == []


def test_same_key_different_kind_is_a_different_resource():
    actions = diff([r("tap", "x0")], observed(r("veth", "x0")))
    assert sorted(ops(actions)) == [("create", "tap:x0"), ("delete", "veth:x0")]


def test_none_in_desired_matches_anything():
    want = r("bridge", "br0", mtu=None, mac=None, mark="m")
    for have in (
        r("bridge", "br0", mtu=1500, mac="02:00:00:00:00:09", mark="m"),
        r("bridge", "br0", mtu=None, mac=None, mark="m"),
        r("bridge", "br0", mark="m"),
    ):
        assert matches(want, have)
        assert diff([want], observed(have)) == []
    # but the attribute that is set is still compared
    assert not matches(want, r("bridge", "br0", mtu=1500, mark="other"))


def test_observed_extra_attributes_do_not_matter():
    want = r("tap", "t0", master="br0")
    have = r("tap", "t0", master="br0", mtu=1500, owner=0)
    assert diff([want], observed(have)) == []


def test_extra_is_not_compared():
    want = r("ruleset", "vnet-lab", {"text": "new text"}, digest="abc")
    have = r("ruleset", "vnet-lab", {"text": "old text"}, digest="abc")
    assert diff([want], observed(have)) == []
    assert ops(diff([want], observed(r("ruleset", "vnet-lab", digest="abd")))) == [("update", "ruleset:vnet-lab")]


def test_a_plan_refuses_a_kind_nobody_registered():
    with pytest.raises(ValueError, match="unknown resource kind 'vlan'"):
        diff([make("vlan", "v0")], {})


# --- order --------------------------------------------------------------------------------------


def test_creates_follow_order_rank():
    shuffled = LADDER[:]
    random.Random(7).shuffle(shuffled)
    assert [a.resource.kind for a in diff(shuffled, {})] == ["netns", "bridge", "tap", "veth", "address", "route"]


def test_deletes_follow_reverse_order_rank():
    shuffled = LADDER[:]
    random.Random(3).shuffle(shuffled)
    actions = diff([], observed(*shuffled))
    assert [a.op for a in actions] == ["delete"] * len(LADDER)
    assert [a.resource.kind for a in actions] == ["route", "address", "veth", "tap", "bridge", "netns"]


def test_all_kinds_in_order():
    every = [r(kind, f"k-{kind}") for kind in reversed(ORDER)]
    assert [a.resource.kind for a in diff(every, {})] == list(ORDER)
    assert [a.resource.kind for a in diff([], observed(*every))] == list(reversed(ORDER))
    assert ORDER.index("netns") < ORDER.index("bridge") < ORDER.index("tap") < ORDER.index("address") < ORDER.index("route")
    assert ORDER.index("bridge") < ORDER.index("veth") < ORDER.index("address")


def test_deletes_come_before_creates_and_updates():
    want = [r("netns", "lab-new"), r("bridge", "br0", mtu=9000)]
    have = observed(r("bridge", "br0", mtu=1500), r("route", "lab-old/default"), r("sysctl", "@host/old"))
    assert ops(diff(want, have)) == [
        ("delete", "sysctl:@host/old"),
        ("delete", "route:lab-old/default"),
        ("create", "netns:lab-new"),
        ("update", "bridge:br0"),
    ]


def test_same_rank_sorted_by_key():
    want = [r("tap", "vt-c"), r("tap", "vt-a"), r("tap", "vt-b")]
    assert [a.resource.key for a in diff(want, {})] == ["vt-a", "vt-b", "vt-c"]
    assert [a.resource.key for a in diff([], observed(*want))] == ["vt-a", "vt-b", "vt-c"]


def test_diff_of_a_real_topology():
    text = """
name: lab
networks:
  lan0: {mode: nat, subnet: 10.30.0.0/24}
endpoints:
  c1: {kind: netns, network: lan0, address: 10.30.0.5/24}
  vm: {kind: tap, network: lan0}
"""
    want = desired(load_text(text), HostFacts(default_uplink="eth0"))
    creates = diff(want, {})
    assert {a.op for a in creates} == {"create"} and len(creates) == len(want)
    ranks = [rank(a.resource.kind) for a in creates]
    assert ranks == sorted(ranks)
    assert diff(want, observed(*want)) == []
    # everything the topology made is deleted, in reverse, when the topology is gone
    deletes = diff([], observed(*want))
    assert [rank(a.resource.kind) for a in deletes] == sorted(ranks, reverse=True)


# --- Action -------------------------------------------------------------------------------------


def test_inverse_swaps_create_and_delete():
    x = r("bridge", "br0", mtu=1500)
    create = Action("create", x, None)
    assert create.inverse() == Action("delete", None, x)
    assert Action("delete", None, x).inverse() == create
    assert create.inverse().resource == x


def test_inverse_of_update_swaps_old_and_new():
    old, new = r("bridge", "br0", mtu=1500), r("bridge", "br0", mtu=9000)
    inv = Action("update", new, old).inverse()
    assert inv == Action("update", old, new)
    assert inv.inverse() == Action("update", new, old)


def test_inverse_undoes_a_whole_plan():
    have = observed(r("bridge", "br0", mtu=1500), r("tap", "t-old"))
    want = [r("bridge", "br0", mtu=9000), r("netns", "n1")]
    plan = diff(want, have)
    undo = [a.inverse() for a in reversed(plan)]
    # applying the plan and then its inverse in reverse leaves what was there
    state = dict(have)
    for a in plan + undo:
        if a.op == "delete":
            del state[a.old.id]
        else:
            state[a.new.id] = a.new
    assert state == have


@pytest.mark.parametrize(
    "action",
    [
        Action("create", make("bridge", "br0", mtu=1500, mac="02:00:00:00:00:01", mark="vnet:lab:bridge:lan0:nat"), None),
        Action("delete", None, make("tap", "t0", owner=0, group=None, master="br0")),
        Action("update", make("bridge", "br0", mtu=9000), make("bridge", "br0", mtu=1500)),
        Action("create", make("ruleset", "vnet-lab", {"text": "table inet vnet-lab {\n}\n"}, digest="abc", rules=3), None),
        Action("create", make("veth", "v0", peer={"ns": "n1", "names": ["a", "b"]}, ports=["x", "y"]), None),
    ],
    ids=["create", "delete", "update", "ruleset-extra", "nested"],
)
def test_action_json_round_trip(action):
    back = roundtrip(action)
    assert back == action
    assert back.op == action.op
    for mine, theirs in ((back.new, action.new), (back.old, action.old)):
        if theirs is None:
            assert mine is None
        else:
            # extra is not part of equality, so check it on its own
            assert mine.extra == theirs.extra and mine.attrs == theirs.attrs
    assert json.loads(json.dumps(back.to_json())) == json.loads(json.dumps(action.to_json()))


def test_ruleset_text_survives_json():
    a = Action("create", make("ruleset", "vnet-lab", {"text": "rules"}, digest="abc"), None)
    assert roundtrip(a).new.get("text") == "rules"


def test_describe_signs():
    x = r("bridge", "br0", mtu=1500)
    assert Action("create", x, None).describe().startswith("+ bridge br0")
    assert Action("delete", None, x).describe().startswith("- bridge br0")
    assert "mtu=1500" in Action("create", x, None).describe()


def test_consecutive_link_deletions_run_as_one_batch_everything_else_alone():
    owned = [
        make("bridge", "br0", mark="m"),
        make("tap", "t1", mark="m"),
        make("veth", "v1", mark="m"),
        make("address", "br0/10.0.0.1/24", ns="", ifname="br0", address="10.0.0.1", prefixlen=24),
        make("netns", "x-c1", mark="m"),
        make("netns", "x-c2", mark="m"),
    ]
    actions = diff([], {r.id: r for r in owned})
    runs = [[actions[i].resource.kind for i in run] for run in batches(actions)]
    assert runs == [["address"], ["veth", "tap", "bridge"], ["netns"], ["netns"]]
    assert [i for run in batches(actions) for i in run] == list(range(len(actions)))  # each step once, in order
    creates = diff(owned, {})
    # creations batch by kind (namespaces, taps, veths: each kind's own create_many), never across kinds
    assert [[creates[i].resource.kind for i in run] for run in batches(creates)] == [["netns", "netns"], ["bridge"], ["tap"], ["veth"], ["address"]]
    assert batches([]) == []


def test_consecutive_daemon_creations_run_as_one_batch():
    services = [make("service", f"dnsmasq-n{i}", {"config": "x"}, network=f"n{i}", ns="", digest="d") for i in range(3)]
    owned = [make("bridge", "br0", mark="m"), *services]
    actions = diff(owned, {})
    runs = [[actions[i].resource.kind for i in run] for run in batches(actions)]
    assert runs == [["bridge"], ["service", "service", "service"]]
    # a deletion never joins a run of creations
    mixed = diff(services[:2], {services[2].id: services[2]})
    assert [[mixed[i].op for i in run] for run in batches(mixed)] == [["delete"], ["create", "create"]]


def _early(actions):
    from vnet.engine.run import early_starts

    runs = batches(actions)
    starts = early_starts(actions, runs)
    kind = lambda pos: runs[pos] and actions[runs[pos][0]].resource.kind  # noqa: E731
    return {(kind(p) if p >= 0 else None): [kind(q) for q in later] for p, later in starts.after.items()}, \
        {kind(p) for p in starts.hoisted}


def test_the_ruleset_starts_once_the_bridges_exist_and_runs_alongside_the_ports():
    owned = [make("netns", "x-c1", mark="m"), make("bridge", "br0", mark="m"), make("tap", "t0", mark="m"),
             make("veth", "v0", mark="m"), make("address", "br0/10.0.0.1/24", ifname="br0"),
             make("ruleset", "vnet-x", {"text": "t"}, digest="d"), make("sysctl", "net.ipv4.ip_forward", value="1")]
    after, hoisted = _early(diff(owned, {}))
    assert after == {"bridge": ["ruleset"]} and hoisted == {"ruleset"}
    # no bridge or namespace (bridges are after namespaces) made in this run: it starts before the
    # first step; after every deletion, though, so a port on its way out keeps its guard until gone
    rest = [o for o in owned if o.kind not in ("bridge", "netns")]
    assert _early(diff(rest, {}))[0] == {None: ["ruleset"]}
    gone = make("tap", "t9", mark="m")
    actions = diff(rest, {gone.id: gone})
    assert actions[0].op == "delete" and _early(actions)[0] == {"tap": ["ruleset"]}


def test_a_step_already_at_its_earliest_place_is_not_moved():
    rules = make("ruleset", "vnet-x", {"text": "t2"}, digest="d2")
    old = make("ruleset", "vnet-x", {"text": "t"}, digest="d")
    assert _early(diff([rules], {old.id: old})) == ({}, set())
    owned = [make("bridge", "br0", mark="m"), rules]
    assert _early(diff(owned, {})) == ({}, set())  # right after the bridge is where it stands


def test_a_dnsmasq_on_its_bridge_starts_once_its_address_ruleset_and_script_exist():
    svc = make("service", "dnsmasq-lan", {"config": "x"}, network="lan", ns="", digest="d")
    owned = [make("netns", "x-c1", mark="m"), make("bridge", "br0", mark="m"),
             make("bridge_address", "@host/br0/10.0.0.1/24", ns="", ifname="br0"), make("tap", "t0", mark="m"),
             make("veth", "v0", mark="m"), make("address", "x-c1/eth0/10.0.0.5/24", ns="x-c1", ifname="eth0"),
             make("route", "x-c1/default", ns="x-c1", dst="default"), make("ruleset", "vnet-x", {"text": "t"}, digest="d"),
             make("dhcp_script", "dhcp-event-lan", network="lan"), make("sysctl", "@host/net/ipv4/conf/br0/forwarding", value="1"), svc]
    after, hoisted = _early(diff(owned, {}))
    # the ruleset and the script once the bridge is there; dnsmasq after them (early steps run in
    # the order they start), once the bridge's address is there too: all while the ports are made
    assert after == {"bridge": ["ruleset", "dhcp_script"], "bridge_address": ["service"]}
    assert hoisted == {"ruleset", "dhcp_script", "service"}
    # one in a namespace of its own (an isolated network's) also needs that namespace's address
    # and route: it starts after the routes, not before the links
    own = make("service", "dnsmasq-lan", {"config": "x"}, network="lan", ns="x-svc-lan", digest="d")
    after, hoisted = _early(diff([*owned[:-1], own], {}))
    assert after == {"bridge": ["ruleset", "dhcp_script"], "route": ["service"]} and "service" in hoisted
    # a batch of them starts as one run, after what the most demanding of them needs
    two = diff([*owned, make("service", "dnsmasq-iso", {"config": "x"}, network="iso", ns="x-svc-iso", digest="d")], {})
    assert _early(two)[0]["route"] == ["service"]


def _worker_runs(fail_first: bool = False):
    """Two runs handed to the early thread: the first holds until released."""
    import threading

    from vnet.engine.run import _Early

    early, release, running, order = _Early(), threading.Event(), threading.Event(), []

    def first(actions, run, done):
        running.set()
        release.wait(10)
        order.append("first")
        if fail_first:
            raise RuntimeError("boom")

    def second(actions, run, done):
        order.append("second")

    return early, release, running, order, first, second


def test_starting_an_early_step_never_waits_for_the_one_before():
    early, release, _, order, first, second = _worker_runs()
    early.start(first, [], range(0, 1), [])
    early.start(second, [], range(1, 2), [])  # returns at once: the first is still held
    assert order == []
    release.set()
    early.wait()
    early.finish()
    assert order == ["first", "second"] and early.thread is None


def test_after_an_early_step_fails_nothing_more_starts_and_the_failure_is_reported():
    from vnet.engine.run import _EarlyFailed

    early, release, _, order, first, second = _worker_runs(fail_first=True)
    early.start(first, [], range(4, 5), [])
    early.start(second, [], range(5, 6), [])
    release.set()
    with pytest.raises(_EarlyFailed):
        early.wait()
    early.finish()
    assert order == ["first"] and early.failed == 5 and str(early.error) == "boom"


def test_finishing_drops_what_has_not_started_and_waits_for_what_runs():
    import threading

    early, release, running, order, first, second = _worker_runs()
    early.start(first, [], range(0, 1), [])
    early.start(second, [], range(1, 2), [])
    assert running.wait(10)
    threading.Timer(0.05, release.set).start()
    early.finish()  # as a failed run does before undoing
    assert order == ["first"] and early.thread is None


def test_a_dnsmasq_that_sends_router_advertisements_waits_at_its_place():
    """It must not advertise before an endpoint's autoconf and the bridge's accept_ra are set."""
    ra = make("service", "dnsmasq-lan", {"config": "interface=br0\nenable-ra\n"}, network="lan", ns="", digest="d")
    owned = [make("bridge", "br0", mark="m"), make("bridge_address", "@host/br0/10.0.0.1/24", ns="", ifname="br0"),
             make("veth", "v0", mark="m"), make("ifsysctl", "x-c1/net/ipv6/conf/eth0/autoconf", ns="x-c1", value="0"),
             make("ruleset", "vnet-x", {"text": "t"}, digest="d"), make("dhcp_script", "dhcp-event-lan", network="lan"),
             make("sysctl", "@host/net/ipv6/conf/br0/accept_ra", value="0"), ra]
    after, hoisted = _early(diff(owned, {}))
    assert "service" not in hoisted and after == {"bridge": ["ruleset", "dhcp_script"]}
