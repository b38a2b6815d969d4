"""vnet's nftables transactions against a real kernel: a topology's tables made where none was
observed, and made whole all the same where one appeared behind vnet's back."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from vnet.drivers import nft
from vnet.drivers import ns as nsmod
from vnet.resources import make

TEXT = """table inet {name} {{
	comment "vnet:tn:0123456789abcdef"
	chain forward {{
		type filter hook forward priority 0; policy accept;
		ct state established,related accept
	}}
}}
"""


@pytest.fixture
def netns():
    name = f"vt-nft-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield nsmod.Namespace(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def listed(ns: nsmod.Namespace, table: str) -> str:
    return ns.run(["nft", "list", "table", "inet", table]).stdout


def test_tables_made_fresh_and_made_whole_over_a_stray_one(netns, tmp_path):
    table = "vnet-tn"
    r = make("ruleset", table, {"text": TEXT.format(name=table), "rendered": True})
    nft.replace(netns, r, None, tmp_path / "ruleset.nft")
    text = listed(netns, table)
    assert "ct state established,related accept" in text
    assert 'comment "vnet:tn:0123456789abcdef"' in text  # vnet's mark: the kernel takes it only as it makes the table
    nft.delete(netns, r, tmp_path / "ruleset.nft")
    # a table of that name made behind vnet's back: not merged into, replaced whole
    netns.run(["nft", "-f", "-"], input=f"table inet {table} {{\n\tchain stray {{\n\t}}\n}}\n")
    assert "stray" in listed(netns, table)
    nft.replace(netns, r, None, tmp_path / "ruleset.nft")
    text = listed(netns, table)
    assert "ct state established,related accept" in text and "stray" not in text
    assert 'comment "vnet:tn:0123456789abcdef"' in text
