"""The command line against a real sandbox: plan's exit codes and JSON, apply step by step and
interrupted, list, destroy by name, OS errors as one line. Every command is the `vnet` binary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pytest

from vnet import spec
from vnet.spec import parsed

from . import snapshot
from .test_recovery import FAULTY, FAULTY_ENV, VNET, renamed

STEP_KINDS = {"netns", "bridge", "bridge_address", "tap", "veth", "address", "route", "ruleset", "sysctl"}


def ok(proc: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert proc.returncode == code, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def listed(world, *args: str) -> list[dict]:
    return json.loads(ok(world.vnet(*args, "list", "-o", "json")).stdout)


def test_plan_exit_code_and_json(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path, "p")
    name = spec.load(path).name
    text = ok(world.vnet("plan", "--exit-code", str(path)), 2).stdout.splitlines()
    data = json.loads(ok(world.vnet("plan", "-o", "json", "--exit-code", str(path)), 2).stdout)
    assert data["topology"] == name and data["netns"] == world.host
    assert data["changes"] == len(data["actions"]) == len(text) >= 5
    for action, line in zip(data["actions"], text):
        assert action["op"] == "create" and action["kind"] in STEP_KINDS
        assert isinstance(action["key"], str) and isinstance(action["attrs"], dict)
        assert action["summary"] == line and line.startswith(f"+ {action['kind']} {action['key']}")
    assert {"netns", "bridge", "tap", "veth"} <= {a["kind"] for a in data["actions"]}
    assert ok(world.vnet("plan", str(path))).stdout == "\n".join(text) + "\n"  # without --exit-code: 0

    applied = ok(world.vnet("apply", str(path))).stdout.splitlines()
    assert applied[-1].startswith(f"applied {name}: {data['changes']} changes in ")
    assert sorted(applied[:-1]) == sorted(text)  # each step printed once
    assert ok(world.vnet("plan", "--exit-code", str(path))).stdout.startswith("no changes")
    assert json.loads(ok(world.vnet("plan", "-o", "json", "--exit-code", str(path))).stdout)["actions"] == []

    path.write_text(path.read_text().replace("  vm2: {kind: tap, network: lan0}\n", ""))  # one tap less
    data = json.loads(ok(world.vnet("plan", "-o", "json", "--exit-code", str(path)), 2).stdout)
    ops = {(a["op"], a["kind"], a["key"]): a for a in data["actions"]}
    assert set(ops) == {("delete", "tap", f"vt-{name}-vm2"), ("update", "ruleset", f"vnet-{name}")}
    assert ops["delete", "tap", f"vt-{name}-vm2"]["attrs"]["mark"] == f"vnet:{name}:tap:vm2"
    update = ops["update", "ruleset", f"vnet-{name}"]
    assert update["changed"] and all(update["old"].get(k) != update["attrs"][k] for k in update["changed"])


def test_apply_prints_steps_as_they_run_and_ctrl_c_exits_130(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path, "i")
    before = snapshot.take(world.host)
    # slowed from outside (tests/faults.py): the vnet command itself reads no VNET_STEP_DELAY, and
    # without the delay a run could end before the Ctrl-C (17 steps in 0.03 s in one full run)
    argv = [*FAULTY, "--netns", world.host, "--state-dir", str(world.state), "apply", str(path)]
    # Ctrl-C as a terminal delivers it, whatever this test runs under: a suite started in the
    # background by a shell without job control ignores SIGINT, and its children inherit that
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **FAULTY_ENV, "VNET_STEP_DELAY": "0.3"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    world.procs.append(proc)
    seen = [proc.stdout.readline(), proc.stdout.readline()]
    assert all(line.startswith("+ ") for line in seen), seen
    assert proc.poll() is None  # two steps shown while the run goes on
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted at step "), err
    assert lines[0].endswith("everything this run changed was undone")
    assert "applied" not in out and all(line.startswith("+ ") for line in out.splitlines())  # steps only, as they ran
    assert snapshot.take(world.host) == before
    assert listed(world) == []  # nothing of it is applied


def test_list_then_destroy_by_name_when_the_file_is_lost(world, tmp_path):
    before = snapshot.take(world.host)
    path = renamed(world, "nat.yaml", tmp_path, "l")
    name = spec.load(path).name
    ok(world.vnet("apply", str(path)))
    other = world.load("isolated.yaml")  # applied through the API: no file recorded
    world.apply(other)

    rows = {r["name"]: r for r in listed(world)}
    assert set(rows) == {name, other.name}
    row = rows[name]
    assert row == {
        "name": name, "netns": world.host, "file": str(path), "file_exists": True, "applied_at": row["applied_at"],
        "networks": ["lan0"], "endpoints": 5, "vms": 0, "interrupted": False, "state": "in_sync", "pending": 0, "detail": None,
    }
    assert isinstance(row["applied_at"], int)
    assert rows[other.name]["file"] is None and rows[other.name]["state"] == "no_file"
    assert rows[other.name]["endpoints"] == len(other.endpoints)
    table = ok(world.vnet("list")).stdout
    assert name in table and "in sync" in table and "no file" in table
    assert json.loads(ok(subprocess.run([VNET, "--state-dir", str(world.state), "list", "-o", "json"], capture_output=True, text=True)).stdout) == []

    path.write_text(path.read_text().replace("  vm2: {kind: tap, network: lan0}\n", ""))
    row = {r["name"]: r for r in listed(world)}[name]
    assert (row["state"], row["pending"]) == ("pending", 2)  # the tap and the ruleset
    assert "2 changes pending" in ok(world.vnet("list")).stdout

    gone = tmp_path / "gone.yaml"
    path.rename(gone)
    row = {r["name"]: r for r in listed(world)}[name]
    assert (row["state"], row["file_exists"]) == ("file_missing", False)
    assert f"vnet destroy --name {name}" in row["detail"]
    proc = ok(world.vnet("destroy", str(path)), 2)
    assert "vnet destroy --name NAME" in proc.stderr

    kept = world.state / f"@{world.host}" / parsed.DIR
    names = lambda: [json.loads(e.read_text())["data"]["name"] for e in kept.iterdir()]  # noqa: E731
    assert name in names()  # the CLI kept the file's parsed data
    out = ok(world.vnet("destroy", "--name", name)).stdout
    assert out.splitlines()[-1].startswith(f"destroyed {name}: ") and " 0 objects" not in out
    assert name not in names()  # and destroy drops it, though it was given no file
    world.destroy(other.name)
    assert listed(world) == []
    assert snapshot.take(world.host) == before
    out = ok(world.vnet("destroy", "--name", name)).stdout
    assert f"destroyed {name}: 0 objects removed (nothing of {name} was found here" in out


def test_destroy_with_a_file_holding_only_the_name(world, tmp_path):
    before = snapshot.take(world.host)
    path = renamed(world, "nat.yaml", tmp_path, "n")
    name = spec.load(path).name
    ok(world.vnet("apply", str(path)))
    stub = tmp_path / "stub.yaml"
    stub.write_text(f"name: {name}\n")
    out = ok(world.vnet("destroy", str(stub))).stdout
    assert out.splitlines()[-1].startswith(f"destroyed {name}: ") and " 0 objects" not in out
    assert snapshot.take(world.host) == before


def test_os_errors_are_one_line_naming_the_path_and_the_fix(world, tmp_path):
    path = renamed(world, "nat.yaml", tmp_path, "o")
    before = snapshot.take(world.host)
    afile = tmp_path / "afile"
    afile.write_text("")
    ro = tmp_path / "ro"
    ro.mkdir()
    cases = {
        "a file": ([], afile, "not a directory"),
        "under a file": ([], afile / "sub", "not a directory"),
        "under /proc": ([], "/proc/vnet-test-state", "cannot be made there"),
    }
    if shutil.which("unshare"):  # a read-only file system, mounted in a mount namespace of its own
        cases["read-only"] = (["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o ro,mode=0755 tmpfs {ro} && exec "$0" "$@"'], ro, "read-only")
    for case, (wrap, state, words) in cases.items():
        for command in ("apply", "destroy"):
            argv = [*wrap, VNET, "--netns", world.host, "--state-dir", str(state), command, str(path)]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 1, f"{case} {command}: {proc.returncode} {proc.stderr}"
            assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, f"{case} {command}: {proc.stderr}"
            assert proc.stderr.startswith(f"error: {state}") and words in proc.stderr and "--state-dir" in proc.stderr, proc.stderr
    assert not os.path.exists("/proc/vnet-test-state")
    assert snapshot.take(world.host) == before


@pytest.mark.parametrize("command", ["plan", "status"])
def test_read_commands_with_a_state_dir_naming_a_file(world, tmp_path, command):
    path = renamed(world, "nat.yaml", tmp_path, "r")
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = subprocess.run([VNET, "--netns", world.host, "--state-dir", str(afile), command, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {afile}") and "--state-dir" in proc.stderr
