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


def test_switches_of_two_namespaces_set_and_recorded_together(two_netns, tmp_path):
    nss, (target, other) = two_netns
    fwd, lo_fwd = "net/ipv4/conf/all/forwarding", "net/ipv4/conf/lo/forwarding"
    rec = sysctl.SysctlRecord(tmp_path)
    rs = [switch("", fwd, "1"), switch("", lo_fwd, "1"), switch(other, fwd, "1")]
    sysctl.create_many(nss, rec, rs)
    assert value(target, fwd) == value(target, lo_fwd) == value(other, fwd) == "1"
    recorded = json.loads(rec.file.read_text())
    assert {k: e["before"] for k, e in recorded.items()} == {r.key: "0" for r in rs}
    # and each is put back from the record
    for r in rs:
        sysctl.delete(nss, rec, r)
    assert value(target, fwd) == value(target, lo_fwd) == value(other, fwd) == "0"


def test_one_missing_switch_and_none_is_written(two_netns, tmp_path):
    nss, (target, other) = two_netns
    fwd, missing = "net/ipv4/conf/all/forwarding", "net/ipv4/conf/nosuchdev/forwarding"
    rec = sysctl.SysctlRecord(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        sysctl.create_many(nss, rec, [switch("", fwd, "1"), switch(other, missing, "1")])
    assert err.value.filename == missing
    assert value(target, fwd) == "0"
    assert not rec.file.exists()
    # the control: without the missing one, the same switch is written
    sysctl.create_many(nss, rec, [switch("", fwd, "1")])
    assert value(target, fwd) == "1"
