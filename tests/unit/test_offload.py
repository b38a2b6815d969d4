"""Flow offload: where the kernel has nftables flowtables, nat networks' established flows take the
flowtable's fast path (rendering and validation here; the traffic in tests/integration/test_offload.py)."""

from __future__ import annotations

import pytest

from vnet import nftrules
from vnet.facts import bridge_name
from vnet.desired import desired
from vnet.facts import HostFacts

from tests.unit.test_policies import BR0, chains, doc, elements, load, paths, ruleset

FLOWTABLES = HostFacts(default_uplink="eth0", flowtables=True)
NONE = HostFacts(default_uplink="eth0", flowtables=False)


def text(data: dict, facts: HostFacts = FLOWTABLES) -> str:
    return ruleset(desired(load(data), facts)).get("text")


def flowtable_devices(rendered: str) -> list[str]:
    lines = rendered.splitlines()
    start = lines.index("  flowtable fastpath {")
    (devices,) = [x for x in lines[start : start + 4] if x.strip().startswith("devices = {")]
    return devices.strip()[len("devices = { ") : -2].split(", ")


def test_a_nat_network_offloads_between_its_bridge_and_its_uplink():
    rendered = text(doc())
    assert flowtable_devices(rendered) == [f'"{BR0}"', '"eth0"']  # not lan1: host mode routes nothing out
    assert elements(rendered, "flow_devices") == [f'"{BR0}"', '"eth0"']
    forward = chains(rendered)[("inet", "forward")]
    # before the rule that accepts established packets, or no packet would ever reach it
    assert forward[0] == "meta l4proto { tcp, udp } iifname @flow_devices oifname @flow_devices flow add @fastpath"
    assert forward[1] == "ct state established,related accept"


def test_nothing_is_offloaded_where_the_kernel_has_no_flowtables():
    rendered = text(doc(), NONE)
    assert "flowtable" not in rendered and "flow add" not in rendered and "flow_devices" not in rendered


def test_offload_false_keeps_a_network_on_the_forward_chain_even_beside_one_that_offloads():
    data = doc(networks={"lan0": {"mode": "nat", "subnet": "192.168.70.0/24", "uplink": "eth0", "offload": False},
                         "lan2": {"mode": "nat", "subnet": "192.168.72.0/24", "uplink": "eth0"}})
    rendered = text(data)
    devices = flowtable_devices(rendered)
    assert f'"{BR0}"' not in devices  # a flow of lan0 has one end outside the set: never added
    assert devices == [f'"{bridge_name(load(data), "lan2")}"', '"eth0"']
    # no nat network that offloads: no flowtable at all, where the kernel has them too
    assert "flowtable" not in text(doc(networks={"lan0": {"mode": "nat", "subnet": "192.168.70.0/24", "uplink": "eth0", "offload": False}}))


def test_the_flowtable_is_structure_so_a_change_of_its_devices_replaces_the_tables():
    one = text(doc())
    two = text(doc(networks={"lan2": {"mode": "nat", "subnet": "192.168.72.0/24", "uplink": "eth0"}}))
    assert nftrules.delta("vnet-lab", one, two) is None  # devices are not set elements: no element delta
    assert nftrules.delta("vnet-lab", one, one) == "\n"


@pytest.mark.parametrize("mode", ["host", "isolated"])
def test_offload_outside_nat_is_refused_with_the_field_named(mode):
    net = {"mode": mode, "offload": True}
    if mode == "host":
        net["subnet"] = "192.168.73.0/24"
    assert "networks.lan3.offload" in paths(doc(networks={"lan3": net}))


def test_the_rule_count_includes_the_offload_rule():
    assert ruleset(desired(load(doc()), FLOWTABLES)).get("rules") == ruleset(desired(load(doc()), NONE)).get("rules") + 1


class _Kernel:
    """A namespace whose kernel answers the flowtable question `answer`, counting the questions."""

    def __init__(self, answer: bool):
        self.asked = 0
        self.nft = self
        self.answer = answer

    def flowtables(self) -> bool:
        self.asked += 1
        return self.answer


def test_the_answer_is_asked_once_per_boot_and_a_no_again_while_a_module_could_change_it(tmp_path, monkeypatch):
    from vnet.drivers import nft

    boot = tmp_path / "boot_id"
    boot.write_text("b1\n")
    monkeypatch.setattr(nft, "BOOT_ID", boot)
    monkeypatch.setattr(nft, "_flowtable_module_on_disk", lambda: False)
    kept = tmp_path / ".flowtables"
    kernel = _Kernel(False)
    assert nft.flowtables(kernel, kept) is False and nft.flowtables(kernel, kept) is False
    assert kernel.asked == 1 and kept.read_text() == "b1 no\n"
    boot.write_text("b2\n")  # rebooted: asked again
    kernel.answer = True
    assert nft.flowtables(kernel, kept) is True and kernel.asked == 2
    kept.write_text("b2 no\n")  # a no, with a module on disk that asking would load: asked again
    monkeypatch.setattr(nft, "_flowtable_module_on_disk", lambda: True)
    assert nft.flowtables(kernel, kept) is True and kernel.asked == 3 and kept.read_text() == "b2 yes\n"
    assert nft.flowtables(kernel, kept) is True and kernel.asked == 3  # a yes stays
    kept.write_text("b2 maybe; rm -rf /\n")  # anything else in the file is not an answer
    assert nft.flowtables(kernel, kept) is True and kernel.asked == 4
