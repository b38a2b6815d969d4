"""VM lifecycle and status pieces that need no root: `vm stop`'s mark leaves the VM out of desired
state (its taps stay), the vm commands parse, leases as numbers, the console on a socket with its log."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vnet import api, cli, qemuargs
from vnet.desired import desired
from vnet.drivers.dnsmasq import Lease
from vnet.facts import HostFacts

from tests.unit.test_services import vm_topo


def _kinds(rs) -> list[tuple[str, str]]:
    return [(r.kind, r.key) for r in rs if r.kind in ("vm", "tap")]


def test_a_vm_stop_marks_leaves_it_out_of_desired_state_but_keeps_its_taps(tmp_path: Path):
    topo = vm_topo()
    facts = HostFacts(state=tmp_path, tiny_guest=("/k", "/i"))
    running = _kinds(desired(topo, facts))
    assert ("vm", "web") in running and any(k == "tap" for k, _ in running)
    qemuargs.files(tmp_path, "web")["stopped"].write_text("stopped\n")
    assert _kinds(desired(topo, facts)) == [x for x in running if x[0] == "tap"]
    qemuargs.files(tmp_path, "web")["stopped"].unlink()
    assert _kinds(desired(topo, facts)) == running


def test_the_console_is_a_socket_and_still_logged():
    argv = qemuargs.argv(vm_topo(), "web", Path("/run/vnet/x/lab"), kvm=False, vhost=False, tiny=("/k", "/i"))
    i = argv.index(f"socket,id=console,fd={qemuargs.FD_SERIAL},server=on,wait=off,logfile=/dev/fd/{qemuargs.FD_CONSOLE}")
    assert argv[i - 1] == "-chardev" and argv[i + 1:i + 3] == ["-serial", "chardev:console"]
    assert len({qemuargs.FD_QMP, qemuargs.FD_AGENT, qemuargs.FD_CONSOLE, qemuargs.FD_KERNEL, qemuargs.FD_INITRD, qemuargs.FD_SERIAL}) == 6


@pytest.mark.parametrize("argv,func,timeout", [
    (["vm", "stop", "f.yaml", "web"], cli.cmd_vm_stop, None),
    (["vm", "stop", "--timeout", "2.5", "f.yaml", "web"], cli.cmd_vm_stop, 2.5),
    (["vm", "restart", "f.yaml", "web", "--timeout", "1"], cli.cmd_vm_restart, 1.0),
    (["vm", "start", "f.yaml", "web"], cli.cmd_vm_start, "absent"),
    (["vm", "console", "--netns", "h", "f.yaml", "web"], cli.cmd_vm_console, "absent"),
])
def test_vm_commands_parse(argv, func, timeout):
    a = cli.parser().parse_args(argv)
    assert a.func is func and (a.topology, a.vm) == ("f.yaml", "web")
    assert getattr(a, "timeout", "absent") == timeout


def test_vm_alone_prints_help(capsys):
    assert cli.run(["vm"]) == 2
    assert "start" in capsys.readouterr().out


def test_leases_as_numbers_and_flagged_outside_the_subnet():
    topo = vm_topo()  # lan0: 192.168.50.0/24 (tests.unit.test_services.nat)
    subnet = topo.networks["lan0"].subnet
    inside = str(next(__import__("ipaddress").IPv4Network(subnet).hosts()))
    now = time.time()
    a = api._lease_json(Lease("lan0", "52:54:00:00:00:01", inside, "web", int(now) + 100), topo, now)
    assert a["expires_at"] == int(now) + 100 and a["remaining"] in (99, 100) and a["in_subnet"] and not a["expired"]
    b = api._lease_json(Lease("lan0", "52:54:00:00:00:02", "10.255.0.7", "", 0), topo, now)
    assert b["expires_at"] is None and b["remaining"] is None and not b["in_subnet"] and b["name"] is None
    c = api._lease_json(Lease("gone", "52:54:00:00:00:03", "10.255.0.8", "x", int(now) - 5), topo, now)
    assert c["expired"] and c["remaining"] == 0 and c["subnet"] is None
