"""DHCP/DNS services (dnsmasq config), VMs (QEMU argv, taps) and the tiny guest's initramfs.

Pure tests: topology + facts → text, argv and resources. Nothing runs as root, nothing touches
the network, no QEMU or dnsmasq is started.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from vnet import dnsconf, names, qemuargs
from vnet.desired import desired
from vnet.facts import HostFacts
from vnet.drivers.dnsmasq import digest as config_digest
from vnet.drivers.qemu import digest as argv_digest
from vnet.errors import Problem, SpecError
from vnet import guest
from vnet.guest import Agent, _cpio, reply_of, taken
from vnet.resources import Resource, ns_key
from vnet.spec import load, load_text
from vnet.spec.models import Topology
from vnet.spec.validate import dhcp_range

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STATE = Path("/tmp/x")
FACTS = HostFacts(default_uplink="eth0", resolvers=("192.0.2.1",), state=STATE, tiny_guest=("/k", "/i"))
MAC_RE = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")

# --- helpers ------------------------------------------------------------------------------------


class _NoAliases(yaml.SafeDumper):
    """vnet rejects YAML aliases; shared sub-dicts in test data must be written out in full."""

    def ignore_aliases(self, data) -> bool:
        return True



def topo(networks: dict | None = None, endpoints: dict | None = None, vms: dict | None = None, name: str = "lab") -> Topology:
    data: dict = {"name": name}
    if networks:
        data["networks"] = networks
    if endpoints:
        data["endpoints"] = endpoints
    if vms:
        data["vms"] = vms
    return load_text(yaml.dump(data, Dumper=_NoAliases))


def problems(networks=None, endpoints=None, vms=None, name: str = "lab") -> list[Problem]:
    with pytest.raises(SpecError) as info:
        topo(networks, endpoints, vms, name)
    assert info.value.problems, "a SpecError lists at least one problem"
    for p in info.value.problems:
        assert p.path in str(info.value)  # the message names where the problem is
    return info.value.problems


def paths(networks=None, endpoints=None, vms=None) -> list[str]:
    return [p.path for p in problems(networks, endpoints, vms)]


def by_id(rs: list[Resource]) -> dict[str, Resource]:
    ids = [r.id for r in rs]
    assert len(ids) == len(set(ids)), f"duplicate resource ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    return {r.id: r for r in rs}


def of_kind(rs: list[Resource], kind: str) -> list[Resource]:
    return [r for r in rs if r.kind == kind]


def conf_lines(config: str) -> list[str]:
    assert config.endswith("\n")
    return config.splitlines()


def values(config: str, key: str) -> list[str]:
    """The values of every `key=value` line of a dnsmasq config."""
    return [line.split("=", 1)[1] for line in conf_lines(config) if line.startswith(key + "=")]


def option(config: str, name: str) -> list[str]:
    """The `dhcp-option=option:<name>[,value]` lines, as the part after the option name."""
    out = []
    for v in values(config, "dhcp-option"):
        if v == f"option:{name}" or v.startswith(f"option:{name},"):
            out.append(v[len(f"option:{name}"):].lstrip(","))
    return out


def service_config(t: Topology, net: str, facts: HostFacts = FACTS) -> str:
    r = by_id(desired(t, facts))[f"service:dnsmasq-{net}"]
    return r.get("config")


def nat(**fields) -> dict:
    return {"lan0": {"mode": "nat", "subnet": "192.168.223.0/24", **fields}}


BR = names.bridge("lab", "lan0")


# --- dnsmasq config: a nat network with DHCP and DNS ----------------------------------------------


@pytest.fixture(scope="module")
def guests() -> Topology:
    return load(EXAMPLES / "guests.yaml")


@pytest.fixture(scope="module")
def guests_conf(guests) -> str:
    return service_config(guests, "lan0")


def test_nat_binds_to_its_bridge_only(guests, guests_conf):
    lines = conf_lines(guests_conf)
    br = names.bridge("lab", "lan0")
    assert f"interface={br}" in lines
    assert "bind-interfaces" in lines
    assert "except-interface=lo" in lines
    assert values(guests_conf, "interface") == [br]  # exactly one listening interface
    assert "eth0" not in guests_conf  # the uplink (declared and default) never appears
    assert "port=0" not in lines


def test_nat_service_runs_in_host_namespace(guests, guests_conf):
    svc = by_id(desired(guests, FACTS))["service:dnsmasq-lan0"]
    assert svc.get("ns") == ""
    assert svc.get("network") == "lan0"
    assert svc.get("digest") == config_digest(guests_conf)
    assert "# netns=" in conf_lines(guests_conf)
    assert not any(r.kind == "netns" and "svc" in r.key for r in desired(guests, FACTS))


def test_render_direct_equals_desired(guests, guests_conf):
    text = dnsconf.render(guests, "lan0", names.bridge("lab", "lan0"), "", ["192.0.2.1"], STATE)
    assert text == guests_conf


def test_nat_declared_range_netmask_and_lease(guests_conf):
    assert values(guests_conf, "dhcp-range") == ["192.168.223.100,192.168.223.199,255.255.255.0,1h"]
    assert "dhcp-authoritative" in conf_lines(guests_conf)


def test_state_files_under_state_dir(guests_conf):
    assert values(guests_conf, "pid-file") == ["/tmp/x/dnsmasq-lan0.pid"]
    # leases outlive a reboot: the lib directory beside the state (vnet.libdir)
    assert values(guests_conf, "dhcp-leasefile") == ["/tmp/.lib/x/dnsmasq-lan0.leases"]
    assert values(guests_conf, "log-facility") == ["/tmp/x/dnsmasq-lan0.log"]


@pytest.mark.parametrize(
    "net, expected",
    [
        ({"mode": "nat", "subnet": "10.9.0.0/24"}, "10.9.0.2,10.9.0.254,255.255.255.0"),
        ({"mode": "nat", "subnet": "10.9.0.16/28"}, "10.9.0.18,10.9.0.30,255.255.255.240"),
        ({"mode": "host", "subnet": "10.9.0.0/16"}, "10.9.0.2,10.9.255.254,255.255.0.0"),
        # the gateway at the top: the range stops below it
        ({"mode": "nat", "subnet": "10.9.0.0/24", "address": "10.9.0.254"}, "10.9.0.1,10.9.0.253,255.255.255.0"),
        ({"mode": "isolated", "subnet": "10.9.0.0/29"}, "10.9.0.2,10.9.0.6,255.255.255.248"),
    ],
)
def test_default_range_is_subnet_minus_service_address(net, expected):
    t = topo({"lan0": {**net, "dhcp": {"lease": "12h"}}})
    conf = service_config(t, "lan0")
    assert values(conf, "dhcp-range") == [f"{expected},12h"]


def test_default_range_of_a_slash_30():
    t = topo({"lan0": {"mode": "nat", "subnet": "10.9.0.4/30", "dhcp": True}})
    first, last = dhcp_range(t, "lan0")
    assert (str(first), str(last)) == ("10.9.0.6", "10.9.0.6")


def test_infinite_lease():
    conf = service_config(topo(nat(dhcp={"lease": "infinite"})), "lan0")
    assert values(conf, "dhcp-range") == ["192.168.223.2,192.168.223.254,255.255.255.0,infinite"]


def test_router_and_dns_server_are_the_gateway(guests_conf):
    assert option(guests_conf, "router") == ["192.168.223.1"]
    assert option(guests_conf, "dns-server") == ["192.168.223.1"]


def test_router_follows_an_explicit_gateway_address():
    conf = service_config(topo(nat(address="192.168.223.254", dhcp=True, dns=True)), "lan0")
    assert option(conf, "router") == ["192.168.223.254"]
    assert option(conf, "dns-server") == ["192.168.223.254"]
    assert "host-record=gateway.vnet.internal,gateway,192.168.223.254" in conf_lines(conf)
    assert values(conf, "dhcp-range") == ["192.168.223.1,192.168.223.253,255.255.255.0,1h"]


def test_reservation_for_netns_endpoint_with_address(guests, guests_conf):
    mac = names.mac("lab", "c1")
    assert f"dhcp-host={mac},192.168.223.10,c1" in conf_lines(guests_conf)
    # the reservation's MAC is the one the endpoint's veth peer gets
    veth = by_id(desired(guests, FACTS))[f"veth:{names.veth_host('lab', 'c1')}"]
    assert veth.get("peer_mac") == mac


def test_reservation_uses_an_explicit_endpoint_mac():
    t = topo(nat(dhcp=True), {"c1": {"kind": "netns", "network": "lan0", "address": "192.168.223.10/24", "mac": "52:54:00:AA:BB:CC"}})
    conf = service_config(t, "lan0")
    assert "dhcp-host=52:54:00:aa:bb:cc,192.168.223.10,c1" in conf_lines(conf)
    assert names.mac("lab", "c1") not in conf


def test_name_only_hosts_for_endpoints_without_address():
    t = topo(
        nat(dhcp=True),
        {
            "n1": {"kind": "netns", "network": "lan0"},
            "t1": {"kind": "tap", "network": "lan0"},
            "t2": {"kind": "tap"},  # on no network
            "u1": {"kind": "tun", "address": "10.99.0.1/30"},
        },
    )
    hosts = values(service_config(t, "lan0"), "dhcp-host")
    assert f"{names.mac('lab', 'n1')},n1" in hosts
    assert f"{names.mac('lab', 't1')},t1" in hosts
    assert not any(h.endswith(",t2") or h.endswith(",u1") for h in hosts)
    assert len(hosts) == 2


def test_vm_reservations(guests, guests_conf):
    hosts = values(guests_conf, "dhcp-host")
    db_mac = qemuargs.nic_mac(guests, "db", 0)
    web_mac = qemuargs.nic_mac(guests, "web", 0)
    assert f"{db_mac},192.168.223.20,db" in hosts
    assert f"{web_mac},web" in hosts
    assert db_mac != web_mac
    # the reserved MAC is the one QEMU gives the guest
    assert f"mac={db_mac}" in " ".join(by_id(desired(guests, FACTS))["vm:db"].get("argv"))


def test_second_nic_is_named_vm_dash_index():
    t = topo(
        {**nat(dhcp=True), "lan1": {"mode": "host", "subnet": "10.8.0.0/24", "dhcp": True}},
        vms={"web": {"image": "tiny", "nics": [{"network": "lan0"}, {"network": "lan0", "address": "192.168.223.30"}, {"network": "lan1"}]}},
    )
    lan0 = values(service_config(t, "lan0"), "dhcp-host")
    assert lan0 == [f"{qemuargs.nic_mac(t, 'web', 0)},web", f"{qemuargs.nic_mac(t, 'web', 1)},192.168.223.30,web-1"]
    lan1 = values(service_config(t, "lan1"), "dhcp-host")
    assert lan1 == [f"{qemuargs.nic_mac(t, 'web', 2)},web-2"]  # only the NIC on lan1


def test_each_network_names_its_own_endpoints_in_file_order():
    """Endpoints of two networks written interleaved (and a tun on none; the file is written with
    its keys sorted): each network's DHCP hosts and DNS records are its own endpoints', in the
    order the file gives them."""
    lan0 = {"mode": "nat", "subnet": "192.168.223.0/24", "dhcp": {}, "dns": {"domain": "a.test"}}
    lan1 = {"mode": "nat", "subnet": "192.168.224.0/24", "dhcp": {}, "dns": {"domain": "b.test"}}
    eps = {
        "e1": {"kind": "netns", "network": "lan0", "address": "192.168.223.12/24"},
        "e2": {"kind": "netns", "network": "lan1", "address": "192.168.224.11/24"},
        "e3": {"kind": "tun"},
        "e4": {"kind": "netns", "network": "lan0", "address": "192.168.223.11/24"},
        "e5": {"kind": "tap", "network": "lan1"},
    }
    t = topo({"lan0": lan0, "lan1": lan1}, eps)
    assert list(t.endpoints) == ["e1", "e2", "e3", "e4", "e5"]
    mac = lambda ep: names.mac("lab", ep)  # noqa: E731
    first, second = service_config(t, "lan0"), service_config(t, "lan1")
    assert values(first, "dhcp-host") == [f"{mac('e1')},192.168.223.12,e1", f"{mac('e4')},192.168.223.11,e4"]
    assert values(second, "dhcp-host") == [f"{mac('e2')},192.168.224.11,e2", f"{mac('e5')},e5"]
    assert [v for v in values(first, "host-record") if not v.startswith("gateway")] == ["e1.a.test,e1,192.168.223.12", "e4.a.test,e4,192.168.223.11"]
    assert [v for v in values(second, "host-record") if not v.startswith("gateway")] == ["e2.b.test,e2,192.168.224.11"]


def test_explicit_dhcp_hosts():
    t = topo(nat(dhcp={"hosts": [{"mac": "52:54:00:00:00:01", "address": "192.168.223.50", "name": "printer_1"},
                                 {"mac": "52:54:00:00:00:02", "address": "192.168.223.51"}]}))
    hosts = values(service_config(t, "lan0"), "dhcp-host")
    assert "52:54:00:00:00:01,192.168.223.50,printer-1" in hosts
    assert "52:54:00:00:00:02,192.168.223.51" in hosts


def test_host_records(guests_conf):
    lines = conf_lines(guests_conf)
    assert "host-record=c1.lab.test,c1,192.168.223.10" in lines
    assert "host-record=gateway.lab.test,gateway,192.168.223.1" in lines
    assert "domain=lab.test" in lines
    assert "local=/lab.test/" in lines
    assert not any(line.startswith("host-record=web") for line in lines)  # leased: no static record


def test_extra_dns_records():
    t = topo(nat(dns={"domain": "lab.test", "records": {"nas.lab.test": "192.168.223.5"}}))
    assert "host-record=nas.lab.test,192.168.223.5" in conf_lines(service_config(t, "lan0"))


def test_upstream_from_host_resolvers(guests_conf):
    assert values(guests_conf, "server") == ["192.0.2.1"]
    assert "no-resolv" in conf_lines(guests_conf)


def test_upstream_from_spec_wins_over_host_resolvers():
    t = topo(nat(dns={"upstream": ["198.51.100.7", "198.51.100.8"]}))
    conf = service_config(t, "lan0")
    assert values(conf, "server") == ["198.51.100.7", "198.51.100.8"]
    assert "192.0.2.1" not in conf


def test_empty_upstream_means_no_forwarding():
    conf = service_config(topo(nat(dns={"upstream": []})), "lan0")
    assert values(conf, "server") == []


def test_several_host_resolvers_all_forwarded():
    facts = HostFacts(default_uplink="eth0", resolvers=("192.0.2.1", "192.0.2.2"), state=STATE)
    conf = service_config(topo(nat(dns=True)), "lan0", facts)
    assert values(conf, "server") == ["192.0.2.1", "192.0.2.2"]


@pytest.mark.parametrize("dns", [True, {"upstream": ["198.51.100.7"]}])
def test_isolated_network_has_no_upstream(dns):
    t = topo({"lan0": {"mode": "isolated", "subnet": "10.77.0.0/24", "dhcp": True, "dns": dns}})
    conf = service_config(t, "lan0")
    assert values(conf, "server") == []
    assert "198.51.100.7" not in conf and "192.0.2.1" not in conf


def test_dhcp_only_turns_dns_off():
    conf = service_config(topo(nat(dhcp=True)), "lan0")
    lines = conf_lines(conf)
    assert "port=0" in lines
    assert values(conf, "server") == []
    assert values(conf, "domain") == []
    assert not any(line.startswith("host-record=") for line in lines)
    assert option(conf, "dns-server") == [""]  # sent empty: clients get no DNS server
    assert option(conf, "router") == ["192.168.223.1"]


def test_dns_only_has_no_dhcp():
    conf = service_config(topo(nat(dns=True)), "lan0")
    lines = conf_lines(conf)
    assert "port=0" not in lines
    assert "domain=vnet.internal" in lines
    assert not any(line.startswith(("dhcp-range", "dhcp-host", "dhcp-option", "dhcp-leasefile")) for line in lines)


def test_no_service_without_dhcp_or_dns():
    rs = desired(topo(nat()), FACTS)
    assert of_kind(rs, "service") == []


def test_classless_routes_include_default_route():
    t = topo(nat(dhcp={"routes": [{"to": "10.20.0.0/16", "via": "192.168.223.254"}, {"to": "10.30.0.0/24", "via": "192.168.223.253"}]}))
    conf = service_config(t, "lan0")
    assert option(conf, "classless-static-route") == [
        "10.20.0.0/16,192.168.223.254,10.30.0.0/24,192.168.223.253,0.0.0.0/0,192.168.223.1"
    ]


def test_no_classless_routes_without_routes(guests_conf):
    assert option(guests_conf, "classless-static-route") == []


def test_classless_routes_on_isolated_network_have_no_default():
    t = topo({"lan0": {"mode": "isolated", "subnet": "10.77.0.0/24", "dhcp": {"routes": [{"to": "10.20.0.0/16", "via": "10.77.0.9"}]}}})
    assert option(service_config(t, "lan0"), "classless-static-route") == ["10.20.0.0/16,10.77.0.9"]


@pytest.mark.parametrize(
    "net_mtu, dhcp_mtu, expected",
    [(None, 1400, ["1400"]), (9000, None, ["9000"]), (9000, 1450, ["1450"]), (None, None, [])],
)
def test_mtu_option(net_mtu, dhcp_mtu, expected):
    dhcp = {} if dhcp_mtu is None else {"mtu": dhcp_mtu}
    net = nat(dhcp=dhcp) if net_mtu is None else nat(dhcp=dhcp, mtu=net_mtu)
    assert option(service_config(topo(net), "lan0"), "mtu") == expected


def test_underscores_become_dashes_in_names():
    t = topo(
        nat(dhcp=True, dns={"domain": "lab.test"}),
        {"my_box": {"kind": "netns", "network": "lan0", "address": "192.168.223.10/24"}, "other_ep": {"kind": "netns", "network": "lan0"}},
        {"big_vm": {"image": "tiny", "nics": [{"network": "lan0"}, {"network": "lan0"}]}},
    )
    conf = service_config(t, "lan0")
    lines = conf_lines(conf)
    assert "host-record=my-box.lab.test,my-box,192.168.223.10" in lines
    hosts = values(conf, "dhcp-host")
    assert f"{names.mac('lab', 'my_box')},192.168.223.10,my-box" in hosts
    assert f"{names.mac('lab', 'other_ep')},other-ep" in hosts
    assert f"{qemuargs.nic_mac(t, 'big_vm', 0)},big-vm" in hosts
    assert f"{qemuargs.nic_mac(t, 'big_vm', 1)},big-vm-1" in hosts
    for line in lines:
        if line.startswith(("host-record=", "dhcp-host=")):
            assert "_" not in line, line


def test_config_has_no_placeholder_values(guests_conf):
    assert "None" not in guests_conf
    for line in conf_lines(guests_conf):
        assert line.startswith("#") or re.fullmatch(r"[a-z0-9-]+(=.*)?", line), line


def test_config_changes_with_the_topology():
    a = service_config(topo(nat(dhcp={"lease": "1h"})), "lan0")
    b = service_config(topo(nat(dhcp={"lease": "2h"})), "lan0")
    assert a != b and config_digest(a) != config_digest(b)
    assert a == service_config(topo(nat(dhcp={"lease": "1h"})), "lan0")


# --- isolated network: the service namespace -----------------------------------------------------


@pytest.fixture(scope="module")
def iso() -> tuple[Topology, dict[str, Resource]]:
    t = load(EXAMPLES / "isolated-guests.yaml")
    return t, by_id(desired(t, FACTS))


def test_isolated_service_namespace(iso):
    _, rs = iso
    ns = "iso-svc-lab"
    assert ns == names.service_netns("iso", "lab")
    assert f"netns:{ns}" in rs
    assert names.parse_mark(rs[f"netns:{ns}"].get("mark"))[0] == "iso"


def test_isolated_service_veth_joins_the_bridge(iso):
    _, rs = iso
    ns = "iso-svc-lab"
    veths = [r for r in rs.values() if r.kind == "veth" and r.get("peer_ns") == ns]
    assert len(veths) == 1
    veth = veths[0]
    assert veth.get("master") == names.bridge("iso", "lab")
    assert veth.get("peer_name") == "eth0"
    assert veth.get("mac") != veth.get("peer_mac")


def test_isolated_service_address_inside_namespace(iso):
    _, rs = iso
    ns = "iso-svc-lab"
    addr = rs[f"address:{ns_key(ns, 'eth0', '10.77.0.1/24')}"]
    assert (addr.get("ns"), addr.get("ifname"), addr.get("address"), addr.get("prefixlen")) == (ns, "eth0", "10.77.0.1", 24)
    # the bridge itself has no address on the host
    assert not [r for r in rs.values() if r.kind in ("address", "bridge_address") and r.get("ns") == ""]


def test_isolated_service_resource_runs_in_namespace(iso):
    _, rs = iso
    svc = rs["service:dnsmasq-lab"]
    assert svc.get("ns") == "iso-svc-lab"
    assert svc.get("network") == "lab"
    conf = svc.get("config")
    lines = conf_lines(conf)
    assert "# netns=iso-svc-lab" in lines
    assert values(conf, "interface") == ["eth0"]
    assert "dhcp-option=option:router" in lines  # empty: an isolated network has no router
    assert option(conf, "router") == [""]
    assert option(conf, "dns-server") == ["10.77.0.1"]
    assert values(conf, "dhcp-range") == ["10.77.0.2,10.77.0.254,255.255.255.0,1h"]
    assert values(conf, "server") == []
    assert not any(line.startswith("host-record=gateway") for line in lines)


def test_isolated_dhcp_without_dns_still_gets_a_namespace():
    t = topo({"lan0": {"mode": "isolated", "subnet": "10.77.0.0/24", "dhcp": True}})
    rs = by_id(desired(t, FACTS))
    assert "netns:lab-svc-lan0" in rs
    assert rs["service:dnsmasq-lan0"].get("ns") == "lab-svc-lan0"
    assert option(rs["service:dnsmasq-lan0"].get("config"), "dns-server") == [""]


def test_isolated_vm_address_cannot_be_the_service_address():
    assert "vms.a.nics.0.address" in paths(
        {"lab": {"mode": "isolated", "subnet": "10.77.0.0/24", "dhcp": True}},
        vms={"a": {"image": "tiny", "nics": [{"network": "lab", "address": "10.77.0.1"}]}},
    )


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["dhcp", "dns"])
def test_service_on_bridged_network(field):
    ps = paths({"lan0": {"mode": "bridged", "uplink": "enp3s0", field: True}})
    assert f"networks.lan0.{field}" in ps


def test_dhcp_without_subnet():
    ps = problems({"lan0": {"mode": "isolated", "dhcp": True}})
    assert [p.path for p in ps] == ["networks.lan0.subnet"]
    assert "DHCP" in ps[0].message


def test_dns_without_subnet():
    assert paths({"lan0": {"mode": "isolated", "dns": True}}) == ["networks.lan0.subnet"]


@pytest.mark.parametrize(
    "rng, where",
    [
        (["192.168.223.100", "192.168.224.5"], "networks.lan0.dhcp.range.1"),
        (["10.0.0.5", "192.168.223.100"], "networks.lan0.dhcp.range.0"),
        (["192.168.223.0", "192.168.223.10"], "networks.lan0.dhcp.range.0"),  # network address
        (["192.168.223.100", "192.168.223.255"], "networks.lan0.dhcp.range.1"),  # broadcast
    ],
)
def test_range_outside_subnet(rng, where):
    assert where in paths(nat(dhcp={"range": rng}))


def test_range_reversed():
    ps = problems(nat(dhcp={"range": ["192.168.223.199", "192.168.223.100"]}))
    assert [p.path for p in ps] == ["networks.lan0.dhcp.range"]


@pytest.mark.parametrize("rng", [["192.168.223.1", "192.168.223.50"], ["192.168.223.1", "192.168.223.1"]])
def test_range_starting_at_gateway(rng):
    ps = problems(nat(dhcp={"range": rng}))
    assert "networks.lan0.dhcp.range" in [p.path for p in ps]
    assert any("192.168.223.1" in p.message for p in ps)


def test_range_spanning_an_explicit_gateway():
    ps = problems(nat(address="192.168.223.150", dhcp={"range": ["192.168.223.100", "192.168.223.199"]}))
    assert [p.path for p in ps] == ["networks.lan0.dhcp.range"]
    assert "192.168.223.150" in ps[0].message


def test_range_beside_the_gateway_is_fine():
    t = topo(nat(address="192.168.223.150", dhcp={"range": ["192.168.223.151", "192.168.223.199"]}))
    assert [str(a) for a in dhcp_range(t, "lan0")] == ["192.168.223.151", "192.168.223.199"]


def test_isolated_range_including_service_address():
    assert "networks.lab.dhcp.range" in paths({"lab": {"mode": "isolated", "subnet": "10.77.0.0/24", "dhcp": {"range": ["10.77.0.1", "10.77.0.9"]}}})


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.223.1"])
def test_reservation_outside_subnet_or_on_gateway(address):
    ps = paths(nat(dhcp={"hosts": [{"mac": "52:54:00:00:00:01", "address": address}]}))
    assert ps == ["networks.lan0.dhcp.hosts.0.address"]


def test_duplicate_reservation_macs():
    ps = paths(nat(dhcp={"hosts": [
        {"mac": "52:54:00:00:00:01", "address": "192.168.223.50"},
        {"mac": "52:54:00:00:00:02", "address": "192.168.223.51"},
        {"mac": "52:54:00:00:00:01", "address": "192.168.223.52"},
    ]}))
    assert ps == ["networks.lan0.dhcp.hosts.2.mac"]


def test_duplicate_reservation_macs_differing_in_case():
    ps = paths(nat(dhcp={"hosts": [
        {"mac": "52:54:00:00:00:0a", "address": "192.168.223.50"},
        {"mac": "52:54:00:00:00:0A", "address": "192.168.223.51"},
    ]}))
    assert ps == ["networks.lan0.dhcp.hosts.1.mac"]


def test_route_via_outside_subnet():
    assert paths(nat(dhcp={"routes": [{"to": "10.20.0.0/16", "via": "10.0.0.1"}]})) == ["networks.lan0.dhcp.routes.0.via"]


@pytest.mark.parametrize("lease", ["60", "1", "119"])
def test_lease_shorter_than_two_minutes(lease):
    ps = problems(nat(dhcp={"lease": lease}))
    assert [p.path for p in ps] == ["networks.lan0.dhcp.lease"]
    assert "120" in ps[0].message


@pytest.mark.parametrize("lease", ["120", "2m", "45m", "12h", "1d", "infinite"])
def test_valid_leases(lease):
    assert topo(nat(dhcp={"lease": lease})).networks["lan0"].dhcp.lease == lease


@pytest.mark.parametrize("lease", ["0", "1w", "1.5h", "-1h", "forever", ""])
def test_malformed_leases(lease):
    assert paths(nat(dhcp={"lease": lease})) == ["networks.lan0.dhcp.lease"]


def test_true_shorthands_give_defaults():
    net = topo(nat(dhcp=True, dns=True)).networks["lan0"]
    assert net.dhcp is not None and net.dns is not None
    assert (net.dhcp.range, net.dhcp.lease, net.dhcp.hosts, net.dhcp.routes, net.dhcp.mtu) == (None, "1h", [], [], None)
    assert (net.dns.domain, net.dns.upstream, net.dns.records) == ("vnet.internal", None, {})


def test_false_shorthands_mean_off():
    net = topo(nat(dhcp=False, dns=False)).networks["lan0"]
    assert net.dhcp is None and net.dns is None


@pytest.mark.parametrize("domain", ["Lab.Test", "-bad.test", "bad-.test", "a..b", "under_score.test", "sp ace.test", "x" * 64 + ".test", ""])
def test_bad_domain(domain):
    assert paths(nat(dns={"domain": domain})) == ["networks.lan0.dns.domain"]


@pytest.mark.parametrize("domain", ["lab.test", "a", "x-1.example.internal"])
def test_good_domain(domain):
    assert topo(nat(dns={"domain": domain})).networks["lan0"].dns.domain == domain


def test_bad_upstream_and_record():
    ps = paths(nat(dns={"upstream": ["dns.example"], "records": {"Bad_Name": "192.168.223.5"}}))
    assert "networks.lan0.dns.upstream.0" in ps
    assert any(p.startswith("networks.lan0.dns.records") for p in ps)


# --- validation of VMs --------------------------------------------------------------------------

NIC = [{"network": "lan0"}]


@pytest.mark.parametrize(
    "vm",
    [
        {"nics": NIC},  # nothing to boot
        {"image": "tiny", "kernel": "/boot/vmlinuz", "nics": NIC},
        {"image": "tiny", "disk": "/var/a.qcow2", "nics": NIC},
    ],
)
def test_vm_needs_exactly_one_boot_source(vm):
    ps = problems(nat(dhcp=True), vms={"v": vm})
    assert [p.path for p in ps] == ["vms.v"]


@pytest.mark.parametrize(
    "vm",
    [
        {"image": "tiny"},
        {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd", "append": "console=ttyS0"},
        {"disk": "/var/a.qcow2"},
        {"kernel": "/boot/vmlinuz", "disk": "/var/a.raw"},
    ],
)
def test_vm_boot_sources_accepted(vm):
    t = topo(nat(dhcp=True), vms={"v": {**vm, "nics": NIC}})
    assert "v" in t.vms


def test_vm_initrd_without_kernel():
    assert "vms.v.kernel" in paths(nat(), vms={"v": {"disk": "/a.raw", "initrd": "/i", "nics": NIC}})


def test_vm_without_nics():
    assert paths(nat(), vms={"v": {"image": "tiny"}}) == ["vms.v.nics"]


def test_vm_nic_on_unknown_network():
    ps = problems(nat(), vms={"v": {"image": "tiny", "nics": [{"network": "lan0"}, {"network": "wan9"}]}})
    assert [p.path for p in ps] == ["vms.v.nics.1.network"]
    assert "wan9" in ps[0].message


def test_vm_nic_address_without_dhcp():
    ps = paths(nat(dns=True), vms={"v": {"image": "tiny", "nics": [{"network": "lan0", "address": "192.168.223.20"}]}})
    assert ps == ["vms.v.nics.0.address"]


@pytest.mark.parametrize("address", ["192.168.223.1", "10.0.0.20"])
def test_vm_nic_address_on_gateway_or_outside(address):
    ps = paths(nat(dhcp=True), vms={"v": {"image": "tiny", "nics": [{"network": "lan0", "address": address}]}})
    assert ps == ["vms.v.nics.0.address"]


def test_vm_nic_address_taken_by_endpoint():
    ps = paths(
        nat(dhcp=True),
        {"c1": {"kind": "netns", "network": "lan0", "address": "192.168.223.10/24"}},
        {"v": {"image": "tiny", "nics": [{"network": "lan0", "address": "192.168.223.10"}]}},
    )
    assert ps == ["vms.v.nics.0.address"]


def test_vm_nic_mac_collides_with_endpoint_mac():
    ps = problems(
        nat(dhcp=True),
        {"c1": {"kind": "netns", "network": "lan0", "mac": "52:54:00:12:34:56"}},
        {"v": {"image": "tiny", "nics": [{"network": "lan0", "mac": "52:54:00:12:34:56"}]}},
    )
    assert [p.path for p in ps] == ["vms.v.nics.0.mac"]
    assert "c1" in ps[0].message


def test_vm_nic_mac_collides_with_derived_endpoint_mac():
    derived = names.mac("lab", "t1")
    ps = paths(nat(), {"t1": {"kind": "tap", "network": "lan0"}}, {"v": {"image": "tiny", "nics": [{"network": "lan0", "mac": derived}]}})
    assert ps == ["vms.v.nics.0.mac"]


def test_two_vm_nics_with_the_same_mac():
    nic = [{"network": "lan0", "mac": "52:54:00:00:00:99"}]
    assert paths(nat(), vms={"a": {"image": "tiny", "nics": nic}, "b": {"image": "tiny", "nics": nic}}) == ["vms.b.nics.0.mac"]


def test_vm_tap_name_clash_with_endpoint_tap():
    # vt-lab-web0 is both the tap of endpoint web0 and of VM web's first NIC
    ps = paths(nat(), {"web0": {"kind": "tap", "network": "lan0"}}, {"web": {"image": "tiny", "nics": NIC}})
    assert ps == ["vms.web.nics.0.ifname"]


def test_every_problem_reported_in_one_run():
    ps = paths(
        {"lan0": {"mode": "nat", "subnet": "192.168.223.0/24", "dhcp": {"lease": "60", "range": ["192.168.223.9", "192.168.223.2"]}},
         "br0": {"mode": "bridged", "uplink": "enp3s0", "dns": True}},
        vms={"v": {"nics": [{"network": "nope"}]}},
    )
    assert "networks.lan0.dhcp.lease" in ps  # a model problem...
    # ...stops before relations are checked, so only model-level problems appear here
    ps = paths(
        {"lan0": {"mode": "nat", "subnet": "192.168.223.0/24", "dhcp": {"range": ["192.168.223.9", "192.168.223.2"]}},
         "br0": {"mode": "bridged", "uplink": "enp3s0", "dns": True}},
        vms={"v": {"nics": [{"network": "nope"}]}},
    )
    assert {"networks.lan0.dhcp.range", "networks.br0.dns", "vms.v", "vms.v.nics.0.network"} <= set(ps)


def test_examples_load():
    assert set(load(EXAMPLES / "guests.yaml").vms) == {"web", "db"}
    assert set(load(EXAMPLES / "isolated-guests.yaml").vms) == {"a", "b"}


# --- QEMU command lines -------------------------------------------------------------------------


def vm_topo(vm: dict | None = None, name: str = "lab", **networks) -> Topology:
    nets = nat(dhcp=True)
    nets.update(networks)
    return topo(nets, vms={"web": {"image": "tiny", "nics": NIC, **(vm or {})}}, name=name)


def test_nic_args_modern_syntax():
    t = vm_topo()
    tap, mac = names.vm_tap("lab", "web", 0), names.mac("lab", "web", "0")
    assert qemuargs.nic_args(t, "web", vhost=False) == [
        "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
    ]


def test_vhost_only_when_available():
    t = vm_topo()
    on = qemuargs.nic_args(t, "web", vhost=True)
    assert on[1].endswith(",vhost=on")
    assert not any("vhost" in a for a in qemuargs.nic_args(t, "web", vhost=False))


@pytest.mark.parametrize("cpus, q, vectors", [(2, 2, 6), (4, 4, 10), (8, 8, 18), (16, 8, 18)])
def test_multiqueue(cpus, q, vectors):
    t = vm_topo({"cpus": cpus})
    netdev, device = qemuargs.nic_args(t, "web", vhost=True)[1::2]
    assert f",queues={q}" in netdev
    assert device.endswith(f",mq=on,vectors={vectors}")
    assert netdev.count("queues=") == 1


def test_single_cpu_has_no_multiqueue():
    args = " ".join(qemuargs.nic_args(vm_topo({"cpus": 1}), "web", vhost=True))
    assert "queues" not in args and "mq=" not in args and "vectors" not in args


def test_several_nics_are_paired_in_order():
    t = vm_topo({"nics": [{"network": "lan0"}, {"network": "lan0", "mac": "52:54:00:AB:CD:EF", "ifname": "mytap"}]})
    args = qemuargs.nic_args(t, "web", vhost=False)
    assert args[0::2] == ["-netdev", "-device", "-netdev", "-device"]
    assert args[1].startswith("tap,id=net0,") and args[3].startswith("virtio-net-pci,netdev=net0,")
    assert args[5] == "tap,id=net1,ifname=mytap,script=no,downscript=no"
    assert args[7] == "virtio-net-pci,netdev=net1,mac=52:54:00:ab:cd:ef"


def test_macs_stable_unique_and_qemu_prefixed():
    def all_macs(t: Topology) -> list[str]:
        return [qemuargs.nic_mac(t, v, i) for v in t.vms for i in range(len(t.vms[v].nics))]

    vms = {f"vm{k}": {"image": "tiny", "nics": NIC * 3} for k in range(4)}
    a, b = topo(nat(), vms=vms), topo(nat(), vms=vms)
    macs = all_macs(a)
    assert macs == all_macs(b)  # same topology, same MACs
    assert len(set(macs)) == len(macs) == 12
    assert all(MAC_RE.fullmatch(m) for m in macs), macs
    other = all_macs(topo(nat(), vms=vms, name="other"))
    assert not set(macs) & set(other)  # another topology gets other MACs


def test_argv_tcg_without_kvm():
    argv = qemuargs.argv(vm_topo(), "web", STATE, kvm=False, vhost=False, tiny=("/k", "/i"))
    assert argv[argv.index("--") + 1] == "qemu-system-x86_64"  # after setpriv's switch to QEMU's user
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-cpu") + 1] == "max"
    assert argv.count("-accel") == 1


def test_argv_kvm_when_available():
    argv = qemuargs.argv(vm_topo(), "web", STATE, kvm=True, vhost=False, tiny=("/k", "/i"))
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert argv[argv.index("-cpu") + 1] == "host"


def test_explicit_accel_wins():
    tcg = qemuargs.argv(vm_topo({"accel": "tcg"}), "web", STATE, kvm=True, vhost=False, tiny=("/k", "/i"))
    assert tcg[tcg.index("-accel") + 1] == "tcg"
    kvm = qemuargs.argv(vm_topo({"accel": "kvm"}), "web", STATE, kvm=False, vhost=False, tiny=("/k", "/i"))
    assert kvm[kvm.index("-accel") + 1] == "kvm"


def test_tiny_image_boots_the_given_kernel_and_initrd():
    # vnet built (or chose) them: it opens them and QEMU reads them through descriptors
    argv = qemuargs.argv(vm_topo(), "web", STATE, kvm=False, vhost=False, tiny=("/k", "/i"))
    assert argv[argv.index("-kernel") + 1] == f"/dev/fd/{qemuargs.FD_KERNEL}"
    assert argv[argv.index("-initrd") + 1] == f"/dev/fd/{qemuargs.FD_INITRD}"
    assert qemuargs.inputs(vm_topo(), "web", ("/k", "/i")) == {str(qemuargs.FD_KERNEL): "/k", str(qemuargs.FD_INITRD): "/i"}
    assert argv[argv.index("-append") + 1] == qemuargs.TINY_APPEND
    assert "-drive" not in argv


def test_tiny_image_needs_a_built_guest():
    with pytest.raises(ValueError):
        qemuargs.argv(vm_topo(), "web", STATE, kvm=False, vhost=False, tiny=None)


def test_kernel_boot():
    t = vm_topo({"image": None, "kernel": "/boot/vmlinuz", "initrd": "/boot/initrd.img", "append": "console=ttyS0 root=/dev/vda"})
    argv = qemuargs.argv(t, "web", STATE, kvm=False, vhost=False)
    assert argv[argv.index("-kernel") + 1] == "/boot/vmlinuz"
    assert argv[argv.index("-initrd") + 1] == "/boot/initrd.img"
    assert argv[argv.index("-append") + 1] == "console=ttyS0 root=/dev/vda"


def test_state_files_are_passed_by_descriptor_and_the_pid_record_is_named():
    argv = qemuargs.argv(vm_topo({"memory": "512M", "cpus": 2}), "web", STATE, kvm=False, vhost=False, tiny=("/k", "/i"))
    assert "-daemonize" not in argv and "-pidfile" not in argv  # vnet starts QEMU and records its pid itself
    assert f"secret,id=vnet-pidfile,data={STATE / 'vm-web.pid'}" in argv
    assert argv[argv.index("-m") + 1] == "512M"
    assert argv[argv.index("-smp") + 1] == "2"
    assert f"socket,id=console,fd={qemuargs.FD_SERIAL},server=on,wait=off,logfile=/dev/fd/{qemuargs.FD_CONSOLE}" in argv
    assert f"socket,id=qmp,fd={qemuargs.FD_QMP},server=on,wait=off" in argv
    assert f"socket,id=agent,fd={qemuargs.FD_AGENT},server=on,wait=off" in argv
    assert argv[argv.index("-name") + 1] == "lab-web"
    assert "-net" not in argv  # never the deprecated syntax
    assert "-nodefaults" in argv


def test_argv_contains_the_nic_args():
    t = vm_topo({"cpus": 4})
    argv = qemuargs.argv(t, "web", STATE, kvm=False, vhost=True, tiny=("/k", "/i"))
    nic = qemuargs.nic_args(t, "web", vhost=True)
    i = argv.index("-netdev")
    assert argv[i:i + len(nic)] == nic


@pytest.mark.parametrize(
    "disk, drive",
    [
        ("/imgs/a,b.qcow2", "file=/imgs/a,,b.qcow2,if=virtio,format=qcow2"),
        ("/imgs/plain.img", "file=/imgs/plain.img,if=virtio,format=raw"),
        ("/i,,x,.raw", "file=/i,,,,x,,.raw,if=virtio,format=raw"),
    ],
)
def test_disk_drive_escapes_commas(disk, drive):
    t = vm_topo({"image": None, "disk": disk})
    argv = qemuargs.argv(t, "web", STATE, kvm=False, vhost=False)
    assert argv[argv.index("-drive") + 1] == drive
    assert "-kernel" not in argv


def test_desired_tap_per_nic():
    t = topo(
        {**nat(dhcp=True, mtu=1400), "lan1": {"mode": "isolated"}},
        vms={"web": {"image": "tiny", "nics": [{"network": "lan0"}, {"network": "lan1", "ifname": "webtap1"}]}},
    )
    rs = by_id(desired(t, FACTS))
    tap0 = rs[f"tap:{names.vm_tap('lab', 'web', 0)}"]
    tap1 = rs["tap:webtap1"]
    assert tap0.get("master") == names.bridge("lab", "lan0")
    assert tap1.get("master") == names.bridge("lab", "lan1")
    assert tap0.get("mode") == "tap"
    assert tap0.get("mac") == names.tap_mac(qemuargs.nic_mac(t, "web", 0))
    assert tap0.get("mac").startswith("fe:") and tap0.get("mac") != qemuargs.nic_mac(t, "web", 0)
    assert tap0.get("mtu") == 1400 and tap1.get("mtu") is None
    assert tap0.get("multi_queue") is None and tap1.get("multi_queue") is None
    assert names.parse_mark(tap0.get("mark")) == ("lab", "tap", "web.0", ())


@pytest.mark.parametrize("cpus, mq", [(1, None), (2, True), (4, True)])
def test_desired_multi_queue_only_with_several_cpus(cpus, mq):
    t = vm_topo({"cpus": cpus})
    taps = [r for r in desired(t, FACTS) if r.kind == "tap"]
    assert len(taps) == 1
    assert taps[0].get("multi_queue") is mq


def test_desired_vm_resource():
    t = vm_topo()
    rs = by_id(desired(t, FACTS))
    vm = rs["vm:web"]
    argv = qemuargs.argv(t, "web", STATE, kvm=False, vhost=False, tiny=("/k", "/i"))
    assert list(vm.get("argv")) == argv
    assert vm.get("digest") == argv_digest(argv, qemuargs.inputs(t, "web", ("/k", "/i")))


def test_desired_passes_kvm_and_vhost_facts(monkeypatch):
    facts = HostFacts(default_uplink="eth0", state=STATE, tiny_guest=("/k", "/i"), kvm=True, vhost_net=True)
    # vhost only where QEMU's user may open /dev/vhost-net (a host fact, stood in for here)
    monkeypatch.setattr(qemuargs, "device_usable", lambda path, user: path == "/dev/vhost-net")
    argv = list(by_id(desired(vm_topo(), facts))["vm:web"].get("argv"))
    assert argv[argv.index("-accel") + 1] == "kvm"
    assert any(a.endswith(",vhost=on") for a in argv)
    monkeypatch.setattr(qemuargs, "device_usable", lambda path, user: False)
    argv = list(by_id(desired(vm_topo(), facts))["vm:web"].get("argv"))
    assert not any("vhost=on" in a for a in argv)


def test_vm_digest_follows_the_argv():
    def digest(vm: dict) -> str:
        return by_id(desired(vm_topo(vm), FACTS))["vm:web"].get("digest")

    base = digest({"memory": "256M"})
    assert base == digest({"memory": "256M"})
    assert base != digest({"memory": "512M"})
    assert base != digest({"cpus": 2})


def test_vm_digest_ignores_unrelated_changes():
    a = by_id(desired(vm_topo(), FACTS))["vm:web"]
    b = by_id(desired(vm_topo(lan9={"mode": "isolated"}), FACTS))["vm:web"]
    assert a == b


def test_vms_start_after_their_taps_and_services():
    from vnet.kinds import rank

    assert rank("vm") > rank("service") > rank("tap")


# --- the tiny guest's initramfs -----------------------------------------------------------------


def parse_newc(blob: bytes) -> list[dict]:
    """Parse a newc cpio archive strictly: magic, field widths, 4-byte padding (with zeros)."""
    out, pos = [], 0
    while True:
        assert pos % 4 == 0, f"header at {pos} not aligned"
        header = blob[pos:pos + 110]
        assert len(header) == 110, "truncated header"
        assert header[:6] == b"070701", header[:6]
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, check = fields
        name_end = pos + 110 + namesize
        raw_name = blob[pos + 110:name_end]
        assert raw_name.endswith(b"\0") and b"\0" not in raw_name[:-1]
        name = raw_name[:-1].decode()
        data_start = name_end + (-(name_end) % 4)
        assert blob[name_end:data_start] == b"\0" * (data_start - name_end)
        assert data_start % 4 == 0
        data = blob[data_start:data_start + size]
        assert len(data) == size, "truncated data"
        end = data_start + size
        pad_end = end + (-end % 4)
        assert blob[end:pad_end] == b"\0" * (pad_end - end)
        out.append({"ino": ino, "mode": mode, "uid": uid, "gid": gid, "nlink": nlink, "size": size, "name": name, "data": data, "check": check})
        pos = pad_end
        if name == "TRAILER!!!":
            assert pos == len(blob), "bytes after the trailer"
            return out


ENTRIES = [
    ("bin", stat.S_IFDIR | 0o755, b""),
    ("bin/busybox", stat.S_IFREG | 0o755, b"\x7fELF" + bytes(range(256)) * 3 + b"x"),
    ("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
    ("init", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
    ("ab", stat.S_IFREG | 0o644, b""),  # empty file
    ("abc", stat.S_IFREG | 0o600, b"1"),
    ("lib/modules/virtio_net.ko", stat.S_IFREG | 0o644, b"\0\1\2"),
    ("é.txt", stat.S_IFREG | 0o644, b"unicode name"),
]


def test_cpio_round_trip():
    blob = _cpio(ENTRIES)
    assert len(blob) % 4 == 0
    parsed = parse_newc(blob)
    assert [e["name"] for e in parsed] == [n for n, _, _ in ENTRIES] + ["TRAILER!!!"]
    for (name, mode, data), e in zip(ENTRIES, parsed):
        assert (e["mode"], e["data"], e["size"]) == (mode, data, len(data)), name
        assert (e["uid"], e["gid"], e["check"]) == (0, 0, 0)
        assert e["nlink"] >= 1
    inos = [e["ino"] for e in parsed]
    assert len(set(inos)) == len(inos) and 0 not in inos


def test_cpio_empty_archive_is_just_the_trailer():
    parsed = parse_newc(_cpio([]))
    assert [e["name"] for e in parsed] == ["TRAILER!!!"]


@pytest.mark.parametrize("namelen", range(1, 9))
def test_cpio_alignment_for_every_name_length(namelen):
    name = "n" * namelen
    for size in range(5):
        blob = _cpio([(name, stat.S_IFREG | 0o644, b"d" * size)])
        parsed = parse_newc(blob)
        assert parsed[0]["name"] == name and parsed[0]["data"] == b"d" * size


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_cpio_tool_reads_the_archive(tmp_path):
    blob = _cpio(ENTRIES)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=blob, capture_output=True, timeout=10, check=True)
    assert listing.stdout.decode().splitlines() == [n for n, _, _ in ENTRIES]
    verbose = subprocess.run(["cpio", "-tv", "--quiet"], input=blob, capture_output=True, timeout=10, check=True).stdout.decode()
    lines = verbose.splitlines()
    assert lines[0].startswith("drwxr-xr-x") and lines[0].endswith(" bin")
    assert lines[1].startswith("-rwxr-xr-x")
    assert lines[2].startswith("lrwxrwxrwx") and lines[2].endswith("bin/sh -> busybox")
    assert lines[5].startswith("-rw-------")
    out = subprocess.run(["cpio", "-i", "--to-stdout", "--quiet", "init"], input=blob, capture_output=True, timeout=10, check=True)
    assert out.stdout == b"#!/bin/sh\necho hi\n"
    out = subprocess.run(["cpio", "-i", "--to-stdout", "--quiet", "bin/busybox"], input=blob, capture_output=True, timeout=10, check=True)
    assert out.stdout == ENTRIES[1][2]


# --- the guest agent's protocol (a fake agent on a unix socket) ----------------------------------


def fake_agent(path: str, reply) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                req = b""
                while not req.endswith(b"\n"):
                    req += conn.recv(4096)
                ident, b64 = req.decode().split()
                for chunk in reply(ident, base64.b64decode(b64).decode()):
                    conn.sendall(chunk)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    return th


def test_agent_run_parses_reply():
    d = tempfile.mkdtemp(prefix="vnt", dir="/tmp")
    path = f"{d}/a.sock"
    seen = {}

    def reply(ident, script):
        seen["script"] = script
        yield b"VNET-END stale 0\nnoise\n"
        yield f"VNET-BEGIN {ident}\nline1\r\n".encode()
        yield f"line2\nVNET-END {ident} 3".encode()  # split mid-marker: the client waits for '\n'
        yield b"\n"

    th = fake_agent(path, reply)
    rc, out = Agent(Path(path)).run("echo 'a b' | cat\n", timeout=5)
    th.join(5)
    shutil.rmtree(d)
    assert seen["script"] == "echo 'a b' | cat\n"
    assert (rc, out) == (3, "line1\nline2")


def test_agent_connection_closed():
    d = tempfile.mkdtemp(prefix="vnt", dir="/tmp")
    path = f"{d}/a.sock"
    th = fake_agent(path, lambda ident, script: [b"VNET-BEGIN x\n"])
    with pytest.raises(ConnectionError):
        Agent(Path(path)).run("true", timeout=5)
    th.join(5)
    shutil.rmtree(d)


def test_agent_reply_framing():
    ident = "0123abcd"
    whole = f"VNET-ACK {ident}\nVNET-BEGIN {ident}\nout\nVNET-END {ident} 2\n".encode()
    assert taken(whole, ident) and reply_of(whole, ident) == (2, "out")
    assert reply_of(whole[:-1], ident) is None  # rc not ended yet: more may come
    assert not taken(whole, "ffffffff") and reply_of(whole, "ffffffff") is None  # another request's
    # a stale reply first, then this one sent twice (a request sent again is answered again)
    stale = b"VNET-BEGIN 99999999\nold\nVNET-END 99999999 0\n"
    assert reply_of(stale + whole + whole, ident) == (2, "out")
    assert reply_of(f"VNET-BEGIN {ident}\n\nVNET-END {ident} 0\n".encode(), ident) == (0, "")
    assert not taken(f"VNET-BAD {ident}\n".encode(), ident)


def test_agent_sends_a_lost_request_again_with_the_same_id(monkeypatch):
    """The first line is lost (as a guest whose read was interrupted lost it); the client sends it
    again until acknowledged, the same line, so the agent can tell it ran it already."""
    monkeypatch.setattr(guest, "RESEND_AFTER", 0.05)
    d = tempfile.mkdtemp(prefix="vnt", dir="/tmp")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(f"{d}/a.sock")
    srv.listen(1)
    lines: list[bytes] = []

    def serve() -> None:
        with srv, srv.accept()[0] as conn:
            buf = b""
            while len(lines) < 3:  # two lost, the third answered
                buf += conn.recv(4096)
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    lines.append(line)
            ident = lines[-1].split()[0].decode()
            conn.sendall(f"VNET-ACK {ident}\nVNET-BEGIN {ident}\nran\nVNET-END {ident} 0\n".encode())

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    agent = Agent(Path(f"{d}/a.sock"))
    assert agent.run("echo ran", timeout=5) == (0, "ran")
    th.join(5)
    shutil.rmtree(d)
    assert len(set(lines)) == 1 and agent.resent == 2


def test_agent_does_not_send_again_once_acknowledged(monkeypatch):
    """A request the agent took may run long: it is not sent again while it runs (control of the above)."""
    monkeypatch.setattr(guest, "RESEND_AFTER", 0.05)
    d = tempfile.mkdtemp(prefix="vnt", dir="/tmp")
    path = f"{d}/a.sock"

    def reply(ident, script):
        yield f"VNET-ACK {ident}\n".encode()
        time.sleep(0.5)  # ten resend intervals
        yield f"VNET-BEGIN {ident}\ndone\nVNET-END {ident} 0\n".encode()

    th = fake_agent(path, reply)
    agent = Agent(Path(path))
    assert agent.run("sleep 1", timeout=5) == (0, "done")
    th.join(5)
    shutil.rmtree(d)
    assert agent.resent == 0


def test_agent_wait_ready_times_out_without_a_socket(tmp_path):
    with pytest.raises(TimeoutError):
        Agent(tmp_path / "missing.sock").wait_ready(timeout=0.1)


# --- bugs found in review, fixed: each test pins the fix ------------------------------------------


@pytest.mark.parametrize("lease", ["60s", "1m", "119s"])
def test_bug_short_lease_with_unit_is_accepted(lease):
    assert paths(nat(dhcp={"lease": lease})) == ["networks.lan0.dhcp.lease"]


@pytest.mark.parametrize("address", ["192.168.223.0", "192.168.223.255"])
def test_bug_vm_nic_address_on_network_or_broadcast(address):
    assert paths(nat(dhcp=True), vms={"v": {"image": "tiny", "nics": [{"network": "lan0", "address": address}]}}) == ["vms.v.nics.0.address"]


@pytest.mark.parametrize("address", ["192.168.223.0", "192.168.223.255"])
def test_bug_reservation_on_network_or_broadcast(address):
    assert paths(nat(dhcp={"hosts": [{"mac": "52:54:00:00:00:01", "address": address}]})) == ["networks.lan0.dhcp.hosts.0.address"]


def test_bug_endpoint_named_like_the_service_namespace():
    with pytest.raises(SpecError) as exc:
        topo({"lab": {"mode": "isolated", "subnet": "10.77.0.0/24", "dhcp": True}}, {"svc-lab": {"kind": "netns", "network": "lab"}}, name="iso")
    assert [p.path for p in exc.value.problems] == ["endpoints.svc-lab"]


def test_bug_default_range_contains_a_mid_subnet_gateway():
    t = topo(nat(address="192.168.223.100", dhcp=True))
    first, last = dhcp_range(t, "lan0")
    assert not first <= ipaddress.IPv4Address("192.168.223.100") <= last


def test_bug_tap_macs_collide_when_guest_macs_differ_in_first_byte():
    vms = {
        "a": {"image": "tiny", "nics": [{"network": "lan0", "mac": "52:54:00:11:22:33"}]},
        "b": {"image": "tiny", "nics": [{"network": "lan0", "mac": "56:54:00:11:22:33"}]},
    }
    assert paths(nat(dhcp=True), vms=vms) == ["vms.b.nics.0.mac"]


def test_vm_and_endpoint_with_the_same_name_are_rejected():
    ps = paths(nat(dhcp=True), {"web": {"kind": "tap", "network": "lan0"}}, {"web": {"image": "tiny", "nics": NIC}})
    assert "vms.web" in ps


def test_dns_names_of_second_nics_must_not_collide():
    vms = {
        "web": {"image": "tiny", "nics": [{"network": "lan0"}, {"network": "lan0"}]},
        "web-1": {"image": "tiny", "nics": [{"network": "lan0"}]},
    }
    assert paths(nat(dhcp=True), vms=vms) == ["vms.web-1.nics.0"]
