"""VM lifecycle with a real QEMU guest (the tiny image), through the `vnet` binary: stop is an ACPI
powerdown through QMP (the tiny guest powers off on it: busybox acpid), then a bounded wait, then a
kill (tested by stopping the guest's acpid first); a stopped VM stays stopped across plan and
apply until `vm start`; restart; an interactive console on the serial socket, driven through a
pty; apply's restart of a changed VM and destroy shut the guest down gracefully too."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from vnet import guest, names, qemuargs, spec
from vnet.drivers import process

from tests.integration import snapshot

VNET = str(Path(os.sys.executable).with_name("vnet"))

TOPOLOGY = """\
name: {name}
networks:
  lan0:
    mode: nat
    subnet: 192.168.231.0/24
    uplink: eth0
    dhcp: {{range: [192.168.231.100, 192.168.231.150], lease: 1h}}
vms:
  web:
    image: tiny
    memory: {memory}
    nics: [{{network: lan0, address: 192.168.231.20}}]
"""


def ok(proc: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def qemu_pid(world, name: str) -> int | None:
    return process.running(qemuargs.files(world.state_of(name), "web")["pid"])


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s")


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen on the console within {timeout}s: {got[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                got += os.read(fd, 4096)
            except OSError:
                break
    return got


def test_stop_start_restart_console_and_graceful_shutdowns(world, tmp_path):
    name = "lc" + names._digest(str(tmp_path))[:5]
    world.applied.add(name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(TOPOLOGY.format(name=name, memory="256M"))
    state = world.state_of(name)
    files = qemuargs.files(state, "web")
    agent = guest.Agent(files["agent"])
    before = snapshot.take(world.host)

    ok(world.vnet("apply", str(path)))
    agent.wait_ready(timeout=180)
    pid = qemu_pid(world, name)
    assert pid
    data = json.loads(ok(world.vnet("status", "-o", "json", str(path))).stdout)
    [vm] = data["vms"]
    assert (vm["state"], vm["pid"], vm["memory"], vm["cpus"]) == ("running", pid, "256M", 1)
    assert vm["console"] == str(files["serial"])
    [member] = data["networks"][0]["members"]
    assert (member["kind"], member["host_if"], member["state"]) == ("vm", qemuargs.nic_tap(spec.load(path), "web", 0), "ok")
    assert data["interfaces"][member["host_if"]] == {"network": "lan0", "vm": "web", "nic": 0, "kind": "tap", "hashed": False}

    # the console, interactive through a pty: what the guest prints arrives, what is typed arrives
    master, slave = pty.openpty()
    console = subprocess.Popen([VNET, "--netns", world.host, "--state-dir", str(world.state), "vm", "console", str(path), "web"],
                               stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    world.procs.append(console)
    os.close(slave)
    try:
        rc, out = agent.run("(head -n 1 /dev/ttyS0 > /tmp/typed 2>&1 &) </dev/null >/dev/null 2>&1; echo started")
        assert rc == 0, out
        deadline = time.monotonic() + 30
        while True:  # until the client is connected: what the guest prints before that is only logged
            agent.run("echo console-out-$((6*7)) > /dev/ttyS0")
            try:
                read_until(master, b"console-out-42", 1)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the guest's output never reached the console client"
        os.write(master, b"typed-through-the-console\r")

        # `head` ends as the line arrives: an orphan's exit, which once cost the agent the request
        # that came with it (tests/e2e/test_agent.py)
        wait_for(lambda: agent.run("cat /tmp/typed")[1] == "typed-through-the-console", 30, "the typed line in the guest")
        os.write(master, b"\x1d")  # Ctrl-] leaves
        assert console.wait(timeout=10) == 0
        assert b"Ctrl-] leaves" in console.stderr.read()
    finally:
        os.close(master)
        if console.poll() is None:
            console.kill()
            console.wait()

    # stop: ACPI powerdown, the guest powers itself off
    t0 = time.monotonic()
    out = ok(world.vnet("vm", "stop", str(path), "web")).stdout
    stopped_in = time.monotonic() - t0
    assert "the guest powered off (ACPI powerdown)" in out, out
    assert process.is_gone(pid) and qemu_pid(world, name) is None
    assert "VNET-POWERDOWN" in files["console"].read_text()
    # it stays stopped: plan has nothing to do, apply starts nothing, status says so
    ok(world.vnet("plan", "--exit-code", str(path)))
    ok(world.vnet("apply", str(path)))
    assert qemu_pid(world, name) is None
    data = json.loads(ok(world.vnet("status", "-o", "json", str(path))).stdout)
    assert data["state"] == "in_sync" and data["vms"][0]["state"] == "stopped" and data["vms"][0]["pid"] is None
    assert data["networks"][0]["members"][0]["state"] == "stopped"
    assert any("vnet vm start" in note for note in data["notes"])
    text = ok(world.vnet("status", str(path))).stdout
    assert "stopped" in text

    # start: that VM alone, from the file
    out = ok(world.vnet("vm", "start", str(path), "web")).stdout
    assert "+ vm web" in out and "VM web started" in out, out
    agent.wait_ready(timeout=180)
    pid2 = qemu_pid(world, name)
    assert pid2 and pid2 != pid
    ok(world.vnet("plan", "--exit-code", str(path)))
    assert "runs already" in ok(world.vnet("vm", "start", str(path), "web")).stdout

    # restart
    ok(world.vnet("vm", "restart", str(path), "web"))
    agent.wait_ready(timeout=180)
    pid3 = qemu_pid(world, name)
    assert pid3 and pid3 not in (pid, pid2)

    # a guest that ignores the power button is killed once the bounded wait is over
    rc, out = agent.run("kill $(pidof acpid) && echo acpid-gone")
    assert rc == 0 and "acpid-gone" in out, out
    t0 = time.monotonic()
    out = ok(world.vnet("vm", "stop", "--timeout", "2", str(path), "web")).stdout
    killed_in = time.monotonic() - t0
    assert "did not power off within 2.0s" in out and "killed" in out, out
    assert 2.0 <= killed_in < 20, killed_in
    assert process.is_gone(pid3) and "VNET-POWERDOWN" not in files["console"].read_text()
    ok(world.vnet("vm", "start", str(path), "web"))
    agent.wait_ready(timeout=180)

    # apply's restart of a changed VM is graceful: the old boot's console shows the powerdown
    with open(files["console"], "rb") as old_console:
        path.write_text(TOPOLOGY.format(name=name, memory="300M"))
        plan = ok(world.vnet("plan", str(path))).stdout
        assert "warning: VM web restarts" in plan
        ok(world.vnet("apply", str(path)))
        assert b"VNET-POWERDOWN" in old_console.read()
    agent.wait_ready(timeout=180)
    data = json.loads(ok(world.vnet("status", "-o", "json", str(path))).stdout)
    assert data["vms"][0]["memory"] == "300M" and data["state"] == "in_sync"

    # destroy shuts it down gracefully too, and leaves the host as it was
    with open(files["console"], "rb") as last_console:
        ok(world.vnet("destroy", str(path)))
        assert b"VNET-POWERDOWN" in last_console.read()
    world.applied.discard(name)
    assert snapshot.take(world.host) == before
    print(f"\nvm stop by ACPI powerdown: {stopped_in:.2f}s; stop of a guest ignoring it (--timeout 2): {killed_in:.2f}s")
