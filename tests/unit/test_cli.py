"""The command line without root: what each command imports, usage, exit codes, one-line errors,
the JSON of `plan -o json` and `list -o json`. Commands run as the real `vnet` binary."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vnet import api, cli
from vnet.engine import DEFAULT_STATE_DIR
from vnet.errors import StepFailed
from vnet.plan import diff
from vnet.resources import make

VNET = str(Path(sys.executable).with_name("vnet"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COMMANDS = ("validate", "plan", "apply", "destroy", "list", "status", "leases", "qemu-args", "console", "vm", "doctor", "schema", "sandbox")


def vnet(*args: str, state: Path | None = None) -> subprocess.CompletedProcess:
    argv = [VNET, *(("--state-dir", str(state)) if state else ()), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def imported_by(*args: str) -> set[str]:
    """The modules `vnet ARGS` has loaded when its command returns."""
    code = (
        "import sys\nfrom vnet import cli\n"
        "try:\n    cli.run(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    return set(proc.stderr.split())


def heavy(mods: set[str]) -> set[str]:
    roots = ("pydantic", "rich", "yaml", "typer", "click", "pyroute2", "vnet.engine", "vnet.api", "vnet.spec", "vnet.drivers")
    return {m for m in mods if any(m == r or m.startswith(r + ".") for r in roots)}


def test_help_lists_every_command_and_imports_nothing_heavy():
    proc = vnet("--help")
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert f"\n    {command} " in proc.stdout, command
    assert "--netns" in proc.stdout and "--state-dir" in proc.stdout
    assert heavy(imported_by("--help")) == set()


def test_validate_imports_the_spec_only():
    everything = imported_by("validate", str(EXAMPLES / "nat.yaml"))
    assert not everything & {"dataclasses", "inspect", "vnet.dnsconf", "vnet.facts"}  # ~10 ms of start-up between them
    # ~12 ms between them: pathlib, subprocess, shutil (bz2, lzma), OpenSSL's hashlib
    assert not everything & {"pathlib", "subprocess", "shutil", "bz2", "lzma", "_hashlib"}
    mods = heavy(everything)
    assert "vnet.spec" in mods and "pydantic" not in mods  # the spec's models are vnet's own (vnet.spec.schema)
    assert not {m for m in mods if m.startswith("pydantic")}
    assert not {m for m in mods if m.split(".")[0] in ("rich", "pyroute2") or m in ("vnet.engine", "vnet.api")}


def test_validate_leaves_pyyamls_reader_check_uncompiled():
    """libyaml reads the file; the pure-Python reader's pattern (all of Unicode, ~4 ms) waits for a use."""
    code = ("import sys\nfrom vnet import cli\ncli.run(sys.argv[1:])\nimport re, yaml\n"
            "print(isinstance(yaml.reader.Reader.NON_PRINTABLE, re.Pattern), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, "validate", str(EXAMPLES / "nat.yaml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.split() == ["False"], proc.stderr


def test_a_command_makes_its_own_parser_alone():
    """Each parser costs argparse's translation look-ups: `vnet --help` makes none of the commands',
    a command its own (and its help says what it did before)."""
    top = cli.parser()
    commands = next(a for a in top._actions if isinstance(a, cli._Commands))
    made = lambda: {name for name, p in dict.items(commands.choices) if not isinstance(p, cli._Recipe)}  # noqa: E731
    assert made() == set() and len(commands.choices) == 20
    a = top.parse_args(["--netns", "x", "status", "t.yaml", "-o", "json"])
    assert made() == {"status"} and (a.netns, a.topology, a.output, a.func) == ("x", "t.yaml", "json", cli.cmd_status)
    a = cli.parser().parse_args(["vm", "stop", "t.yaml", "v1", "--timeout", "3"])
    assert (a.vm, a.timeout, a.func) == ("v1", 3.0, cli.cmd_vm_stop)


NO_DATACLASSES = ("dataclasses", "inspect")  # ~8 ms to import, and ~0.5 ms per dataclass made


def test_status_plan_and_apply_modules_import_no_dataclasses():
    """Every module `vnet status`, `plan` and `apply` load (every kind and driver among them)
    makes its value classes by hand: importing them imports neither dataclasses nor inspect."""
    code = ("import sys, os, importlib\nfrom vnet import api, cli, kinds, drivers\n"
            "import vnet.engine.run, vnet.preflight, vnet.drivers.kvm, vnet.drivers.nft\n"
            "for pkg in (kinds, drivers):\n"  # not pkgutil.iter_modules: it imports inspect
            "    for f in sorted(os.listdir(pkg.__path__[0])):\n"
            "        if f.endswith('.py') and f != '__init__.py':\n"
            "            importlib.import_module(f'{pkg.__name__}.{f[:-3]}')\n"
            f"print(*sorted(set(sys.modules) & {set(NO_DATACLASSES)!r}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == [], proc.stdout + proc.stderr


def run_with_modules(*args: str, before: str = "") -> tuple[int, str, set[str]]:
    """`vnet ARGS` run through cli.run in a fresh interpreter (stdout a pipe, as in a script): its
    exit code, its output and the modules loaded when it returned. `before` runs first (a stub)."""
    code = (
        f"import sys\n{before}\nfrom vnet import cli\n"
        "try:\n    code = cli.run(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
        "print(code, *sorted(sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    words = proc.stderr.split()
    assert words and words[0].lstrip("-").isdigit(), proc.stderr
    return int(words[0]), proc.stdout, set(words[1:])


NOT_FOR_STATUS = ("rich", "pyroute2", "concurrent", "logging",  # what a plain `vnet status` does without
                  "shutil", "bz2", "lzma", "tempfile", "random", "heapq", "_hashlib")  # ~6 ms of its start-up between them


def _roots(mods: set[str], roots: tuple[str, ...]) -> set[str]:
    return {m for m in mods if m.split(".")[0] in roots}


@pytest.mark.skipif(os.geteuid() != 0, reason="status reads the namespace's nftables: needs root")
@pytest.mark.parametrize("output", [[], ["-o", "json"]])
def test_status_to_a_pipe_imports_no_rich_and_no_pyroute2(tmp_path, output):
    code, out, mods = run_with_modules("--state-dir", str(tmp_path), "status", str(EXAMPLES / "nat.yaml"), *output)
    assert code == 3 and "not applied" in out  # it ran to the end: lab is not applied in a fresh state dir
    assert _roots(mods, NOT_FOR_STATUS) == set() and not mods & set(NO_DATACLASSES)
    if not output:
        assert "┏━━━━━━━━┳" in out and "│ c1     │ netns │" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="plan reads the namespace's nftables: needs root")
def test_plan_imports_no_rich_and_no_pyroute2(tmp_path):
    code, out, mods = run_with_modules("--state-dir", str(tmp_path), "plan", str(EXAMPLES / "nat.yaml"))
    assert code == 0 and "+ netns lab-c1" in out
    assert _roots(mods, NOT_FOR_STATUS) == set() and not mods & set(NO_DATACLASSES)


REPORT = {
    "topology": "lab", "state": "drift", "notes": ["a note"], "vms": [], "bgp": [], "leases": [], "forwards": [],
    "networks": [{"name": "lan0", "mode": "nat", "subnets": ["192.168.223.0/24"], "gateway": "192.168.223.1", "uplink": None,
                  "bridge": {"name": "vb-lab-lan0", "up": True, "present": True}, "dhcp": None,
                  "members": [{"name": "c1", "nic": None, "kind": "netns", "mac": "52:54:00:54:76:66", "host_if": "ve-lab-c1",
                               "host_if_hashed": False, "state": "drift",
                               "address": {"source": "fixed", "address": "192.168.223.10"}}]}],
    "resources": [{"kind": "address", "name": "c1", "state": "drift", "note": "", "attrs": {},
                   "differs": {"prefix": {"have": 16, "want": 24}}}],
}


@pytest.mark.parametrize("tty_env", [{}, {"FORCE_COLOR": "1"}])
def test_status_tables_on_a_plain_page_are_riches_without_rich(tmp_path, tty_env, monkeypatch):
    stub = f"from vnet import api, spec\napi.status = lambda *a, **k: {REPORT!r}"
    for k, v in tty_env.items():
        monkeypatch.setenv(k, v)
    code, out, mods = run_with_modules("status", str(EXAMPLES / "nat.yaml"), before=stub)
    assert code == 1
    assert "│ c1     │ netns │" in out and "address c1 (prefix: 16 → 24)" in out and "  a note" in out
    assert ("rich" in mods) == bool(tty_env)  # FORCE_COLOR: rich writes it, in colour
    if not tty_env:
        from vnet import plaintable

        code2, rich_out, _ = run_with_modules("status", str(EXAMPLES / "nat.yaml"),
                                              before=stub + "\nfrom vnet import plaintable\nplaintable.render = lambda *a: None")
        assert out == rich_out and plaintable  # rich's own output, byte for byte


def test_default_state_dir_is_the_engines():
    assert Path(cli.STATE_DIR) == DEFAULT_STATE_DIR


def test_no_command_prints_help_and_exits_2():
    proc = vnet()
    assert proc.returncode == 2
    assert "commands:" in proc.stdout
    proc = vnet("sandbox")
    assert proc.returncode == 2 and "create" in proc.stdout


def test_every_command_has_help():
    for command in COMMANDS:
        proc = vnet(command, "--help")
        assert proc.returncode == 0, (command, proc.stderr)
        assert proc.stdout.startswith(f"usage: vnet {command}"), command


def test_global_options_go_before_or_after_the_command(tmp_path):
    state = tmp_path / "st"
    state.mkdir()
    before = subprocess.run([VNET, "--state-dir", str(state), "list", "-o", "json"], capture_output=True, text=True)
    after = subprocess.run([VNET, "list", "--state-dir", str(state), "-o", "json"], capture_output=True, text=True)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout) == []


def test_validate_valid_and_invalid(tmp_path):
    proc = vnet("validate", str(EXAMPLES / "nat.yaml"))
    assert proc.returncode == 0 and "valid (1 networks, 5 endpoints, 0 VMs)" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnetworks:\n  n: {mode: host, subnet: 10.9.0.0/33}\n  m: {mode: nat, subnet: 10.9.1.0/24, colour: red}\n")
    proc = vnet("validate", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) >= 2 and all(line.startswith("error: ") for line in lines), proc.stderr
    assert "networks.n.subnet" in proc.stderr and "Traceback" not in proc.stderr


def test_unreadable_file_is_one_line(tmp_path):
    proc = vnet("validate", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "nope.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_destroy_needs_a_file_or_a_name_not_both(tmp_path):
    for args in ((), (str(EXAMPLES / "nat.yaml"), "--name", "lab")):
        proc = vnet("destroy", *args, state=tmp_path)
        assert proc.returncode == 2
        assert "--name NAME" in proc.stderr and "Traceback" not in proc.stderr


def test_destroy_of_a_lost_file_says_how_to_destroy_by_name(tmp_path):
    proc = vnet("destroy", str(tmp_path / "lost.yaml"), state=tmp_path / "st")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "vnet destroy --name NAME" in proc.stderr


def test_destroy_rejects_a_name_that_is_not_one(tmp_path):
    proc = vnet("destroy", "--name", "../etc", state=tmp_path / "st")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: name: '../etc'") and "Traceback" not in proc.stderr
    assert not (tmp_path / "st").exists()


def test_plan_exit_code_on_an_error_is_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnetworks: {n: {mode: hots}}\n")
    assert vnet("plan", str(bad), state=tmp_path).returncode == 2
    assert vnet("plan", str(bad), "--exit-code", state=tmp_path).returncode == 1


def test_list_of_an_empty_or_absent_state_dir(tmp_path):
    for state in (tmp_path / "absent", tmp_path):
        proc = vnet("list", "-o", "json", state=state)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == []
        proc = vnet("list", state=state)
        assert proc.returncode == 0 and "no topologies applied" in proc.stdout


def test_state_dir_naming_a_file_is_one_line_naming_it(tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    for state in (f, f / "sub"):
        proc = vnet("list", state=state)
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: {state}: ") and "--state-dir" in proc.stderr


@pytest.mark.parametrize(
    "err,path,words",
    [
        (errno.EEXIST, "/s", ("File exists", "not a directory", "--state-dir")),
        (errno.ENOTDIR, "/s/t/x", ("not a directory", "--state-dir")),
        (errno.ENOENT, "/s/t", ("cannot be made there", "--state-dir")),
        (errno.EROFS, "/s/t.lock", ("read-only", "--state-dir")),
        (errno.EACCES, "/s/t", ("root", "--state-dir")),
        (errno.EROFS, "/elsewhere/f", ("read-only", "writable")),
    ],
)
def test_os_problem_names_the_path_and_the_fix(err, path, words):
    import os

    line = cli.os_problem(OSError(err, os.strerror(err), path), "/s")
    assert line.startswith(f"{path}: ") and "\n" not in line
    for w in words:
        assert w in line, line
    if not path.startswith("/s/") and path != "/s":
        assert "--state-dir" not in line


def test_ctrl_c_during_a_step_is_interrupted_130(capsys):
    import argparse

    a = argparse.Namespace(state_dir="/s", exit_code=False)
    code = cli.report(StepFailed(4, "+ tap t", KeyboardInterrupt()), a)
    assert code == 130
    err = capsys.readouterr().err
    assert err == "error: interrupted at step 4 (+ tap t); everything this run changed was undone\n"
    code = cli.report(StepFailed(4, "+ tap t", KeyboardInterrupt(), rolled_back=False), a)
    assert code == 130 and "ROLLBACK INCOMPLETE" in capsys.readouterr().err


def test_a_step_failing_without_a_message_names_the_exception(capsys):
    import argparse

    class Odd(Exception):
        pass

    assert cli.report(StepFailed(2, "+ bridge b", Odd()), argparse.Namespace(state_dir="/s")) == 1
    assert "failed: Odd;" in capsys.readouterr().err


def test_plan_json_shape():
    bridge = make("bridge", "vb-x-n", mark="vnet:x:bridge:n:nat", mac="02:00:00:00:00:01")
    tap_old = make("tap", "vt-x-a", mark="vnet:x:tap:a", master="vb-x-n", mode="tap")
    tap_new = make("tap", "vt-x-a", mark="vnet:x:tap:a", master="vb-x-n", mode="tap", owner=1000)
    gone = make("tap", "vt-x-b", mark="vnet:x:tap:b", mode="tap")
    actions = diff([bridge, tap_new], {r.id: r for r in (tap_old, gone)})

    class Planned:
        topology = "x"
        recovered = None
        warnings = ["VM web restarts"]

    Planned.actions = actions
    data = json.loads(json.dumps(cli.plan_json(Planned, "ns1")))
    assert set(data) == {"topology", "netns", "changes", "actions", "warnings", "recovered"}
    assert data["warnings"] == ["VM web restarts"]
    assert data["topology"] == "x" and data["netns"] == "ns1" and data["changes"] == len(actions) == 3
    by_op = {a["op"]: a for a in data["actions"]}
    assert set(by_op) == {"create", "update", "delete"}
    for a in data["actions"]:
        assert {"op", "kind", "key", "attrs", "summary"} <= set(a)
        assert isinstance(a["attrs"], dict)
    assert by_op["create"]["kind"] == "bridge" and by_op["create"]["attrs"]["mac"] == "02:00:00:00:00:01"
    assert by_op["update"]["changed"] == ["owner"] and by_op["update"]["old"].get("owner") is None
    assert by_op["update"]["attrs"]["owner"] == 1000
    assert by_op["delete"]["key"] == "vt-x-b" and by_op["delete"]["attrs"]["mark"] == "vnet:x:tap:b"


def fake_applied(state: Path, name: str, netns: str, source: dict | None) -> None:
    d = api.state_of(name, netns or None, state)
    d.mkdir(parents=True)
    (d / "claim.json").write_text(json.dumps({"netns": netns, "subnets": {}, "bridges": {"lan0": f"vb-{name}-lan0"}, "uplinks": {}}))
    if source is not None:
        (d / api.SOURCE).write_text(json.dumps(source))


def test_applied_reads_the_state_dir_of_the_target_namespace(tmp_path):
    fake_applied(tmp_path, "one", "ns1", {"file": str(tmp_path / "one.yaml"), "applied_at": 1, "networks": ["lan0"], "endpoints": 3, "vms": 1})
    fake_applied(tmp_path, "two", "ns1", None)
    fake_applied(tmp_path, "other", "ns2", None)
    (api.state_of("stray", "ns1", tmp_path)).mkdir()  # no claim: not a topology
    (api.state_of("one", "ns1", tmp_path).parent / "one.lock").write_text("")
    rows = api.applied("ns1", tmp_path)
    assert [r["name"] for r in rows] == ["one", "two"]
    one, two = rows
    assert one["file"] == str(tmp_path / "one.yaml") and one["file_exists"] is False
    assert (one["endpoints"], one["vms"], one["networks"]) == (3, 1, ["lan0"])
    assert two["file"] is None and two["endpoints"] is None and two["networks"] == ["lan0"]
    assert [r["name"] for r in api.applied(None, tmp_path)] == []


@pytest.mark.parametrize(
    "case,state",
    [("missing", "file_missing"), ("invalid", "file_invalid"), ("renamed", "file_renamed"), ("none", "no_file"), ("journal", "interrupted")],
)
def test_sync_states_that_need_no_host(tmp_path, case, state):
    f = tmp_path / "t.yaml"
    f.write_text({"invalid": "name: one\nnetworks: {n: {mode: hots}}\n", "renamed": "name: two\n"}.get(case, "name: one\n"))
    fake_applied(tmp_path, "one", "", {"file": None if case == "none" else str(f), "endpoints": 0, "vms": 0, "networks": []})
    if case == "missing":
        f.unlink()
    if case == "journal":
        (tmp_path / "one" / "journal.jsonl").write_text("")
    (entry,) = api.applied(None, tmp_path)
    result = api.sync(entry, tmp_path)
    assert result["state"] == state and result["pending"] is None
    assert result["detail"]
    if state in ("file_missing", "no_file"):
        assert "vnet destroy --name one" in result["detail"]


def test_list_json_shape(tmp_path):
    fake_applied(tmp_path, "one", "", {"file": str(tmp_path / "gone.yaml"), "applied_at": 5, "networks": ["lan0"], "endpoints": 2, "vms": 0})
    proc = vnet("list", "-o", "json", state=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row == {
        "name": "one", "netns": None, "file": str(tmp_path / "gone.yaml"), "file_exists": False, "applied_at": 5,
        "networks": ["lan0"], "endpoints": 2, "vms": 0, "interrupted": False,
        "state": "file_missing", "pending": None, "detail": f"{tmp_path / 'gone.yaml'} is gone: vnet destroy --name one removes it",
    }
    proc = vnet("list", state=tmp_path)
    assert proc.returncode == 0 and "file missing" in proc.stdout and "vnet destroy --name one" in proc.stdout


@pytest.mark.parametrize("args, code", [(["validate", str(EXAMPLES / "nat.yaml")], 0), (["validate", "/nonexistent.yaml"], 2),
                                        (["--help"], 0), (["bogus"], 2)])
def test_main_leaves_without_finalization_but_as_an_exit_would(tmp_path, args, code):
    """cli.main ends the process by os._exit (no module teardown), after what an exit must still
    do: a running thread is waited for, atexit functions run, buffered output is written."""
    done = tmp_path / "thread-done"
    script = (
        "import atexit, sys, threading, time\nfrom vnet import cli\n"
        f"def late():\n    time.sleep(0.3)\n    open({str(done)!r}, 'w').close()\n"
        "threading.Thread(target=late).start()\n"
        "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
        "sys.stdout.write('x' * 100000)\n"  # more than a pipe holds: buffered until the end
        f"sys.argv = ['vnet', *{args!r}]\ncli.main()\nprint('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.startswith("x" * 100000) and "not reached" not in proc.stdout
    assert proc.stderr.rstrip().endswith("atexit ran") and done.exists()
