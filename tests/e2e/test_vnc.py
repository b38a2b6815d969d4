"""`display: vnc` with a real QEMU guest: the VNC server answers on 127.0.0.1 (and only there) of
the target namespace, at the port `vnet status` shows."""

from __future__ import annotations

import json

from vnet import check, qemuargs, spec

from tests.integration.probe import wait_for

TOPOLOGY = """\
name: vnc
networks:
  lan: {mode: isolated}
vms:
  g: {image: tiny, memory: 128M, display: vnc, nics: [{network: lan}]}
"""


def test_vnc_listens_on_loopback_at_the_port_status_shows(world, tmp_path):
    path = tmp_path / "vnc.yaml"
    path.write_text(TOPOLOGY)
    topo = spec.load(path)
    world.apply(topo)
    proc = world.vnet("status", str(path), "-o", "json")
    [vm] = json.loads(proc.stdout)["vms"]
    port = vm["display"]["port"]
    assert vm["display"] == {"kind": "vnc", "address": "127.0.0.1", "port": port, "display": port - 5900}
    assert port == qemuargs.vnc_port(qemuargs.vnc_displays(topo)["g"])
    banner = wait_for(lambda: check.tcp_line(world.host, "127.0.0.1", port), 20, f"a VNC banner on 127.0.0.1:{port}")
    assert banner.startswith("RFB ")
    # loopback only: the host's own address in the sandbox gets no answer
    assert check.tcp_line(world.host, _host_addr(world), port, timeout_s=1) is None
    text = world.vnet("status", str(path))
    assert f"vnc 127.0.0.1:{port}" in text.stdout


def _host_addr(world) -> str:
    from vnet import sandbox

    return sandbox.HOST_ADDR.split("/")[0]
