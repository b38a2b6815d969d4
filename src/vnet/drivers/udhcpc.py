"""A DHCP client inside an endpoint's namespace: busybox udhcpc, supervised like dnsmasq.

udhcpc runs in the foreground of a session of its own (`-f`), known by pid file and identity
(drivers.process). At each DHCP event it runs a script; that script is vnet's own, rendered here
from checked names only (never from a recorded text), written 0700 into the topology's state
directory (root's, 0700: engine.statedir) and named by a fixed path. It puts the lease's address
on the interface with the lease's lifetime, the default route through the router, and the DNS
servers into /etc/netns/<ns>/resolv.conf (what `ip netns exec` shows the namespace as
/etc/resolv.conf); every value that came from the DHCP server is checked before use (a rogue
server on a bridged LAN could send anything). udhcpc renews on its own at half the lease; the
script then refreshes the address's lifetime and writes the lease record again.

The lease record (`dhcpclient-<endpoint>.lease`, `key=value` lines) is what `vnet status` shows
and what delete takes back off the interface.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

from vnet import libdir
from vnet.drivers import process, rtnl
from vnet.drivers.ns import Namespaces
from vnet.errors import VnetError
from vnet.resources import Resource, make, ns_key

ETC_NETNS = Path("/etc/netns")
RESOLV_MARK = "# written by vnet's DHCP client"
RTPROT_DHCP = 16
_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
HEADER = "# vnet-dhcpclient"


def files(state: Path, endpoint: str) -> dict[str, Path]:
    base = state / f"dhcpclient-{endpoint}"
    return {k: Path(f"{base}.{k}") for k in ("sh", "pid", "lease", "log")}


def resource(ns: str, ifname: str, endpoint: str, hostname: str) -> Resource:
    return make("dhcpclient", ns_key(ns, ifname), ns=ns, ifname=ifname, endpoint=endpoint, hostname=hostname)


def _checked(r: Resource) -> tuple[str, str, str, str]:
    """The resource's names, each checked against what vnet itself would make: they are written
    into a script root runs."""
    ns, ifname, endpoint, hostname = (str(r.get(k) or "") for k in ("ns", "ifname", "endpoint", "hostname"))
    for what, value, pattern in (("namespace", ns, _NAME_RE), ("interface", ifname, _IFNAME_RE),
                                 ("endpoint", endpoint, _NAME_RE), ("hostname", hostname, _NAME_RE)):
        if not pattern.fullmatch(value) or value in (".", ".."):
            raise VnetError(f"refusing a DHCP client with {what} {value!r}: not a name vnet makes; run `vnet apply` from the topology")
    return ns, ifname, endpoint, hostname


def _ip_program() -> list[str]:
    import shutil  # here: it brings bz2 and lzma, ~2 ms of every start-up

    found = shutil.which("ip")
    if found:
        return [os.path.realpath(found)]
    return [os.path.realpath(shutil.which("busybox") or "/bin/busybox"), "ip"]


def render(r: Resource, state: Path) -> str:
    """The event script for one client. Pure but for where `ip` is."""
    ns, ifname, endpoint, hostname = _checked(r)
    f = files(state, endpoint)
    q = shlex.quote
    ip = " ".join(q(p) for p in _ip_program())
    resolv_dir = ETC_NETNS / ns
    return f"""#!/bin/sh
{HEADER} ns={ns} ifname={ifname} endpoint={endpoint} hostname={hostname}
# written by vnet, replaced on every apply; udhcpc runs it at each DHCP event ($1)
PATH=/usr/sbin:/usr/bin:/sbin:/bin
IFACE={q(ifname)}
LEASE={q(str(f['lease']))}
RESOLV_DIR={q(str(resolv_dir))}
ip4() ( case "$1" in ''|*[!0-9.]*) exit 1;; esac; IFS=. ; set -- $1; [ $# -eq 4 ] || exit 1
        for o; do [ -n "$o" ] && [ "$o" -le 255 ] || exit 1; done )
num() {{ case "$1" in ''|*[!0-9]*) return 1;; esac; }}
word() {{ case "$1" in ''|*[!A-Za-z0-9.-]*) return 1;; esac; }}
case "$1" in
deconfig)
    {ip} -4 addr flush dev "$IFACE" scope global
    {ip} link set "$IFACE" up
    rm -f "$LEASE"
    ;;
bound|renew)
    ip4 "$ip" && num "$mask" && [ "$mask" -ge 1 ] && [ "$mask" -le 32 ] || {{ echo "vnet: bad lease: ip=$ip mask=$mask" >&2; exit 1; }}
    num "$lease" || lease=forever
    if [ "$1" = bound ]; then {ip} -4 addr flush dev "$IFACE" scope global; fi
    {ip} addr replace "$ip/$mask" dev "$IFACE" valid_lft "$lease" preferred_lft "$lease" || exit 1
    gw=""
    for r in $router; do ip4 "$r" && {{ gw="$r"; break; }}; done
    if [ -n "$gw" ]; then {ip} route replace default via "$gw" dev "$IFACE" proto dhcp; fi
    servers=""
    for d in $dns; do ip4 "$d" && servers="$servers $d"; done
    if [ -n "$servers" ]; then
        mkdir -p "$RESOLV_DIR"
        {{ echo "{RESOLV_MARK} for {ns}"
          if word "$domain"; then echo "search $domain"; fi
          for d in $servers; do echo "nameserver $d"; done; }} > "$RESOLV_DIR/resolv.conf.vnet" && mv -f "$RESOLV_DIR/resolv.conf.vnet" "$RESOLV_DIR/resolv.conf"
    fi
    word "$domain" || domain=""
    ip4 "$serverid" || serverid=""
    {{ echo "event=$1"; echo "address=$ip/$mask"; echo "router=$gw"; echo "dns=${{servers# }}"; echo "domain=$domain"
      echo "lease=$lease"; echo "server=$serverid"; echo "at=$(date +%s)"; }} > "$LEASE.tmp" && mv -f "$LEASE.tmp" "$LEASE"
    ;;
esac
exit 0
"""


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def _private_dir(state: Path) -> None:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = state.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise VnetError(f"{state} is not vnet's alone (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}): "
                        "refusing to keep a script root runs there; chmod go-w it")


def argv(r: Resource, state: Path) -> list[str]:
    _, ifname, endpoint, hostname = _checked(r)
    f = files(state, endpoint)
    return ["busybox", "udhcpc", "-f", "-i", ifname, "-s", str(f["sh"]), "-p", str(f["pid"]),
            "-t", "4", "-T", "2", "-A", "5", "-x", f"hostname:{hostname.replace('_', '-')}"]


def create(nss: Namespaces, state: Path, r: Resource, wait: float = 8.0) -> None:
    """Start the client; wait (bounded) for its first lease. No lease in time is no failure: the
    server may come later, and the client keeps asking."""
    ns, _, endpoint, _ = _checked(r)
    f = files(state, endpoint)
    _private_dir(state)
    _write_private(f["sh"], render(r, state), 0o700)
    f["lease"].unlink(missing_ok=True)
    pid = process.spawn(nss.get(ns), argv(r, state), f["pid"], f["log"], marker=f["sh"])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not f["lease"].exists():
        # by the pid, not the pid file: udhcpc (-p) rewrites that file, and caught empty it
        # would read as a client that exited
        if process.is_gone(pid):
            raise VnetError(f"the DHCP client of endpoint {endpoint} exited: see {f['log']}")
        time.sleep(0.05)


def delete(nss: Namespaces, state: Path, r: Resource) -> None:
    ns, ifname, endpoint, _ = _checked(r)
    f = files(state, endpoint)
    process.stop(f["pid"], marker=f["sh"])
    lease = read_lease(f["lease"])
    if lease and os.path.exists(f"/run/netns/{ns}"):
        _unconfigure(nss, ns, ifname, lease)
    resolv = ETC_NETNS / ns / "resolv.conf"
    try:
        if resolv.read_text().startswith(RESOLV_MARK):
            resolv.unlink()
            (ETC_NETNS / ns).rmdir()  # only when nothing else is in it
    except OSError:
        pass
    for key in ("lease", "sh", "pid"):
        f[key].unlink(missing_ok=True)


def _unconfigure(nss: Namespaces, ns: str, ifname: str, lease: dict[str, str]) -> None:
    """Take the lease's address and route back off the interface (the namespace may outlive the
    client: a borrowed one, or a topology that now gives a static address)."""
    try:
        n = nss.get(ns)
        link = n.nl.link(ifname)
        if link is None:
            return
        address, _, plen = lease.get("address", "").partition("/")
        if lease.get("router"):
            try:
                n.nl.request(*rtnl.del_route("0.0.0.0", 0, oif=link.index, gateway=lease["router"], proto=RTPROT_DHCP))
            except rtnl.RtnlError:
                pass
        if address and plen.isdigit():
            try:
                n.nl.request(*rtnl.del_addr(link.index, address, int(plen)))
            except rtnl.RtnlError:
                pass
    except VnetError:
        pass  # the namespace went meanwhile: nothing left to take back


def read_lease(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def observe(state: Path) -> list[Resource]:
    out = []
    for script in sorted(libdir.named(state, "dhcpclient-", ".sh")):
        endpoint = script.name[len("dhcpclient-"):-len(".sh")]
        if process.running(files(state, endpoint)["pid"], marker=script) is None:
            continue  # stopped or crashed: apply starts it again
        try:
            header = next(line for line in script.read_text().splitlines() if line.startswith(HEADER))
        except (OSError, StopIteration):
            continue
        fields = dict(w.split("=", 1) for w in header[len(HEADER):].split() if "=" in w)
        out.append(resource(fields.get("ns", ""), fields.get("ifname", ""), fields.get("endpoint", endpoint), fields.get("hostname", "")))
    return out


def sweep(state: Path, r: Resource) -> None:
    """A client started by a step cut short before its pid was recorded: found by its script."""
    _, _, endpoint, _ = _checked(r)
    process.kill_named(str(files(state, endpoint)["sh"]))


def leases(state: Path) -> list[dict]:
    """What each client of the topology holds, for `vnet status`."""
    out = []
    for path in sorted(libdir.named(state, "dhcpclient-", ".lease")):
        lease = read_lease(path)
        if not lease:
            continue
        endpoint = path.name[len("dhcpclient-"):-len(".lease")]
        expires = None
        if lease.get("lease", "").isdigit() and lease.get("at", "").isdigit():
            expires = int(lease["at"]) + int(lease["lease"])
        out.append({"endpoint": endpoint, "address": lease.get("address"), "router": lease.get("router") or None,
                    "dns": lease.get("dns", "").split(), "server": lease.get("server") or None, "expires": expires,
                    "renewed": lease.get("event") == "renew"})
    return out
