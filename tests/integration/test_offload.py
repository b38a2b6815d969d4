"""Flow offload on the real kernel: the question vnet asks it (a transaction checked and thrown
away), the offloading ruleset through nft's own check, and, where the kernel has nftables
flowtables, an established flow through a forward taking the fast path while `offload: false`
keeps another on the forward chain. Where the kernel has no flowtables (this one), the same test
holds vnet to the fallback: no flowtable in its ruleset, and the flow passes on the forward chain.
No test skips for it: CI fails on any skip."""

from __future__ import annotations

import errno
import re
import socket
import subprocess

import yaml

from vnet import api, sandbox, spec
from vnet.desired import desired
from vnet.drivers import rtnl
from vnet.drivers.ns import Namespace, Namespaces

from .conftest import EXAMPLES

HOST = sandbox.HOST_ADDR


def nft(ns: str, *args: str, text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=text, capture_output=True, text=True, timeout=30)


def ask_flowtables(ns: str) -> bool:
    n = Namespace(ns)
    try:
        return n.nft.flowtables()
    finally:
        n.close()


def test_the_probe_answers_as_nft_does_and_leaves_nothing(world):
    host = world.host
    before = nft(host, "list", "ruleset").stdout
    asked = ask_flowtables(host)
    assert nft(host, "list", "ruleset").stdout == before  # checked, then thrown away
    made = nft(host, "-f", "-", text="table inet vnet-test-ft {\n  flowtable f {\n    hook ingress priority 0\n    devices = { eth0 }\n  }\n}\n")
    try:
        assert asked == (made.returncode == 0), f"the probe said {asked}; nft said: {made.stderr.strip()}"
    finally:
        nft(host, "delete", "table", "inet", "vnet-test-ft")


def test_a_checked_transaction_answers_each_request_and_commits_none(world):
    host = world.host
    n = Namespace(host)

    def new_table(name: str, flags: int) -> tuple[int, int, bytes]:
        return rtnl.NFT_SUBSYS | rtnl.NFT_MSG_NEWTABLE, flags, rtnl._NFGEN.pack(rtnl.NFPROTO_INET, 0, 0) + rtnl.a_str(rtnl.NFTA_TABLE_NAME, name)

    assert nft(host, "add", "table", "inet", "vnet-test-keep").returncode == 0
    try:
        fresh, again = n.nft.validates([new_table("vnet-test-new", rtnl.F_CREATE), new_table("vnet-test-keep", rtnl.F_CREATE | rtnl.F_EXCL)])
        assert fresh is None  # it would be made …
        assert again is not None and again.code == errno.EEXIST  # … this one exists already
        tables = [name for _, name, _ in n.nft.tables()]
        assert "vnet-test-new" not in tables and "vnet-test-keep" in tables  # nothing committed, nothing lost
    finally:
        n.close()
        nft(host, "delete", "table", "inet", "vnet-test-keep")


def _offloading_ruleset(world, topo) -> str:
    """The ruleset vnet would load here if the kernel had flowtables, under another table name."""
    eng = api.engine(topo.name, world.host, world.state)
    with Namespaces(world.host) as nss:
        obs = eng.observe(nss, topo)
        facts = eng.facts(topo, obs, nss).replace(flowtables=True)
    (r,) = [r for r in desired(topo, facts) if r.kind == "ruleset"]
    return r.get("text").replace(f"vnet-{topo.name} {{", "vnet-test-check {")


def _errors(result: subprocess.CompletedProcess, text: str) -> list[tuple[str, str]]:
    """(the line nft points at, its message) of each error of an `nft -f -`."""
    lines = text.splitlines()
    return [(lines[int(n) - 1].strip(), msg) for n, msg in re.findall(r"^/dev/stdin:(\d+):\S+ Error: (.*)$", result.stderr, re.M)]


def test_the_offloading_ruleset_passes_nfts_own_check(world):
    topo = world.load("forwards.yaml")
    world.apply(topo)  # its bridge exists: a flowtable names its devices
    text = _offloading_ruleset(world, topo)
    assert "flowtable fastpath" in text
    checked = nft(world.host, "-c", "-f", "-", text=text)
    if ask_flowtables(world.host):
        assert checked.returncode == 0, checked.stderr
    else:
        # parsed and evaluated by nft; only the kernel refuses what it has no module for
        errors = _errors(checked, text)
        assert errors, checked.stderr
        for line, msg in errors:
            assert msg == "Could not process rule: No such file or directory", (line, msg)
            assert line.startswith("flowtable fastpath") or line.endswith("flow add @fastpath"), line
    # the control: the same check finds a mistake in the text (`offload` is a keyword of nft's)
    broken = nft(world.host, "-c", "-f", "-", text=text.replace("flow_devices", "offload"))
    assert broken.returncode != 0 and "syntax error" in broken.stderr
    assert "vnet-test-check" not in nft(world.host, "list", "tables").stdout


def _conntrack(ns: str) -> list[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/nf_conntrack"], capture_output=True, text=True, check=True).stdout.splitlines()


def _udp_exchange(world, port: int) -> int:
    """Three datagrams from the WAN to the host's forwarded UDP port, each answered by the endpoint
    behind it; the client's source port. The flow is established from the second one on."""
    sock = Namespace(world.sb.wan).call(socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(3)
        sock.connect((HOST, port))
        for _ in range(3):
            sock.send(b"x")
            assert sock.recv(256).decode().strip() == sandbox.WAN_ADDR
        return sock.getsockname()[1]
    finally:
        sock.close()


def _offloaded(world, sport: int, port: int) -> bool:
    mine = [line for line in _conntrack(world.host) if f"sport={sport} dport={port} " in line]
    assert mine, f"no conntrack entry for the flow from port {sport}"
    return "[OFFLOAD]" in mine[0]


def test_an_established_flow_takes_the_fast_path_where_the_kernel_has_flowtables(world):
    has = ask_flowtables(world.host)
    from vnet import check

    topo = world.load("forwards.yaml")
    world.apply(topo)
    ruleset = nft(world.host, "list", "ruleset").stdout
    # without nf_flow_table vnet loads no flowtable (the kernel would refuse the whole ruleset)
    assert ("flowtable fastpath" in ruleset) == has, ruleset
    assert ("flow add @fastpath" in ruleset) == has
    with check.Listener("fwd-sink", 5005, udp=True):
        sport = _udp_exchange(world, 5005)
        # offloaded where the kernel can; where it cannot, the flow still passes, on the forward chain
        assert _offloaded(world, sport, 5005) == has
        if not has:
            return
        # the control: the same network with offload: false, the same exchange stays on the forward chain
        data = yaml.safe_load((EXAMPLES / "forwards.yaml").read_text())
        data["networks"]["lan0"]["offload"] = False
        world.apply(spec.load_text(yaml.safe_dump(data)))
        sport = _udp_exchange(world, 5005)  # a new flow: another source port, the new ruleset
        assert not _offloaded(world, sport, 5005)


def test_the_doctor_says_when_flows_cannot_be_offloaded(world):
    said = world.vnet("doctor")
    assert said.returncode == 0, said.stderr
    assert ("This kernel has no nftables flowtables" in said.stdout) == (not ask_flowtables(world.host))
