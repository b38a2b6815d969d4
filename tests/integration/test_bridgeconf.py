"""`vnet qemu-args FILE VM --bridge-helper` as root: vnet's marked lines in qemu-bridge-helper's
ACL file, kept by apply, removed by destroy — on a file under tmp_path (VNET_QEMU_BRIDGE_CONF),
never the host's /etc/qemu/bridge.conf."""

from __future__ import annotations

import pytest

from vnet import qemuargs, spec
from vnet.facts import bridge_name
from vnet.kinds import bridgeconf

FOREIGN = "# the administrator's own\nallow br0\n"

TOPO = """
name: {name}
networks:
  lan: {{mode: isolated, subnet: 10.61.0.0/24}}
  wan: {{mode: isolated, subnet: 10.62.0.0/24}}
vms:
  g: {{image: tiny, memory: 128M, nics: [{{network: lan}}, {{network: wan}}]}}
"""


@pytest.fixture
def conf(monkeypatch, tmp_path):
    """The ACL file, for this process and the vnet it runs (set before `world`, unset after it)."""
    path = tmp_path / "etc-qemu" / "bridge.conf"
    path.parent.mkdir()
    path.write_text(FOREIGN)
    monkeypatch.setenv(bridgeconf.ENV, str(path))
    return path


def test_bridge_helper_lines_installed_kept_and_removed(conf, world, tmp_path):
    name = world.name + "bc"
    path = tmp_path / f"{name}.yaml"
    path.write_text(TOPO.format(name=name))
    topo = spec.load(path)
    # the VM stays stopped (as after `vnet vm stop`): its taps are made, no QEMU runs
    state = world.state_of(name)
    state.mkdir(parents=True)
    qemuargs.files(state, "g")["stopped"].write_text("stopped by the test\n")
    world.apply(topo)
    assert conf.read_text() == FOREIGN  # nobody asked yet

    lan, wan = bridge_name(topo, "lan"), bridge_name(topo, "wan")
    r = world.vnet("qemu-args", str(path), "g", "--bridge-helper")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"-netdev bridge,id=net0,br={lan},") and "allow" not in r.stdout
    mark = f"vnet:{name}@{world.host}"
    text = conf.read_text()
    assert text.startswith(FOREIGN) and sorted(bridgeconf.marked(text, mark)) == sorted([lan, wan]), text
    assert text.count("\n") == FOREIGN.count("\n") + 4 and f"# {mark} {bridgeconf.NOTE}\nallow {lan}\n" in text
    assert str(conf) in r.stderr and "destroy" in r.stderr

    # asked again: nothing changes; plan is empty; apply keeps the lines
    inode = conf.stat().st_ino
    assert world.vnet("qemu-args", str(path), "g", "--bridge-helper").returncode == 0
    assert conf.stat().st_ino == inode
    assert world.plan(topo).actions == []
    assert world.apply(topo) == [] and conf.read_text() == text

    # a line removed by hand is put back by apply
    conf.write_text(FOREIGN)
    assert sorted((a.op, a.resource.key) for a in world.plan(topo).actions) == sorted([("create", lan), ("create", wan)])
    world.apply(topo)
    assert sorted(bridgeconf.marked(conf.read_text(), mark)) == sorted([lan, wan]) and conf.read_text().startswith(FOREIGN)

    world.destroy(name)
    world.applied.discard(name)
    assert conf.read_text() == FOREIGN
    assert not state.exists()  # the request went with the state directory


def test_bridge_helper_before_apply_only_prints(conf, world, tmp_path):
    name = world.name + "bn"
    path = tmp_path / f"{name}.yaml"
    path.write_text(TOPO.format(name=name))
    r = world.vnet("qemu-args", str(path), "g", "--bridge-helper")
    assert r.returncode == 0, r.stderr
    assert f"\nallow {bridge_name(spec.load(path), 'lan')}\n" in r.stderr and "`vnet apply` the topology" in r.stderr
    assert conf.read_text() == FOREIGN and not world.state_of(name).exists()
