"""importer.py: host facts → topology text (pure), and the text validates."""

from __future__ import annotations

from vnet import importer as im


def _host(**kw) -> im.Host:
    h = im.Host(
        links={
            "br0": im.Link("br0", "bridge", mac="02:00:00:00:00:01"),
            "tap0": im.Link("tap0", "tun", master="br0", tun_mode="tap", owner=65534),
            "veth-c1": im.Link("veth-c1", "veth", master="br0", peer_ns="c1", peer="eth0"),
            "eth0": im.Link("eth0", "veth"),
        },
        addrs=[im.Addr("eth0", "192.0.2.2/24")],
        routes=[im.Route("default", "eth0", "192.0.2.1")],
        namespaces={"c1": im.Netns("c1", {"lo": im.Link("lo", None), "eth0": im.Link("eth0", "veth", mac="52:54:00:00:00:11")},
                                   [im.Addr("eth0", "10.1.0.11/24")], [im.Route("default", "eth0", "10.1.0.1")])},
        users={65534: "nobody"},
    )
    for k, v in kw.items():
        setattr(h, k, v)
    return h



def test_modes_from_what_is_around_the_bridge():
    isolated = im.analyse(_host())
    assert isolated.topology["networks"]["br0"]["mode"] == "isolated"
    host = im.analyse(_host(addrs=[im.Addr("eth0", "192.0.2.2/24"), im.Addr("br0", "10.1.0.1/24")]))
    assert host.topology["networks"]["br0"] | {} == {"bridge": "br0", "mode": "host", "subnet": "10.1.0.0/24", "mac": "02:00:00:00:00:01"}
    nat = im.analyse(_host(addrs=[im.Addr("br0", "10.1.0.1/24")],
                           iptables="*nat\n-A POSTROUTING -s 10.1.0.0/24 ! -d 10.1.0.0/24 -j MASQUERADE\nCOMMIT\n"))
    net = nat.topology["networks"]["br0"]
    assert (net["mode"], net["uplink"]) == ("nat", "eth0")
    assert [r.action for r in nat.foreign.rules] == ["masquerade"]
    links = dict(_host().links, eth1=im.Link("eth1", None, master="br0"))
    bridged = im.analyse(_host(links=links))
    assert bridged.topology["networks"]["br0"]["mode"] == "bridged" and bridged.topology["networks"]["br0"]["uplink"] == "eth1"


def test_endpoints_keep_their_names():
    imp = im.analyse(_host(addrs=[im.Addr("br0", "10.1.0.1/24")]))
    eps = imp.topology["endpoints"]
    assert eps["tap0"] == {"kind": "tap", "network": "br0", "ifname": "tap0", "owner": "nobody", "spoofing": "allow"}
    assert eps["c1"] == {"kind": "netns", "network": "br0", "netns": "c1", "own_netns": True, "host_ifname": "veth-c1",
                         "mac": "52:54:00:00:00:11", "address": "10.1.0.11/24"}


def test_rules_vnet_cannot_express_are_comments_and_not_replaced():
    text = "*nat\n-A POSTROUTING -s 10.1.0.0/24 -m mark --mark 1 -j MASQUERADE\n-A POSTROUTING -s 10.9.0.0/24 -j MASQUERADE\nCOMMIT\n"
    imp = im.analyse(_host(addrs=[im.Addr("br0", "10.1.0.1/24")], iptables=text))
    assert imp.topology["networks"]["br0"]["mode"] == "host"
    assert imp.foreign.rules == []
    out = imp.text()
    assert "# " in out and "10.9.0.0/24" in out and "cannot express" in out


def test_dnat_becomes_a_forward_and_nft_masquerade_counts():
    nft = {"nftables": [
        {"table": {"family": "ip", "name": "mynat", "handle": 1}},
        {"chain": {"family": "ip", "table": "mynat", "name": "post", "handle": 1}},
        {"rule": {"family": "ip", "table": "mynat", "chain": "post", "handle": 4, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.1.0.0", "len": 24}}}},
            {"masquerade": None}]}},
    ]}
    ipt = "*nat\n-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.11:80\nCOMMIT\n"
    imp = im.analyse(_host(addrs=[im.Addr("br0", "10.1.0.1/24")], nft=nft, iptables=ipt))
    net = imp.topology["networks"]["br0"]
    assert net["mode"] == "nat"
    assert net["forwards"] == [{"proto": "tcp", "port": 8080, "to": "10.1.0.11:80"}]
    assert {r.source for r in imp.foreign.rules} == {"nft", "iptables"}
    assert imp.foreign.nft_tables == {"ip mynat": {"chains": {"post": 1}, "sets": 0}}


def test_dnsmasq_on_the_bridge():
    d = im.Dnsmasq(42, ["dnsmasq", "--interface=br0", "--bind-interfaces", "--dhcp-range=10.1.0.100,10.1.0.150,12h",
                        "--dhcp-host=52:54:00:aa:bb:cc,10.1.0.50", "--dhcp-leasefile=/var/lib/misc/br0.leases", "--port=0"])
    imp = im.analyse(_host(addrs=[im.Addr("br0", "10.1.0.1/24")], dnsmasq=[d]))
    net = imp.topology["networks"]["br0"]
    assert net["dhcp"] == {"range": ["10.1.0.100", "10.1.0.150"], "lease": "12h", "hosts": [{"mac": "52:54:00:aa:bb:cc", "address": "10.1.0.50"}]}
    assert "dns" not in net
    assert imp.foreign.dnsmasq["br0"] is d and imp.foreign.leasefiles["br0"] == "/var/lib/misc/br0.leases"
    odd = im.Dnsmasq(43, ["dnsmasq", "--interface=br0", "--dhcp-script=/bin/x"])
    assert "dhcp-script" in im.analyse(_host(addrs=[im.Addr("br0", "10.1.0.1/24")], dnsmasq=[odd])).text()


def test_the_text_validates(tmp_path):
    from vnet import spec

    d = im.Dnsmasq(42, ["dnsmasq", "--interface=br0", "--dhcp-range=10.1.0.100,10.1.0.150,12h"])
    imp = im.analyse(_host(addrs=[im.Addr("br0", "10.1.0.1/24")], dnsmasq=[d],
                           iptables="*nat\n-A POSTROUTING -s 10.1.0.0/24 -o eth0 -j MASQUERADE\nCOMMIT\n"), name="guide")
    path = tmp_path / "t.yaml"
    path.write_text(imp.text())
    topo = spec.load(path)
    assert topo.networks["br0"].mode == "nat" and topo.endpoints["c1"].own_netns
