"""Boot persistence (`vnet enable`/`disable`) and `vnet export`, without root: units in a tmp
directory, read back by a parser of their own and by systemd-analyze where it is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from vnet import api, export, persist, spec
from vnet.errors import VnetError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
PROGRAM = "/usr/local/bin/vnet"


def _unit(**kw) -> persist.Unit:
    return persist.Unit("lab", Path("/srv/topologies/nat.yaml"), PROGRAM, **kw)


def test_unit_golden():
    """To accept a deliberate change: VNET_GOLDEN=update."""
    text = _unit().render()
    golden = GOLDEN / "vnet-lab.service"
    if os.environ.get("VNET_GOLDEN") == "update":
        golden.write_text(text)
    assert text == golden.read_text()


def test_unit_says_what_the_issue_asks():
    u = persist.parse_unit(_unit().render())
    assert u["Service"]["Type"] == ["oneshot"] and u["Service"]["RemainAfterExit"] == ["yes"]
    assert u["Service"]["ExecStart"] == [f"{PROGRAM} apply /srv/topologies/nat.yaml"]
    assert u["Service"]["ExecReload"] == u["Service"]["ExecStart"]
    assert u["Service"]["ExecStop"] == [f"{PROGRAM} destroy --force /srv/topologies/nat.yaml"]
    after = u["Unit"]["After"][0].split()
    assert {"local-fs.target", "nftables.service", "firewalld.service"} <= set(after)
    assert "network-pre.target" in u["Unit"]["Before"][0].split()
    assert u["Install"]["WantedBy"] == ["multi-user.target"]
    multi = persist.parse_unit(_unit(multi_host=True).render())
    assert "network-online.target" in multi["Unit"]["After"][0].split() and "Before" not in multi["Unit"]


def test_unit_passes_target_and_directories():
    u = persist.parse_unit(_unit(netns="h1", state_dir=Path("/run/v2"), lib_dir=Path("/var/lib/v2")).render())
    assert u["Service"]["ExecStart"] == [f"{PROGRAM} --netns h1 --state-dir /run/v2 --lib-dir /var/lib/v2 apply /srv/topologies/nat.yaml"]


def test_awkward_paths_are_quoted_and_escaped():
    u = persist.Unit("lab", Path("/srv/my topo/50%$HOME.yaml"), PROGRAM)
    line = persist.parse_unit(u.render())["Service"]["ExecStart"][0]
    assert line == f'{PROGRAM} apply "/srv/my topo/50%%$$HOME.yaml"'
    with pytest.raises(VnetError, match="control character"):
        persist.Unit("lab", Path("/srv/a\nb.yaml"), PROGRAM).render()


def _verify(path: Path) -> None:
    """systemd-analyze verify, where it is installed: no warning about the unit."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return  # the golden file and the parser above still hold the unit to its text
    proc = subprocess.run([tool, "verify", "--man=no", str(path)], capture_output=True, text=True)
    complaints = [line for line in (proc.stderr + proc.stdout).splitlines() if path.name in line or "Failed" in line]
    assert proc.returncode == 0 and not complaints, proc.stderr


def test_enable_and_disable_in_a_unit_dir(tmp_path):
    topo_file = tmp_path / "nat.yaml"
    topo_file.write_text((EXAMPLES / "nat.yaml").read_text().replace("owner: nobody", "owner: 65534"))
    units = tmp_path / "units"
    prog = shutil.which("true") or "/bin/true"  # verify wants an executable that exists
    path = api.enable(topo_file, unit_dir=units, program=prog)
    assert path == units / "vnet-lab.service"
    assert (units / "multi-user.target.wants" / "vnet-lab.service").resolve() == path
    assert persist.parse_unit(path.read_text())["Service"]["ExecStart"] == [f"{prog} apply {topo_file}"]
    _verify(path)
    # again: the same file's unit is rewritten; another file of the same name is refused
    api.enable(topo_file, unit_dir=units, program=prog)
    other = tmp_path / "other.yaml"
    other.write_text(topo_file.read_text())
    with pytest.raises(VnetError, match="run `vnet disable"):
        api.enable(other, unit_dir=units, program=prog)
    with pytest.raises(VnetError, match="was enabled for"):
        api.disable(other, unit_dir=units)
    assert api.disable(topo_file, unit_dir=units) == path
    assert not path.exists() and not (units / "multi-user.target.wants" / "vnet-lab.service").is_symlink()
    assert api.disable(topo_file, unit_dir=units) is None


def test_a_foreign_unit_is_never_overwritten_or_removed(tmp_path):
    topo_file = tmp_path / "nat.yaml"
    topo_file.write_text((EXAMPLES / "nat.yaml").read_text())
    (tmp_path / "vnet-lab.service").write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(VnetError, match="not a unit vnet wrote"):
        api.enable(topo_file, unit_dir=tmp_path, program=PROGRAM)
    with pytest.raises(VnetError, match="not a unit vnet wrote"):
        api.disable(topo_file, unit_dir=tmp_path)
    assert (tmp_path / "vnet-lab.service").read_text() == "[Service]\nExecStart=/bin/true\n"


def test_an_invalid_file_is_not_enabled(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: lab\nnetworks:\n  n: {mode: nat}\n")
    with pytest.raises(VnetError):
        api.enable(bad, unit_dir=tmp_path / "units", program=PROGRAM)
    assert not (tmp_path / "units").exists()


# --- export ------------------------------------------------------------------------------------------

TAPS = """
name: lab
networks:
  lan: {mode: nat, subnet: 10.20.0.0/24, dhcp: {range: [10.20.0.100, 10.20.0.149]}, dns: true}
  iso: {mode: isolated}
endpoints:
  vm1: {kind: tap, network: lan, owner: 65534, isolated: true}
  vpn: {kind: tun, address: 10.8.0.1/24}
"""


def _ini(text: str) -> dict[str, dict[str, list[str]]]:
    return persist.parse_unit(text)  # networkd files share the unit syntax


def test_networkd_export():
    files = export.networkd(spec.load_text(TAPS))
    assert sorted(files) == ["60-vb-lab-iso.netdev", "60-vb-lab-iso.network", "60-vb-lab-lan.netdev", "60-vb-lab-lan.network",
                             "70-vt-lab-vm1.netdev", "70-vt-lab-vm1.network", "70-vt-lab-vpn.netdev", "70-vt-lab-vpn.network"]
    lan = _ini(files["60-vb-lab-lan.network"])
    assert lan["Match"]["Name"] == ["vb-lab-lan"] and lan["Network"]["Address"] == ["10.20.0.1/24"]
    assert lan["Network"]["IPMasquerade"] == ["ipv4"] and lan["Network"]["DHCPServer"] == ["yes"]
    assert lan["DHCPServer"]["PoolOffset"] == ["100"] and lan["DHCPServer"]["PoolSize"] == ["50"]
    assert _ini(files["60-vb-lab-lan.netdev"])["NetDev"]["Kind"] == ["bridge"]
    tap = _ini(files["70-vt-lab-vm1.netdev"])
    assert tap["NetDev"]["Kind"] == ["tap"] and tap["Tap"]["User"] == ["65534"]
    vm1 = _ini(files["70-vt-lab-vm1.network"])
    assert vm1["Network"]["Bridge"] == ["vb-lab-lan"] and vm1["Bridge"]["Isolated"] == ["yes"]
    assert "not expressed: vnet's port guards" in files["70-vt-lab-vm1.network"]
    assert _ini(files["70-vt-lab-vpn.network"])["Network"]["Address"] == ["10.8.0.1/24"]
    assert "Address" not in _ini(files["60-vb-lab-iso.network"])["Network"]


def test_networkd_refuses_namespaces_naming_them():
    with pytest.raises(export.NotExpressible) as err:
        export.networkd(spec.load(EXAMPLES / "nat.yaml"))
    msg = str(err.value)
    assert "endpoints.c1: a netns endpoint lives in a network namespace" in msg and "endpoints.c2" in msg
    assert "--format sh" in msg


def test_sh_export_runs_what_apply_would_make():
    text = export.shell(spec.load(EXAMPLES / "nat.yaml"))
    assert text.startswith("#!/bin/sh\n")
    lines = text.splitlines()
    assert "ip link add vb-lab-lan0 type bridge" in lines
    assert "ip netns add lab-c1" in lines
    assert "ip -n lab-c1 addr add 192.168.223.10/24 dev eth0" in lines
    assert lines.index("ip link add vb-lab-lan0 type bridge") < lines.index("ip tuntap add dev vt-lab-vm1 mode tap user 65534")
    assert any(line.startswith("nft -f - <<'VNET_NFT'") for line in lines) and "table inet vnet-lab" in text
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0  # it parses as shell
