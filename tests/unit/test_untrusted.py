"""Names and files vnet does not control: sandbox names, pid files, lease files, names that
dnsmasq would read as keywords. Real processes and files; no root needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vnet import dnsconf, names, sandbox
from vnet.drivers import dnsmasq, process
from vnet.errors import SpecError, VnetError
from vnet.spec import load_text

# --- sandbox names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../victim", "a/b", "..", "", "UPPER", "x" * 40, "a b", "-x"])
def test_a_sandbox_name_that_could_reach_outside_is_refused(tmp_path, monkeypatch, name):
    state = tmp_path / "a" / "b"
    (state / "sandbox").mkdir(parents=True)
    victim = state / "sandbox" / "../../victim"  # where `sandbox destroy ../../victim` would look
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")

    def must_not_build(*args, **kwargs):
        raise AssertionError("a sandbox with a bad name must not be built")

    monkeypatch.setattr(sandbox, "_build", must_not_build)
    monkeypatch.setattr(sandbox.nsmod, "create", must_not_build)
    monkeypatch.setattr(sandbox.nsmod, "remove", must_not_build)
    for call in (sandbox.destroy, sandbox.create):
        with pytest.raises(VnetError, match="sandbox name"):
            call(name, state_dir=state)
    assert (victim / "precious").read_text() == "keep me\n"


# --- pid files -------------------------------------------------------------------------------------


@pytest.fixture
def bystander(tmp_path):
    """An unrelated process whose command line happens to name a vnet path (an editor, a tail)."""
    marker = tmp_path / "dnsmasq-lan.conf"
    marker.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(marker)])
    try:
        yield proc, marker
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_file_naming_an_unrelated_process_gets_it_no_signal(tmp_path, bystander):
    proc, marker = bystander
    pidfile = tmp_path / "dnsmasq-lan.pid"
    pidfile.write_text(f"{proc.pid}\n")
    assert process.running(pidfile, marker) is None
    process.stop(pidfile, marker, timeout=1)
    process.kill_named(str(marker), timeout=1)
    assert proc.poll() is None, "vnet signalled a process it did not start"


def test_a_recorded_identity_of_another_program_does_not_match(tmp_path, bystander):
    proc, marker = bystander
    pidfile = tmp_path / "dnsmasq-lan.pid"
    pidfile.write_text(f"{proc.pid}\n")
    process.ident_file(pidfile, marker).write_text('{"exe": "/usr/sbin/dnsmasq"}')
    assert process.running(pidfile, marker) is None
    process.stop(pidfile, marker, timeout=1)
    process.kill_named(str(marker), timeout=1)
    assert proc.poll() is None


def test_a_reused_pid_does_not_match_the_recorded_start_time(tmp_path, bystander):
    proc, marker = bystander
    pidfile = tmp_path / "dnsmasq-lan.pid"
    pidfile.write_text(f"{proc.pid}\n")
    exe = os.readlink(f"/proc/{proc.pid}/exe")
    started = process.start_time(proc.pid)
    ident = process.ident_file(pidfile, marker)
    ident.write_text(f'{{"exe": "{exe}", "pid": {proc.pid}, "start": {started - 1}, "boot": "{process._boot_id()}"}}')
    assert process.running(pidfile, marker) is None  # same pid and program, another start: not ours
    ident.write_text(f'{{"exe": "{exe}", "pid": {proc.pid}, "start": {started}, "boot": "{process._boot_id()}"}}')
    assert process.running(pidfile, marker) == proc.pid  # the control: the recorded one is


DAEMON = """
import os, sys, time
if os.fork():
    sys.exit(0)
os.setsid()
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)  # as a daemon does: the starter's pipes close
open(sys.argv[1], "w").write(f"{os.getpid()}\\n")
time.sleep(120)
"""


class _Here:
    """The current namespace: `process.start` only needs `spawn`."""

    def spawn(self, argv):
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_daemons_started_together_all_or_none(tmp_path):
    """start_many: both start; and when one of two fails, the other is stopped too, even before
    it has written its pid file."""
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    pids = process.start_many([(_Here(), [sys.executable, str(script), str(f)], f, None) for f in files], timeout=10)
    try:
        assert [process.running(f) for f in files] == pids and len(set(pids)) == 2
    finally:
        for f in files:
            process.stop(f, timeout=5)
    assert all(_gone_within(pid, 5) for pid in pids)
    slow = tmp_path / "slow.py"  # detaches at once, writes its pid file only after a while
    slow.write_text(DAEMON.replace("open(sys.argv[1]", "time.sleep(3)\nopen(sys.argv[1]"))
    fail = [sys.executable, "-c", "import sys; sys.exit('refused: bad config')"]
    try:
        with pytest.raises(VnetError, match="did not start: refused: bad config"):
            process.start_many([(_Here(), [sys.executable, str(slow), str(files[0])], files[0], None), (_Here(), fail, files[1], None)], timeout=10)
        assert not files[0].exists() and not process.ident_file(files[0]).exists()
        assert not _named(str(slow)), "the daemon that did detach was left running"
    finally:  # whatever failed above, the daemon this test started does not outlive it
        process.stop_pids(_named(str(slow)), timeout=5)


def _named(text: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if text in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace"):
                    out.append(int(p))
            except OSError:
                pass
    return [pid for pid in out if not process.is_gone(pid)]


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not process.is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return process.is_gone(pid)


def test_a_daemon_vnet_started_is_known_and_stopped(tmp_path):
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    pidfile = tmp_path / "vm-x.pid"
    pid = process.start(_Here(), [sys.executable, str(script), str(pidfile)], pidfile, timeout=10)
    try:
        assert process.running(pidfile) == pid
        ident = process.ident_file(pidfile).read_text()
        assert f'"pid": {pid}' in ident and '"start": ' in ident
    finally:
        process.stop(pidfile, timeout=5)
    deadline = time.monotonic() + 5
    while not process.is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.is_gone(pid)
    assert not pidfile.exists() and not process.ident_file(pidfile).exists()


# --- lease files -----------------------------------------------------------------------------------


def test_a_malformed_lease_line_is_skipped(tmp_path):
    (tmp_path / "dnsmasq-lan.leases").write_bytes(
        b"1700000000 52:54:00:aa:bb:01 10.0.0.5 web 01:52:54:00:aa:bb:01\n"
        b"garbage\n"
        b"notanumber 52:54:00:aa:bb:02 10.0.0.6 db *\n"
        b"1700000000 52:54:00:aa:bb:03 10.0.0.999 x *\n"
        b"1700000000 zz 10.0.0.7 y *\n"
        b"duid 00:01:00:01:2c:aa\n"
        b"\xff\xfe\x00 \n"
        b"0 52:54:00:aa:bb:04 10.0.0.8 * *\n"
        b"1700000000 52:54:00:aa:bb:05\n"
    )
    got = [(lease.mac, lease.address, lease.name) for lease in dnsmasq.leases(tmp_path)]
    assert got == [("52:54:00:aa:bb:01", "10.0.0.5", "web"), ("52:54:00:aa:bb:04", "10.0.0.8", "")]


# --- names dnsmasq reads as keywords, and the gateway's name --------------------------------------


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_text(text)
    return [str(p) for p in info.value.problems]


NET = "networks:\n  n: {mode: host, subnet: 10.0.0.0/24, dhcp: true, dns: true}\n"


@pytest.mark.parametrize("name", ["ignore", "infinite"])
def test_an_endpoint_named_like_a_dnsmasq_keyword_is_refused(name):
    ps = _problems(f"name: t\n{NET}endpoints:\n  {name}: {{kind: netns, network: n}}\n")
    assert len(ps) == 1 and ps[0].startswith(f"endpoints.{name}: '{name}' is a keyword to dnsmasq")


def test_a_vm_or_a_reservation_named_like_a_keyword_is_refused():
    ps = _problems(
        "name: t\nnetworks:\n  n: {mode: host, subnet: 10.0.0.0/24, dns: true, dhcp: {hosts: [{mac: '52:54:00:00:00:09', address: 10.0.0.9, name: infinite}]}}\n"
        "vms:\n  ignore: {image: tiny, nics: [{network: n}]}\n"
    )
    assert [p.split(":")[0] for p in ps] == ["vms.ignore", "networks.n.dhcp.hosts.0.name"]


def test_an_endpoint_named_gateway_is_refused_where_the_gateway_has_that_name():
    ps = _problems(f"name: t\n{NET}endpoints:\n  gateway: {{kind: netns, network: n}}\n")
    assert ps == [
        "endpoints.gateway: 'gateway' is the DNS name of networks.n's gateway — choose another name; gateway.<domain> always answers with the gateway's address"
    ]
    # an isolated network has no gateway: the name is free there
    load_text("name: t\nnetworks:\n  n: {mode: isolated, subnet: 10.0.0.0/24, dhcp: true, dns: true}\nendpoints:\n  gateway: {kind: netns, network: n}\n")


def test_a_dns_record_for_the_gateways_name_is_refused():
    ps = _problems("name: t\nnetworks:\n  n: {mode: nat, subnet: 10.0.0.0/24, dns: {records: {gateway.vnet.internal: 10.0.0.9}}}\n")
    assert [p.split(":")[0] for p in ps] == ["networks.n.dns.records.gateway.vnet.internal"]


def test_a_rendered_config_has_one_gateway_record_and_no_keyword_hosts(tmp_path):
    topo = load_text(f"name: t\n{NET}endpoints:\n  web: {{kind: netns, network: n, address: 10.0.0.5/24}}\n  db: {{kind: tap, network: n}}\n")
    text = dnsconf.render(topo, "n", "vb-t-n", "", [], tmp_path)
    assert sum(line.startswith("host-record=gateway.") for line in text.splitlines()) == 1
    for line in text.splitlines():
        if line.startswith("dhcp-host="):
            assert not set(line.split("=", 1)[1].split(",")) & names.DHCP_KEYWORDS


def test_a_sandbox_pid_file_naming_another_process_gets_it_no_signal(tmp_path):
    from vnet import sandbox
    from vnet.drivers import process

    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pidfile = tmp_path / "responder.pid"
        pidfile.write_text(f"{bystander.pid} 12345\n")  # its pid, but not its start time
        sandbox._stop(pidfile)
        assert bystander.poll() is None
        pidfile.write_text(f"{bystander.pid} {process.start_time(bystander.pid)}\n")  # the control: it is ours
        sandbox._stop(pidfile)
        assert bystander.wait(timeout=10) is not None
    finally:
        bystander.kill()
        bystander.wait()


def _until_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not process.is_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _collect(pid: int) -> None:
    """What a test that failed half-way leaves: its child waited for."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def test_a_daemon_that_stopped_by_itself_is_collected_not_left_a_zombie(tmp_path):
    pidfile = tmp_path / "vm-g.pid"
    exe = os.path.realpath(sys.executable)
    pid = os.posix_spawn(exe, [exe, "-c", "pass"], dict(os.environ))  # a child of this process, as QEMU is
    try:
        process.expect(pidfile, exe)
        process.record(pidfile, pid)
        _until_gone(pid)
        assert process.is_gone(pid) and Path(f"/proc/{pid}").exists()  # exited by itself: a zombie
        process.stop(pidfile, timeout=1)
        assert not Path(f"/proc/{pid}").exists()  # collected by stop, the records gone with it
        assert not pidfile.exists() and not process.ident_file(pidfile).exists()
    finally:
        _collect(pid)


def test_a_zombie_the_record_does_not_name_is_not_collected(tmp_path):
    pidfile = tmp_path / "vm-g.pid"
    exe = os.path.realpath(sys.executable)
    pid = os.posix_spawn(exe, [exe, "-c", "pass"], dict(os.environ))
    try:
        process.expect(pidfile, exe)
        process.record(pidfile, pid)
        ident = process.ident_file(pidfile)
        recorded = json.loads(ident.read_text())
        ident.write_text(json.dumps({**recorded, "start": recorded["start"] - 1}))  # another process that had the pid
        _until_gone(pid)
        process.reap(pidfile)
        assert Path(f"/proc/{pid}").exists()  # not the recorded one: left to whoever waits for it
    finally:
        _collect(pid)


# the main thread ends (pthread_exit) while another thread runs on for a second: the process
# shows as a zombie all that time, as QEMU does while its threads exit
LEADER_ENDS_FIRST = """
import ctypes, os, sys, threading, time
threading.Thread(target=lambda: (time.sleep(1.0), os._exit(0))).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_daemon_still_exiting_when_it_shows_as_a_zombie_is_waited_for(tmp_path):
    pidfile = tmp_path / "vm-g.pid"
    exe = os.path.realpath(sys.executable)
    pid = os.posix_spawn(exe, [exe, "-c", LEADER_ENDS_FIRST], dict(os.environ))
    try:
        process.expect(pidfile, exe)
        process.record(pidfile, pid)
        _until_gone(pid)
        assert process.is_gone(pid)  # the leader is a zombie, its other thread not done yet
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # so a single wait does not collect it
        process.stop(pidfile, timeout=1)
        assert not Path(f"/proc/{pid}").exists()  # stop waited until the whole process had exited
    finally:
        _collect(pid)


def test_stopping_a_running_child_collects_it_though_it_shows_as_a_zombie_first(tmp_path):
    # stop_pids once took a zombie leader for gone and returned with the process still exiting
    exe = os.path.realpath(sys.executable)
    pid = os.posix_spawn(exe, [exe, "-c", LEADER_ENDS_FIRST], dict(os.environ))
    try:
        _until_gone(pid)
        process.stop_pids([pid], timeout=5)  # SIGTERM reaches the thread still running
        assert not Path(f"/proc/{pid}").exists()
    finally:
        _collect(pid)
