"""Live tables parsed from the JSON of `bridge`, `ip` and `nft` (as iproute2 6.1 and nft 1.0.6 print
it), their rendering; `qemu-args --bridge-helper`; `display: vnc` in the spec and in QEMU's argv."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from vnet import cli, live, qemuargs, spec
from vnet.errors import SpecError
from vnet.qemuargs import RunAs

BR = "vb-t-lan"
NETWORK = {
    "name": "lan", "mode": "nat", "uplink": "eth0",
    "bridge": {"name": BR, "present": True, "up": True, "mac": "52:54:00:00:00:01", "mtu": 1500, "state": "ok"},
    "members": [
        {"name": "a", "nic": None, "mac": "52:54:00:aa:aa:aa"},
        {"name": "vm", "nic": 0, "mac": "52:54:00:bb:bb:bb"},
    ],
}
INTERFACES = {"ve-t-a": {"network": "lan", "endpoint": "a", "nic": None}, "vt-t-vm0": {"network": "lan", "vm": "vm", "nic": 0},
              "ve-t-x": {"network": "other", "endpoint": "x", "nic": None}}
FDB = [
    {"mac": "33:33:00:00:00:01", "ifname": BR, "flags": ["self"], "state": "permanent"},
    {"mac": "52:54:00:aa:aa:aa", "ifname": "ve-t-a", "used": 3, "updated": 2, "flags": [], "master": BR, "state": ""},
    {"mac": "52:54:00:bb:bb:bb", "ifname": "vt-t-vm0", "used": 9, "updated": 7, "flags": [], "master": BR, "state": ""},
    {"mac": "de:ad:00:00:00:01", "ifname": "ve-t-a", "flags": [], "master": BR, "state": "permanent"},
    {"mac": "52:54:00:00:00:01", "ifname": BR, "vlan": 1, "flags": [], "master": BR, "state": "permanent"},
    {"mac": "02:00:00:00:00:09", "ifname": "ve-t-a", "flags": [], "master": BR, "state": "static"},
    {"mac": "33:33:00:00:00:01", "ifname": "ve-t-a", "flags": ["self"], "state": "permanent"},
    {"mac": "52:54:00:cc:cc:cc", "ifname": "ve-t-x", "flags": [], "master": "vb-t-other", "state": ""},
    {"mac": "00:00:00:00:00:00", "ifname": "vx-t-lan", "dst": "10.0.0.2", "flags": ["self"], "master": BR, "state": "permanent"},
]
NEIGH = [
    {"dst": "10.1.0.10", "dev": BR, "lladdr": "52:54:00:AA:AA:AA", "state": ["REACHABLE"]},
    {"dst": "10.1.0.99", "dev": BR, "state": ["FAILED"]},
    {"dst": "fe80::1", "dev": BR, "lladdr": "52:54:00:bb:bb:bb", "router": None, "state": ["STALE"]},
    {"dst": "192.168.1.1", "dev": "eth0", "lladdr": "02:00:00:00:00:01", "state": ["REACHABLE"]},
]


def _link(name: str, master: str | None, rx: int, tx: int) -> dict:
    li = {"ifname": name, "flags": ["BROADCAST", "UP", "LOWER_UP"],
          "stats64": {"rx": {"bytes": rx * 100, "packets": rx, "dropped": 1}, "tx": {"bytes": tx * 100, "packets": tx, "dropped": 0}}}
    if master:
        li["master"] = master
    return li


LINKS = [_link("lo", None, 5, 5), _link(BR, None, 4, 4), _link("ve-t-a", BR, 10, 20), _link("vt-t-vm0", BR, 30, 40),
         _link("ve-t-x", "vb-t-other", 1, 1)]
NFT_SET = [{"metainfo": {"version": "1.0.6"}},
           {"set": {"family": "bridge", "name": "guard_drops", "table": "vnet-t", "type": "ifname", "size": 65535,
                    "elem": [{"elem": {"val": "ve-t-a", "counter": {"packets": 3, "bytes": 252}}}], "stmt": [{"counter": None}]}}]


def test_fdb_keeps_the_bridges_entries_and_names_ports_and_macs():
    rows = live.fdb_rows(FDB, BR, NETWORK, INTERFACES)
    by = {(r["mac"], r["port"]): r for r in rows}
    assert ("33:33:00:00:00:01", BR) not in by and ("33:33:00:00:00:01", "ve-t-a") not in by  # the links' own filters
    assert ("52:54:00:cc:cc:cc", "ve-t-x") not in by  # another bridge's
    a = by[("52:54:00:aa:aa:aa", "ve-t-a")]
    assert (a["type"], a["mac_of"], a["port_of"], a["age"]) == ("learned", "a", "a", 2)
    assert by[("52:54:00:bb:bb:bb", "vt-t-vm0")]["port_of"] == "vm nic0" and by[("52:54:00:bb:bb:bb", "vt-t-vm0")]["mac_of"] == "vm nic0"
    local = by[("de:ad:00:00:00:01", "ve-t-a")]
    assert (local["type"], local["age"], local["mac_of"]) == ("local", None, "the port itself")
    own = by[("52:54:00:00:00:01", BR)]
    assert own["type"] == "local" and own["mac_of"] == "bridge (the host)" and own["port_of"] == "the host" and own["vlan"] == 1
    assert by[("02:00:00:00:00:09", "ve-t-a")]["type"] == "static"
    assert by[("00:00:00:00:00:00", "vx-t-lan")]["type"] == "remote" and by[("00:00:00:00:00:00", "vx-t-lan")]["remote"] == "10.0.0.2"
    assert [r["type"] for r in rows] == sorted((r["type"] for r in rows), key=["learned", "static", "remote", "local"].index)


def test_neighbours_of_the_bridge_only():
    rows = live.neigh_rows(NEIGH, BR, NETWORK)
    assert [r["address"] for r in rows] == ["10.1.0.10", "10.1.0.99", "fe80::1"]
    assert rows[0] == {"address": "10.1.0.10", "mac": "52:54:00:aa:aa:aa", "mac_of": "a", "state": "REACHABLE"}
    assert rows[1]["mac"] is None and rows[1]["state"] == "FAILED"
    assert rows[2]["mac_of"] == "vm nic0"


def test_port_counters_and_guard_drops():
    drops = live.guard_drop_counts(NFT_SET)
    assert drops == {"ve-t-a": 3}
    rows = live.port_rows(LINKS, BR, NETWORK, INTERFACES, drops)
    assert [r["port"] for r in rows] == ["ve-t-a", "vt-t-vm0", BR]  # the bridge (the host's own port) last
    a = rows[0]
    assert (a["member"], a["rx_packets"], a["rx_bytes"], a["tx_packets"], a["rx_dropped"], a["guard_drops"]) == ("a", 10, 1000, 20, 1, 3)
    assert rows[1]["guard_drops"] == 0 and rows[2]["guard_drops"] is None and rows[2]["member"] == "the host"
    assert all(r["guard_drops"] is None for r in live.port_rows(LINKS, BR, NETWORK, INTERFACES, None))
    assert live.guard_drop_counts([{"set": {"name": "guard_drops"}}]) == {}


def test_tables_render_every_table_and_a_missing_bridge():
    report = {"networks": [NETWORK, {**NETWORK, "name": "gone", "bridge": {**NETWORK["bridge"], "name": "vb-t-gone", "present": False}}],
              "interfaces": INTERFACES}
    tables = live.tables(report, {"fdb": FDB, "neigh": NEIGH, "link": LINKS, "guard_drops": {"ve-t-a": 3}})
    assert [t["network"] for t in tables] == ["lan", "gone"] and tables[1]["fdb"] == []
    out = io.StringIO()
    console = Console(file=out, width=200)
    for thing in live.render(tables):
        console.print(thing)
    text = out.getvalue()
    assert "forwarding database of vb-t-lan" in text and "neighbours of vb-t-lan" in text and "ports of vb-t-lan" in text
    assert "52:54:00:aa:aa:aa" in text and "REACHABLE" in text and "1000 B" in text
    assert "bridge vb-t-gone is missing" in text


# --- display: vnc --------------------------------------------------------------------------------

VMS = """
name: t
networks: {lan: {mode: isolated}, wan: {mode: host, subnet: 10.7.0.0/24}}
vms:
"""


def _topo(vms: str):
    return spec.load_text(VMS + vms)


def test_vnc_displays_are_stable_distinct_and_pinned_first():
    vms = "".join(f"  v{i}: {{image: tiny, display: vnc, nics: [{{network: lan}}]}}\n" for i in range(40))
    topo = _topo(vms + "  p: {image: tiny, display: 'vnc:7', nics: [{network: lan}]}\n  n: {image: tiny, nics: [{network: lan}]}\n")
    d = qemuargs.vnc_displays(topo)
    assert "n" not in d and d["p"] == 7
    assert len(set(d.values())) == len(d) == 41
    assert all(qemuargs.VNC_AUTO_FIRST <= d[f"v{i}"] < qemuargs.VNC_AUTO_FIRST + qemuargs.VNC_AUTO_SLOTS for i in range(40))
    assert qemuargs.vnc_displays(topo) == d  # stable
    # the same VM in a topology with fewer VMs keeps its number unless it clashed
    alone = _topo("  v0: {image: tiny, display: vnc, nics: [{network: lan}]}\n")
    assert qemuargs.vnc_displays(alone)["v0"] == d["v0"]


def test_vnc_argv_listens_on_loopback_only():
    topo = _topo("  g: {image: tiny, display: vnc, nics: [{network: lan}]}\n  h: {image: tiny, nics: [{network: lan}]}\n")
    user = RunAs("nobody", 65534, 65534)
    argv = qemuargs.argv(topo, "g", Path("/run/x"), kvm=False, vhost=False, tiny=("/k", "/i"), user=user, sandbox=False)
    n = qemuargs.vnc_displays(topo)["g"]
    i = argv.index("-vnc")
    assert argv[i + 1] == f"127.0.0.1:{n}" and argv[i + 2 : i + 4] == ["-device", "VGA"]
    assert qemuargs.vnc_port(n) == 5900 + n
    plain = qemuargs.argv(topo, "h", Path("/run/x"), kvm=False, vhost=False, tiny=("/k", "/i"), user=user, sandbox=False)
    assert "-vnc" not in plain and "VGA" not in plain and plain[plain.index("-display") + 1] == "none"


@pytest.mark.parametrize("value, words", [
    ("vga", "'vga' is not a display: write none, vnc, or vnc:N"),
    ("vnc:99999", "VNC display 99999 is out of range"),
    ("5", "'5' is not a display"),
    (5, "5 is not a display"),
    ("vnc:", "is not a display"),
])
def test_bad_display_is_one_clear_error(value, words):
    with pytest.raises(SpecError) as exc:
        _topo(f"  g: {{image: tiny, display: {value!r}, nics: [{{network: lan}}]}}\n".replace("'", '"') if isinstance(value, str)
              else f"  g: {{image: tiny, display: {value}, nics: [{{network: lan}}]}}\n")
    [problem] = exc.value.problems
    assert problem.path == "vms.g.display" and words in str(problem)


def test_a_pinned_display_used_twice_is_refused():
    with pytest.raises(SpecError) as exc:
        _topo("  g: {image: tiny, display: 'vnc:3', nics: [{network: lan}]}\n  h: {image: tiny, display: 'vnc:3', nics: [{network: lan}]}\n")
    assert any(p.path == "vms.h.display" and "also the display of vms.g" in str(p) for p in exc.value.problems)


# --- qemu-args --bridge-helper ---------------------------------------------------------------------


def test_bridge_helper_args_and_conf_lines():
    topo = _topo("  g: {image: tiny, display: vnc, nics: [{network: lan}, {network: wan, mac: '52:54:00:12:34:56'}, {network: lan}]}\n")
    args = qemuargs.bridge_helper_args(topo, "g")
    assert args[:4] == ["-netdev", "bridge,id=net0,br=vb-t-lan,helper=/usr/lib/qemu/qemu-bridge-helper",
                        "-device", f"virtio-net-pci,netdev=net0,mac={qemuargs.nic_mac(topo, 'g', 0)}"]
    assert args[5] == "bridge,id=net1,br=vb-t-wan,helper=/usr/lib/qemu/qemu-bridge-helper"
    assert args[7] == "virtio-net-pci,netdev=net1,mac=52:54:00:12:34:56"
    assert not any("tap" in x for x in args)
    assert qemuargs.bridge_conf_lines(topo, "g") == ["allow vb-t-lan", "allow vb-t-wan"]


def test_cli_bridge_helper_prints_args_on_stdout_and_the_conf_on_stderr(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(VMS + "  g: {image: tiny, display: vnc, nics: [{network: lan}]}\n")
    assert cli.run(["qemu-args", "--bridge-helper", str(path), "g"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("-netdev bridge,id=net0,br=vb-t-lan,") and "-vnc 127.0.0.1:" in out and "allow" not in out
    assert "\nallow vb-t-lan\n" in err and "/etc/qemu/bridge.conf" in err and "guards" in err
    assert not Path("/etc/qemu/bridge.conf").exists() or "vb-t-lan" not in Path("/etc/qemu/bridge.conf").read_text()


def test_cli_watch_and_helper_usage_errors(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(VMS + "  g: {image: tiny, nics: [{network: lan}]}\n")
    for argv, words in ((["status", str(path), "--watch", "0.1"], "--watch: 0.1 seconds is out of range"),
                        (["status", str(path), "--watch", "5000"], "out of range"),
                        (["status", str(path), "--watch", "--count", "0"], "--count"),
                        (["qemu-args", "--bridge-helper", "--full", str(path), "g"], "do not go together")):
        with pytest.raises(SystemExit) as exc:
            cli.run(argv)
        assert exc.value.code == 2
        assert words in capsys.readouterr().err
