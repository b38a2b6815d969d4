"""vnet's lines in qemu-bridge-helper's ACL file (kinds/bridgeconf.py): parsing and rendering the
file, the atomic rewrite, and desired/observed state — always on a temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from vnet.errors import VnetError
from vnet.facts import HostFacts
from vnet.kinds import bridgeconf, get
from vnet.observe import Observation
from vnet.spec import load_text

FOREIGN = "# the administrator's\nallow br0\ninclude /etc/qemu/other.conf\n"
MARK = "vnet:t"


def test_render_appends_marked_pairs_and_leaves_every_other_line():
    text = bridgeconf.render(FOREIGN, MARK, add=["vb-t-lan", "vb-t-wan"])
    assert text == FOREIGN + (
        "# vnet:t (vnet removes this and the next line on destroy)\nallow vb-t-lan\n"
        "# vnet:t (vnet removes this and the next line on destroy)\nallow vb-t-wan\n"
    )
    assert bridgeconf.marked(text, MARK) == ["vb-t-lan", "vb-t-wan"]
    assert bridgeconf.marked(text, "vnet:u") == [] and bridgeconf.marked(FOREIGN, MARK) == []
    # idempotent: adding what is there changes nothing
    assert bridgeconf.render(text, MARK, add=["vb-t-wan", "vb-t-lan"]) == text
    # removing takes out the pair and nothing else
    assert bridgeconf.render(text, MARK, remove=["vb-t-lan", "vb-t-wan"]) == FOREIGN


def test_another_topologys_and_foreign_lines_are_never_touched():
    other = bridgeconf.render(FOREIGN, "vnet:u@ns1", add=["vb-t-lan"])  # same bridge name, another target
    mine = bridgeconf.render(other, MARK, add=["vb-t-lan"])
    assert bridgeconf.marked(mine, "vnet:u@ns1") == ["vb-t-lan"] and bridgeconf.marked(mine, MARK) == ["vb-t-lan"]
    assert bridgeconf.render(mine, MARK, remove=["vb-t-lan"]) == other
    # an `allow` right after the administrator's own comment that only looks like vnet's is theirs
    tricky = "# vnet rocks\nallow br9\n"
    assert bridgeconf.render(tricky, MARK, remove=["br9"]) == tricky
    # a mark whose next line is not an `allow` of one bridge is not a pair: left as it is
    odd = "# vnet:t (vnet removes this and the next line on destroy)\ndeny all\n"
    assert bridgeconf.marked(odd, MARK) == [] and bridgeconf.render(odd, MARK, remove=["all"]) == odd


def test_the_mark_names_the_target_namespace(tmp_path):
    assert bridgeconf.mark_of("t", tmp_path / "state" / "t") == "vnet:t"
    assert bridgeconf.mark_of("t", tmp_path / "state" / "@host1" / "t") == "vnet:t@host1"


def test_change_creates_the_file_0644_and_its_directory(tmp_path):
    conf = tmp_path / "etc" / "qemu" / "bridge.conf"
    bridgeconf.change(conf, MARK, remove=["x"])
    assert not conf.exists()  # nothing to remove: no file made
    bridgeconf.change(conf, MARK, add=["vb-t-lan"])
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644
    assert bridgeconf.marked(conf.read_text(), MARK) == ["vb-t-lan"]
    assert [p.name for p in conf.parent.iterdir()] == ["bridge.conf"]  # no temporary file left


def test_change_is_atomic_and_keeps_mode_and_owner(tmp_path):
    conf = tmp_path / "bridge.conf"
    conf.write_text(FOREIGN)
    conf.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(conf, 4242, 4343)
    before = conf.stat()
    bridgeconf.change(conf, MARK, add=["vb-t-lan"])
    after = conf.stat()
    assert after.st_ino != before.st_ino  # a new file renamed over the old one, never written in place
    assert stat.S_IMODE(after.st_mode) == 0o640 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert conf.read_text().startswith(FOREIGN)
    # idempotent: the same change again does not rewrite the file
    bridgeconf.change(conf, MARK, add=["vb-t-lan"])
    assert conf.stat().st_ino == after.st_ino
    bridgeconf.change(conf, MARK, remove=["vb-t-lan"])
    assert conf.read_text() == FOREIGN and sorted(p.name for p in tmp_path.iterdir()) == ["bridge.conf"]


def test_a_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    conf = tmp_path / "bridge.conf"
    conf.write_text(FOREIGN)

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        bridgeconf.change(conf, MARK, add=["vb-t-lan"])
    assert conf.read_text() == FOREIGN and [p.name for p in tmp_path.iterdir()] == ["bridge.conf"]


TOPO = """
name: t
networks:
  lan: {mode: isolated, subnet: 10.7.0.0/24}
  wan: {mode: isolated, subnet: 10.8.0.0/24}
vms:
  g: {image: tiny, nics: [{network: lan}, {network: wan}, {network: lan}]}
  h: {image: tiny, nics: [{network: lan}]}
"""


def test_desired_is_one_line_per_bridge_of_the_requested_vms(tmp_path):
    topo = load_text(TOPO)
    state = tmp_path / "t"
    state.mkdir()
    facts = HostFacts(state=state)
    kind = get("bridgeconf")
    assert kind.desired(topo, facts) == []  # nobody asked
    bridgeconf.request(state, "h")
    bridgeconf.request(state, "g")
    bridgeconf.request(state, "h")
    assert [r.key for r in kind.desired(topo, facts)] == ["vb-t-lan", "vb-t-wan"]
    assert {r.get("mark") for r in kind.desired(topo, facts)} == {"vnet:t"}
    # a VM removed from the file wants nothing
    assert [r.key for r in kind.desired(load_text(TOPO.replace("  g: {image: tiny, nics: [{network: lan}, {network: wan}, {network: lan}]}\n", "")), facts)] == ["vb-t-lan"]
    (state / bridgeconf.REQUEST).write_text("{not json")
    with pytest.raises(VnetError, match="remove it and run `vnet qemu-args"):
        kind.desired(topo, facts)


def test_observe_create_delete_through_the_environment_variable(tmp_path, monkeypatch):
    conf = tmp_path / "bridge.conf"
    conf.write_text(FOREIGN + bridgeconf.render("", "vnet:t@other", add=["vb-t-lan"]))
    monkeypatch.setenv(bridgeconf.ENV, str(conf))
    kind = get("bridgeconf")
    state = tmp_path / "state" / "t"
    ctx = SimpleNamespace(topology="t", state=state)
    state.mkdir(parents=True)
    bridgeconf.request(state, "h")
    (want,) = kind.desired(load_text(TOPO), HostFacts(state=state))

    def observed():
        obs = Observation("t")
        kind.observe(SimpleNamespace(topology="t", state=state), obs)
        return list(obs.owned.values())

    assert observed() == []
    kind.create(ctx, want)
    assert observed() == [want]
    kind.create(ctx, want)
    assert conf.read_text().count("allow vb-t-lan") == 2  # its own and the other target's
    kind.delete(ctx, want)
    assert observed() == [] and conf.read_text() == FOREIGN + bridgeconf.render("", "vnet:t@other", add=["vb-t-lan"])
