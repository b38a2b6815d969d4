"""Making many veth pairs at once (drivers/netlink.create_veths): the creations go a window of
requests at a time, and a pair refused in a later window takes back every pair the call made —
never the link that holds the name."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from vnet.drivers import netlink, rtnl
from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespaces
from vnet.drivers.rtnl import RtnlError
from vnet.resources import make

PAIRS = rtnl.IN_FLIGHT + 6  # more than one window


@pytest.fixture
def spaces():
    """A target namespace with a bridge, and a namespace per pair for the peers."""
    tag = secrets.token_hex(3)
    host, peers = f"vt-vh-{tag}", [f"vt-vp-{tag}-{i}" for i in range(PAIRS)]
    made: list[str] = []
    try:
        for name in (host, *peers):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
        subprocess.run(["ip", "-n", host, "link", "add", "vtbr", "up", "type", "bridge"], check=True)
        yield host, peers
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], check=False)


def _pairs(peers: list[str]) -> list:
    return [make("veth", f"vtv{i}", peer_ns=ns, peer_name="eth0", master="vtbr", mac=f"52:54:00:aa:00:{i:02x}",
                 peer_mac=f"52:54:00:bb:00:{i:02x}", mark=f"t:veth:{i}", peer_mark=f"t:peer:{i}", mtu=None, hairpin=i == 0)
            for i, ns in enumerate(peers)]


def _links(ns: str | None) -> dict[str, rtnl.Link]:
    nl = nsmod.Namespace(ns).nl
    try:
        return {li.ifname: li for li in nl.links()}
    finally:
        nl.close()


def test_every_pair_is_made_marked_and_its_peer_up(spaces):
    host, peers = spaces
    with Namespaces(host) as nss:
        netlink.create_veths(nss, _pairs(peers))
    links = _links(host)
    for i in range(PAIRS):
        li = links[f"vtv{i}"]
        assert li.alias == f"t:veth:{i}" and li.master == links["vtbr"].index and li.mac == f"52:54:00:aa:00:{i:02x}"
    for i, ns in enumerate(peers):
        peer = _links(ns)["eth0"]
        assert peer.alias == f"t:peer:{i}" and peer.flags & 1 and peer.mac == f"52:54:00:bb:00:{i:02x}"


def test_a_name_taken_in_a_later_window_leaves_none_and_the_holder_alone(spaces):
    host, peers = spaces
    taken = f"vtv{PAIRS - 2}"  # in the second window: the first window's pairs are made by then
    subprocess.run(["ip", "-n", host, "link", "add", taken, "type", "veth", "peer", "name", "theirs"], check=True)
    subprocess.run(["ip", "-n", host, "link", "set", taken, "alias", "someone else's"], check=True)
    with Namespaces(host) as nss, pytest.raises(RtnlError) as refused:
        netlink.create_veths(nss, _pairs(peers))
    assert "exists" in str(refused.value).lower()
    links = _links(host)
    assert links[taken].alias == "someone else's" and "theirs" in links  # the holder untouched
    assert not [name for name in links if name.startswith("vtv") and name != taken]  # ours all gone
    assert not [ns for ns in peers if "eth0" in _links(ns)]  # a veth takes its peer along
