"""One network over three hosts with VXLAN and `control: evpn`: vnet's own FRR (zebra + bgpd) on
each host, iBGP between them, remote MACs in the vxlan FDB from EVPN routes. Real daemons, real
BGP sessions, real traffic; all three hosts end as they began."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from vnet import api, check, frrconf, names, sandbox, spec
from vnet.drivers import ns as nsmod
from vnet.drivers import process
from vnet.kinds import frr as frrkind

from tests.integration import snapshot
from tests.integration.test_overlay import Hosts, df_ping, fdb, flood, hosts, leased_from_h1, topology, wait_for  # noqa: F401 — hosts: the three-host fixture

if frrkind.installed():
    if os.environ.get("CI"):
        raise RuntimeError(f"FRR is missing in CI ({frrkind.installed()}): scripts/setup.sh installs the frr package")
    pytest.skip(f"FRR is not installed ({frrkind.installed()} missing): apt-get install frr", allow_module_level=True)

ADDR = {"h1": "198.18.1.2", "h2": "198.18.2.2", "h3": "198.18.3.2"}


def evpn_topology(name: str, hosts: tuple[str, ...] = ("h1", "h2", "h3")) -> str:
    return topology(name, hosts=hosts).replace("port: 4789}", "port: 4789, control: evpn}") + "evpn: {asn: 65010}\n"


def bgp_peers(hosts: Hosts, host: str) -> dict[str, str]:
    """Peer address → BGP state, read from the host's FRR through its own vty sockets."""
    state = api.state_of(hosts.name, host, hosts.state)
    proc = subprocess.run([*frrkind.vtysh(state), "-c", "show bgp l2vpn evpn summary json"], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return {}
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return {}
    return {p: v.get("state", "") for p, v in data.get("peers", {}).items()}


def uptime_ms(hosts: Hosts, host: str) -> dict[str, int]:
    """Peer address → how long its BGP session has been up (ms; a restarted session or bgpd
    starts again from 0), for the Established sessions of the host's FRR."""
    state = api.state_of(hosts.name, host, hosts.state)
    proc = subprocess.run([*frrkind.vtysh(state), "-c", "show bgp l2vpn evpn summary json"], capture_output=True, text=True, timeout=10)
    peers = json.loads(proc.stdout).get("peers", {}) if proc.returncode == 0 else {}
    return {p: v["peerUptimeMsec"] for p, v in peers.items() if v.get("state") == "Established"}


def remote(host: str, dev: str, mac: str) -> str | None:
    """The remote address zebra installed for `mac` on the vxlan device (extern_learn), if any."""
    for line in fdb(host, dev):
        f = line.split()
        if f[0] == mac and "dst" in f and "extern_learn" in f:
            return f[f.index("dst") + 1]
    return None


def frr_pids(host: str) -> list[int]:
    zebra, bgpd = os.path.realpath(frrkind.ZEBRA), os.path.realpath(frrkind.BGPD)
    out = []
    for pid in nsmod.pids_in(host):
        try:
            if os.readlink(f"/proc/{pid}/exe") in (zebra, bgpd):
                out.append(pid)
        except OSError:
            pass
    return out


def connects(ns: str, address: str, port: int) -> bool:
    """Whether a TCP connection from `ns` to address:port is accepted within a second."""
    import socket

    def attempt() -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect((address, port))
                return True
            except OSError:
                return False

    n = nsmod.Namespace(ns)
    try:
        return n.call(attempt)
    finally:
        n.close()


def test_three_hosts_evpn(hosts):
    t = hosts.name
    text = evpn_topology(t)
    before = {h: snapshot.take(h) for h in hosts.sb.host_names}
    tmp_before = set(frrkind.TMP_BASE.iterdir()) if frrkind.TMP_BASE.exists() else set()
    a, b = f"{t}-a", f"{t}-b"
    vx = f"vx-{t}-lan"
    mac = {n: names.mac(t, n) for n in "abc"}

    for h in (hosts.h1, hosts.h2):
        hosts.apply(h, text)
    # measured on the last host to join: from the start of its apply until zebra has put the
    # first remote MAC into its vxlan FDB (a's, on h1, from a type-2 route), and until h1 has b's
    # (h3's MAC). The endpoints have sent nothing: EVPN learns them from the bridges they sit on.
    started = time.monotonic()
    hosts.apply(hosts.h3, text)
    applied = time.monotonic()
    assert wait_for(lambda: remote(hosts.h3, vx, mac["a"]) == ADDR["h1"], 60), fdb(hosts.h3, vx)
    learned_here = time.monotonic()
    assert wait_for(lambda: remote(hosts.h1, vx, mac["b"]) == ADDR["h3"], 60), fdb(hosts.h1, vx)
    learned_there = time.monotonic()
    print(f"\nEVPN: apply on h3 {applied - started:.2f}s; first remote MAC in h3's FDB {learned_here - started:.2f}s after its apply began, "
          f"h3's MAC in h1's FDB {learned_there - started:.2f}s")

    # vnet's FRR on each host: its own two daemons, counted as vnet's, sessions to both other hosts
    for h in hosts.sb.host_names:
        state = api.state_of(t, h, hosts.state)
        pids = set(frr_pids(h))
        assert len(pids) == 2 and pids <= process.recorded_pids(state), h
        assert (state / "frr.conf").read_text().startswith("! vnet: FRR of topology")
        assert "router bgp 65010" in (state / "frr.conf").read_text()
        others = sorted(addr for name, addr in ADDR.items() if not h.endswith(name))
        assert wait_for(lambda: sorted(p for p, s in bgp_peers(hosts, h).items() if s == "Established") == others, 60), (h, bgp_peers(hosts, h))
    for h in hosts.sb.host_names:
        assert api.plan(spec.load_text(text), netns=h, state_dir=hosts.state).actions == [], h
    # `vnet status` shows each BGP session, read from FRR
    report = api.status(spec.load_text(text), netns=hosts.h1, state_dir=hosts.state)
    assert report["in_sync"], report["notes"]
    from tests.integration.test_status import SCHEMA, validate

    assert validate(json.loads(json.dumps(report, default=str)), SCHEMA) == []
    assert [(s["peer"], s["state"]) for s in report["bgp"]] == [(ADDR["h2"], "Established"), (ADDR["h3"], "Established")]
    assert all(s["received"] > 0 for s in report["bgp"]), report["bgp"]
    path = hosts.state.parent / "evpn.yaml"
    path.write_text(text)
    cli = subprocess.run([".venv/bin/vnet", "--netns", hosts.h1, "--state-dir", str(hosts.state), "status", str(path)],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert "BGP sessions (EVPN)" in cli.stdout and "Established" in cli.stdout, cli.stdout + cli.stderr
    assert f"overlay of lan: vxlan {vx} (up), VNI 4242" in cli.stdout and "FDB entries" in cli.stdout, cli.stdout

    # EVPN fills the FDB: no static flood entries from vnet, flood lists from type-3 routes and
    # remote MACs from type-2 routes, as extern_learn entries that zebra put there
    assert wait_for(lambda: flood(hosts.h1, vx) == [ADDR["h2"], ADDR["h3"]], 30), fdb(hosts.h1, vx)
    assert wait_for(lambda: remote(hosts.h3, vx, mac["a"]) == ADDR["h1"], 30), fdb(hosts.h3, vx)
    assert wait_for(lambda: remote(hosts.h1, vx, mac["b"]) == ADDR["h3"], 30), fdb(hosts.h1, vx)
    assert wait_for(lambda: remote(hosts.h1, vx, mac["c"]) == ADDR["h2"], 30), fdb(hosts.h1, vx)
    # `vnet status`: the vxlan device, and each peer with its FDB entries (type-3 flood + type-2 MACs)
    ov = api.status(spec.load_text(text), netns=hosts.h1, state_dir=hosts.state)["networks"][0]["overlay"]
    assert (ov["device"], ov["present"], ov["host"], ov["control"]) == (vx, True, "h1", "evpn")
    assert [p["address"] for p in ov["peers"] if p["flood"] and p["fdb"] >= 2] == [ADDR["h2"], ADDR["h3"]], ov

    # BGP is taken from the other hosts only: the LAN router (no host) is dropped
    assert connects(hosts.h2, ADDR["h1"], 179) and not connects(hosts.sb.lan, ADDR["h1"], 179)

    port = subprocess.run(["ip", "-n", hosts.h1, "-d", "link", "show", vx], capture_output=True, text=True, check=True).stdout
    assert " learning off " in port and " neigh_suppress on " in port and " nolearning " in port, port

    # real traffic between the endpoints on h1 and h3: ping and TCP
    assert check.ping(a, "10.90.0.11", count=2)
    with check.Listener(b, 7000):
        assert check.tcp_line(a, "10.90.0.11", 7000) == "10.90.0.10"
    with check.Listener(a, 7001):
        assert check.tcp_line(b, "10.90.0.10", 7001) == "10.90.0.11"

    # a full-MTU packet with DF set crosses the overlay; one byte more does not (no black hole)
    assert df_ping(a, "10.90.0.11", 1450)
    assert not df_ping(a, "10.90.0.11", 1451)
    # egress from h3's endpoint leaves through h3 (masqueraded there), and h1's through h1
    assert check.tcp_line(b, sandbox.WAN_ADDR, sandbox.WAN_PORT) == ADDR["h3"]
    assert check.tcp_line(a, sandbox.WAN_ADDR, sandbox.WAN_PORT) == ADDR["h1"]
    # DHCP on h2 from the dnsmasq on h1, over the overlay; a.lab.test resolves through it
    c = f"{t}-c"
    leased_from_h1(hosts, c)
    assert check.ping(c, "10.90.0.10")

    # a new endpoint on h3: time until its MAC is in h1's FDB (it sends one ping, as a guest would)
    more = text.replace("endpoints:\n", "endpoints:\n  d: {kind: netns, network: lan, address: 10.90.0.12/24, host: h3}\n")
    mac["d"] = names.mac(t, "d")
    started = time.monotonic()
    hosts.apply(hosts.h3, more)
    applied = time.monotonic()
    # on a loaded machine the first echo can be lost while the overlay learns of d: a guest retries, so does this
    assert wait_for(lambda: check.ping(f"{t}-d", "10.90.0.10"), 30)
    assert wait_for(lambda: remote(hosts.h1, vx, mac["d"]) == ADDR["h3"], 30), fdb(hosts.h1, vx)
    print(f"EVPN: new endpoint on h3: apply {applied - started:.2f}s, its MAC in h1's FDB {time.monotonic() - started:.2f}s after the apply began")
    hosts.apply(hosts.h3, text)
    assert wait_for(lambda: remote(hosts.h1, vx, mac["d"]) is None, 30), fdb(hosts.h1, vx)  # withdrawn with the endpoint

    # a killed FRR is repaired by the next apply
    state1 = api.state_of(t, hosts.h1, hosts.state)
    bgpd_pid = int((state1 / "frr" / "bgpd.pid").read_text())
    process.stop_pids([bgpd_pid])
    assert [act for act in api.plan(spec.load_text(text), netns=hosts.h1, state_dir=hosts.state).actions]
    hosts.apply(hosts.h1, text)
    assert len(frr_pids(hosts.h1)) == 2 and bgpd_pid not in frr_pids(hosts.h1)
    assert wait_for(lambda: sorted(p for p, s in bgp_peers(hosts, hosts.h1).items() if s == "Established") == [ADDR["h2"], ADDR["h3"]], 60)
    assert wait_for(lambda: remote(hosts.h1, vx, mac["b"]) == ADDR["h3"], 30), fdb(hosts.h1, vx)
    assert wait_for(lambda: remote(hosts.h3, vx, mac["a"]) == ADDR["h1"] and ADDR["h1"] in flood(hosts.h3, vx), 30), fdb(hosts.h3, vx)
    assert check.ping(a, "10.90.0.11")

    # h2 leaves hosts: on re-apply h1 and h3 drop their BGP session to it (h2 still runs), so its
    # routes are withdrawn: its MACs and its flood entry leave their FDB. The changed config is
    # applied to the running FRR in place: the same daemons, the h1–h3 session never goes down
    # (its uptime goes on), b's MAC never leaves h1's FDB and a and b go on talking.
    since = {h: uptime_ms(hosts, h) for h in (hosts.h1, hosts.h3)}
    t_since = time.monotonic()
    assert since[hosts.h1].keys() == {ADDR["h2"], ADDR["h3"]} and since[hosts.h3].keys() == {ADDR["h1"], ADDR["h2"]}, since
    daemons = {h: sorted(frr_pids(h)) for h in (hosts.h1, hosts.h3)}
    text2 = evpn_topology(t, hosts=("h1", "h3"))
    for h in (hosts.h1, hosts.h3):
        hosts.apply(h, text2)
        assert remote(hosts.h1, vx, mac["b"]) == ADDR["h3"] and remote(hosts.h3, vx, mac["a"]) == ADDR["h1"], fdb(hosts.h1, vx)
    assert {h: sorted(frr_pids(h)) for h in (hosts.h1, hosts.h3)} == daemons
    # up all along: at least as long as before plus the time since (less a second of rounding)
    elapsed = int((time.monotonic() - t_since) * 1000)
    for h, peer in ((hosts.h1, ADDR["h3"]), (hosts.h3, ADDR["h1"])):
        now = uptime_ms(hosts, h)
        assert now.get(peer, -1) >= since[h][peer] + elapsed - 1000, (h, since[h], now, elapsed)
    assert check.ping(a, "10.90.0.11")
    assert nsmod.exists(c)
    for h in (hosts.h1, hosts.h3):
        assert ADDR["h2"] not in (api.state_of(t, h, hosts.state) / "frr.conf").read_text(), h
        assert wait_for(lambda: ADDR["h2"] not in bgp_peers(hosts, h), 10), bgp_peers(hosts, h)
        assert wait_for(lambda: remote(h, vx, mac["c"]) is None and ADDR["h2"] not in flood(h, vx), 30), fdb(h, vx)
    assert remote(hosts.h1, vx, mac["b"]) == ADDR["h3"] and remote(hosts.h3, vx, mac["a"]) == ADDR["h1"], fdb(hosts.h1, vx)
    assert api.plan(spec.load_text(text2), netns=hosts.h1, state_dir=hosts.state).actions == []
    assert check.ping(a, "10.90.0.11")
    # destroy on h2 leaves h1 and h3 working
    hosts.destroy(hosts.h2)
    assert not nsmod.exists(c) and nsmod.exists(a) and nsmod.exists(b)
    assert check.ping(a, "10.90.0.11")
    with check.Listener(b, 7002):
        assert check.tcp_line(a, "10.90.0.11", 7002) == "10.90.0.10"

    # destroy on every host: no FRR process, file, socket or link left
    for h in hosts.sb.host_names:
        hosts.destroy(h)
    for h in hosts.sb.host_names:
        assert frr_pids(h) == [], h
        state = api.state_of(t, h, hosts.state)
        assert not list(state.glob("frr*")), (h, list(state.glob("frr*")))
        assert not (frrkind.RUN_BASE / frrconf.pathspace(state)).exists()
        assert snapshot.take(h) == before[h], h
    tmp_after = set(frrkind.TMP_BASE.iterdir()) if frrkind.TMP_BASE.exists() else set()
    assert not {p for p in tmp_after - tmp_before if p.name.split(".")[0] in ("zebra", "bgpd")}
    assert not any(n.startswith(f"{t}-") for n in nsmod.listed())


def test_route_reflector(hosts):
    """`evpn: {route_reflectors: [h1]}`: h2 and h3 peer with h1 only, and still learn each other's
    MACs (reflected by h1) and reach each other; destroy on h3 leaves h1 and h2 working."""
    t = hosts.name
    text = evpn_topology(t).replace("evpn: {asn: 65010}", "evpn: {asn: 65010, route_reflectors: [h1]}")
    text = text.replace("  c: {kind: netns, network: lan, host: h2}", "  c: {kind: netns, network: lan, address: 10.90.0.13/24, host: h2}")
    before = {h: snapshot.take(h) for h in hosts.sb.host_names}
    for h in hosts.sb.host_names:
        hosts.apply(h, text)
    vx = f"vx-{t}-lan"
    mac = {n: names.mac(t, n) for n in "abc"}
    want = {hosts.h1: [ADDR["h2"], ADDR["h3"]], hosts.h2: [ADDR["h1"]], hosts.h3: [ADDR["h1"]]}
    for h, peers in want.items():
        assert wait_for(lambda: sorted(p for p, s in bgp_peers(hosts, h).items() if s == "Established") == peers, 60), (h, bgp_peers(hosts, h))
    assert wait_for(lambda: remote(hosts.h3, vx, mac["c"]) == ADDR["h2"], 30), fdb(hosts.h3, vx)
    assert wait_for(lambda: remote(hosts.h2, vx, mac["b"]) == ADDR["h3"], 30), fdb(hosts.h2, vx)
    assert wait_for(lambda: flood(hosts.h2, vx) == [ADDR["h1"], ADDR["h3"]], 30), fdb(hosts.h2, vx)
    c, b, a = f"{t}-c", f"{t}-b", f"{t}-a"
    assert check.ping(c, "10.90.0.11", count=2)
    with check.Listener(b, 7003):
        assert check.tcp_line(c, "10.90.0.11", 7003) == "10.90.0.13"
    # destroy on h3 (still in hosts:) leaves h1 and h2 working
    hosts.destroy(hosts.h3)
    assert not nsmod.exists(b)
    assert wait_for(lambda: remote(hosts.h2, vx, mac["b"]) is None, 30), fdb(hosts.h2, vx)
    assert check.ping(c, "10.90.0.10", count=2)
    for h in hosts.sb.host_names:
        hosts.destroy(h)
    for h in hosts.sb.host_names:
        assert frr_pids(h) == [], h
        assert snapshot.take(h) == before[h], h


def test_missing_frr_is_a_clear_error_and_no_change(hosts, monkeypatch):
    monkeypatch.setattr(frrkind, "ZEBRA", Path("/nonexistent/frr/zebra"))
    before = snapshot.take(hosts.h1)
    with pytest.raises(Exception, match="control: evpn needs FRR, and /nonexistent/frr/zebra is missing: install the frr package"):
        hosts.apply(hosts.h1, evpn_topology(hosts.name))
    assert snapshot.take(hosts.h1) == before
    assert frr_pids(hosts.h1) == []


def test_a_foreign_zebra_in_the_target_is_refused(hosts, tmp_path):
    """vnet never runs beside (or edits) an FRR it did not start: the apply fails and changes nothing."""
    own = tmp_path / "foreign"
    own.mkdir(mode=0o700)
    (own / "zebra.conf").write_text("hostname foreign\n")
    pidfile = own / "zebra.pid"
    subprocess.run(["ip", "netns", "exec", hosts.h2, str(frrkind.ZEBRA), "-d", "-N", f"foreign{os.getpid()}", "-f", str(own / "zebra.conf"),
                    "-i", str(pidfile), "-z", str(own / "zserv.api"), "--vty_socket", str(own), *frrkind.RUN_AS], check=True, capture_output=True)
    assert wait_for(pidfile.exists, 10)
    pid = int(pidfile.read_text())
    try:
        before = snapshot.take(hosts.h2)
        with pytest.raises(Exception, match="a zebra that this topology's vnet did not start runs in namespace"):
            hosts.apply(hosts.h2, evpn_topology(hosts.name))
        assert snapshot.take(hosts.h2) == before
        assert not process.is_gone(pid)  # left alone
    finally:
        held = frrkind._tmpdirs(pid)
        process.stop_pids([pid])
        for d in held:
            import shutil

            shutil.rmtree(d, ignore_errors=True)
        try:
            (frrkind.RUN_BASE / f"foreign{os.getpid()}").rmdir()
        except OSError:
            pass


def test_a_run_killed_while_starting_frr_is_undone_by_the_next_command(hosts):
    """kill -9 of apply before, inside (after zebra, after bgpd) and after the FRR step: the next
    command undoes it, and no FRR process, file or crash-log directory is left."""
    from tests.integration.test_recovery import FAULTY, FAULTY_ENV

    t = hosts.name
    path = hosts.state.parent / "evpn.yaml"
    path.write_text(evpn_topology(t))
    kinds = [a.resource.kind for a in api.plan(spec.load(path), netns=hosts.h1, state_dir=hosts.state).actions]
    k = kinds.index("frr") + 1
    before = snapshot.take(hosts.h1)
    tmp_before = set(frrkind.TMP_BASE.iterdir()) if frrkind.TMP_BASE.exists() else set()
    state = api.state_of(t, hosts.h1, hosts.state)
    hosts.applied.add(hosts.h1)
    for point in (f"{k}", f"{k}:call1", f"{k}:call2", f"{k}:after"):
        env = {**os.environ, **FAULTY_ENV, "VNET_KILL_AT": point}
        proc = subprocess.run([*FAULTY, "--netns", hosts.h1, "--state-dir", str(hosts.state), "apply", str(path)],
                              capture_output=True, text=True, timeout=60, env=env)
        assert proc.returncode == -9, (point, proc.returncode, proc.stderr)
        if point.endswith(("call1", "call2", "after")):
            assert frr_pids(hosts.h1), f"kill at {point}: FRR was not running yet"
        proc = subprocess.run([".venv/bin/vnet", "--netns", hosts.h1, "--state-dir", str(hosts.state), "plan", str(path)],
                              capture_output=True, text=True, timeout=60)
        assert "interrupted run" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert frr_pids(hosts.h1) == [], f"kill at {point}: FRR left running"
        assert not list(state.glob("frr*")), (point, list(state.glob("frr*")))
        assert snapshot.take(hosts.h1) == before, f"kill at {point}: host not restored"
    tmp_after = set(frrkind.TMP_BASE.iterdir()) if frrkind.TMP_BASE.exists() else set()
    assert not {p for p in tmp_after - tmp_before if p.name.split(".")[0] in ("zebra", "bgpd")}
