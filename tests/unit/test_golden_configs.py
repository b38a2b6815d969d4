"""Rendered configs as golden files (the way pve-network tests its zones): every example's
dnsmasq configs and its nftables ruleset. A change in what vnet writes shows as a diff here;
VNET_UPDATE_GOLDEN=1 rewrites them after a deliberate change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vnet import spec
from vnet.desired import desired
from vnet.facts import HostFacts

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOLDEN = Path(__file__).with_name("golden")
FACTS = HostFacts(default_uplink="eth0", resolvers=("192.0.2.1",), state=Path("/run/vnet/@h/t"),
                  tiny_guest=("/boot/vmlinuz", "/run/vnet/guest/initrd"))


def _rendered(example: str, facts: HostFacts = FACTS) -> dict[str, str]:
    topo = spec.load(EXAMPLES / example)
    out = {}
    for r in desired(topo, facts):
        if r.kind == "service":
            out[f"{topo.name}.{r.key}.conf"] = r.get("config")
        elif r.kind == "ruleset":
            out[f"{topo.name}.nft"] = r.get("text")
    return out


@pytest.mark.parametrize("example", ["services.yaml", "forwards.yaml", "isolated.yaml", "nat.yaml"])
def test_rendered_configs_match_their_golden_files(example):
    rendered = _rendered(example)
    assert rendered, f"{example} renders no config"
    for name, text in rendered.items():
        _matches_golden(name, text)


def _matches_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VNET_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: VNET_UPDATE_GOLDEN=1 writes it"
    assert text == path.read_text(), f"{name} changed; VNET_UPDATE_GOLDEN=1 rewrites tests/unit/golden/{name}"


def test_the_offloading_ruleset_matches_its_golden_file():
    """forwards.yaml where the kernel has flowtables: the flowtable and the rule that fills it."""
    _matches_golden("fwd-offload.nft", _rendered("forwards.yaml", FACTS.replace(flowtables=True))["fwd.nft"])
