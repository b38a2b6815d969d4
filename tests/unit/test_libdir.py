"""libdir.named: the state files of a kind, as Path.glob("PREFIX*SUFFIX") finds them."""

from __future__ import annotations

import pytest

from vnet import libdir

NAMES = ["dnsmasq-.conf", "dnsmasq-lan.conf", "dnsmasq.conf", "xdnsmasq-lan.conf", "dnsmasq-lan.conf.bak", ".ident",
         "a.ident", "a.identx", "dhcp-event-", "dhcp-event-lan", "dhcp-even", "vm-a.argv"]


@pytest.mark.parametrize("prefix, suffix", [("dnsmasq-", ".conf"), ("", ".ident"), ("dhcp-event-", ""), ("vm-", ".argv"), ("x", "y")])
def test_named_finds_what_glob_finds(tmp_path, prefix, suffix):
    for n in NAMES:
        (tmp_path / n).touch()
    (tmp_path / "dnsmasq-dir.conf").mkdir()
    assert sorted(libdir.named(tmp_path, prefix, suffix)) == sorted(tmp_path.glob(f"{prefix}*{suffix}"))


def test_named_in_a_missing_directory_or_a_file_is_empty(tmp_path):
    (tmp_path / "f").touch()
    assert libdir.named(tmp_path / "missing", "a") == [] == libdir.named(tmp_path / "f", "a")
