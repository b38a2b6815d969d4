"""Switches set together: read and written in one trip into each namespace, the values found
recorded once before any is written, and none written when one of them does not exist."""

from __future__ import annotations

import json
import secrets
import subprocess

import pytest

from vnet.drivers import ns as nsmod
from vnet.drivers import sysctl
from vnet.resources import make, ns_key


@pytest.fixture
def two_netns():
    names = [f"vt-sc-{secrets.token_hex(3)}" for _ in range(2)]
    nss = None
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        nss = nsmod.Namespaces(names[0])
        yield nss, names
    finally:
        if nss is not None:
            nss.close()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def switch(ns: str, path: str, value: str):
    return make("sysctl", ns_key(ns, path), ns=ns, path=path, value=value)


def value(ns: str, path: str) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "cat", f"/proc/sys/{path}"], capture_output=True, text=True, check=True).stdout.strip()


def flipped(ns: str, path: str) -> tuple[str, str]:
    """(value now, its opposite): a new namespace takes its IPv4 switches from the host's, so
    the value it starts with is read, not assumed."""
    now = value(ns, path)
    return now, "0" if now == "1" else "1"


def test_switches_of_two_namespaces_set_and_recorded_together(two_netns, tmp_path):
    nss, (target, other) = two_netns
    fwd, lo_fwd = "net/ipv4/conf/all/forwarding", "net/ipv4/conf/lo/forwarding"
    places = [(target, "", fwd), (target, "", lo_fwd), (other, other, fwd)]
    flips = [flipped(ns, path) for ns, _, path in places]
    rec = sysctl.SysctlRecord(tmp_path)
    rs = [switch(key, path, new) for (_, key, path), (_, new) in zip(places, flips)]
    sysctl.create_many(nss, rec, rs)
    assert [value(ns, path) for ns, _, path in places] == [new for _, new in flips]
    recorded = json.loads(rec.file.read_text())
    assert {k: e["before"] for k, e in recorded.items()} == {r.key: before for r, (before, _) in zip(rs, flips)}
    # and each is put back from the record
    for r in rs:
        sysctl.delete(nss, rec, r)
    assert [value(ns, path) for ns, _, path in places] == [before for before, _ in flips]


def test_one_missing_switch_and_none_is_written(two_netns, tmp_path):
    nss, (target, other) = two_netns
    fwd, missing = "net/ipv4/conf/all/forwarding", "net/ipv4/conf/nosuchdev/forwarding"
    before, new = flipped(target, fwd)
    rec = sysctl.SysctlRecord(tmp_path)
    with pytest.raises(sysctl.MissingSwitch, match=f"/proc/sys/{missing} does not exist in") as err:
        sysctl.create_many(nss, rec, [switch("", fwd, new), switch(other, missing, "1")])
    assert err.value.path == missing
    assert value(target, fwd) == before
    assert not rec.file.exists()
    # the control: without the missing one, the same switch is written
    sysctl.create_many(nss, rec, [switch("", fwd, new)])
    assert value(target, fwd) == new


def test_a_value_vnet_would_never_write_fails_them_all_before_any_is_written(two_netns, tmp_path):
    nss, (target, other) = two_netns
    fwd = "net/ipv4/conf/all/forwarding"
    before, new = flipped(target, fwd)
    rec = sysctl.SysctlRecord(tmp_path)
    with pytest.raises(Exception, match="refusing value"):
        sysctl.create_many(nss, rec, [switch("", fwd, new), switch(other, fwd, "1; reboot")])
    assert value(target, fwd) == before
    assert not rec.file.exists()
