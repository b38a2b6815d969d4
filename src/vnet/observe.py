"""Read the host and return what a topology owns there, as resources, plus the facts the
preflight checks need (every link and its owner, host routes, nft tables).

Ownership is read off the objects: a link's ifalias mark, a namespace's `lo` mark, a route's
protocol number, vnet's table comment; sysctls from the record vnet keeps of what it changed.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

from vnet import kinds, names, readings
from vnet.drivers import iptables, readahead, rtnl
from vnet.drivers import ns as nsmod
from vnet.drivers.ns import Namespace, Namespaces
from vnet.kinds.route import observed_routes
from vnet.readings import LinkInfo, link_infos, marked_routes
from vnet.resources import Resource, make

if TYPE_CHECKING:
    from collections.abc import Callable


class Observation:
    """What observing the target found: the topology's resources and the host around them."""

    __slots__ = ("topology", "owned", "links", "routes", "default_uplink", "tables", "namespaces", "filter")
    topology: str
    owned: dict[str, Resource]
    links: dict[str, LinkInfo]  # every link of the target namespace
    routes: list[tuple[ipaddress.IPv4Network, str | None]]  # (dst, dev)
    default_uplink: str | None
    tables: list[dict]
    namespaces: dict[str, str | None]  # name → owning topology (None: foreign)
    filter: iptables.Filter  # iptables' filter table (engine reads it)

    def __init__(self, topology: str) -> None:
        self.topology = topology
        self.owned = {}
        self.links = {}
        self.routes = []
        self.default_uplink = None
        self.tables = []
        self.namespaces = {}
        self.filter = iptables.Filter()

    def __repr__(self) -> str:
        return f"Observation(topology={self.topology!r}, owned={len(self.owned)} resources, links={sorted(self.links)!r})"

    def add(self, r: Resource) -> None:
        self.owned[r.id] = r


def read_links(ns: Namespace) -> dict[str, LinkInfo]:
    """The namespace's links by name, marks parsed (and its name → index cache set)."""
    links = ns.nl.links()
    ns.indexes = {li.ifname: li.index for li in links}
    return link_infos(links)


STEAL = 8  # namespaces vnet reads itself at a time, from the last, while the child reads from the first


def _by_index(addrs) -> dict[int, list[rtnl.Addr]]:
    out: dict[int, list[rtnl.Addr]] = {}
    for a in addrs:
        out.setdefault(a.index, []).append(a)
    return out


class View:
    """The host as one observation reads it: each namespace's links and addresses dumped once and
    shared by every kind that asks."""

    def __init__(self, nss: Namespaces, topology: str, state: Path, listed: list[str] | None = None):
        self.nss = nss
        self.topology = topology
        self.state = state
        self.listed = set(nsmod.listed() if listed is None else listed)  # namespaces that can be entered, as of now
        self._links: dict[str, dict[str, LinkInfo]] = {}
        self._addrs: dict[str, dict[int, list[rtnl.Addr]]] = {}
        self._routes: dict[str, list[rtnl.Route]] = {}
        self._ahead: readahead.ReadAhead | None = None
        self._ahead_of: frozenset[str] = frozenset()

    def exists(self, ns: str) -> bool:
        """A namespace of that name can be entered (as listed when this observation began)."""
        return ns in self.listed

    def read_ahead(self, names: list[str], ahead: readahead.ReadAhead | None = None) -> None:
        """Have these namespaces read on the other core now (drivers/readahead.py), or take over
        `ahead`, reading them already, for links(), addresses() and routes() to take when first
        asked of one of them."""
        self._ahead = ahead or readahead.ReadAhead(names, readings.read_namespace)
        self._ahead_of = frozenset(self._ahead.names)

    def _take_ahead(self, ns: str) -> None:
        """Take in everything the child has yet to hand over (`ns` is among it)."""
        ahead = self._ahead
        if ahead is None or ns not in self._ahead_of:
            return
        # (the namespaces' name → index caches stay empty: a no-op never uses them, and a change
        # looks an index up when it needs one)
        for name, read in ahead.take().items():
            self._adopt(name, read)

    def _adopt(self, name: str, read: tuple[list, list, list]) -> None:
        """A namespace as a child read it (readings.read_namespace), for links(), addresses() and
        routes()."""
        links, addrs, routes = read
        Addr, Route = rtnl.Addr, rtnl.Route
        self._links[name] = {f[0]: LinkInfo(*f) for f in links}
        self._addrs[name] = _by_index(Addr(*f) for f in addrs)
        self._routes[name] = [Route(*f) for f in routes]

    def read_rest(self, names: list[str], arrived: Callable[[list[str]], None] = lambda names: None) -> None:
        """Read now the namespaces of `names` that no child reads; and of those the child reads,
        the last ones, from the end, for as long as it has not reached them: the two meet wherever
        the child is by then, so that neither waits long for the other, whichever core was the
        busier. Then take the child's answers up to there, and stop it. `arrived` hears of each
        few namespaces as they are read or handed over, to work on them meanwhile."""
        listed = self.listed

        def read_here(candidates) -> None:
            own = [n for n in candidates if n in listed and n not in self._links]
            self._read_own(own)
            arrived(own)

        read_here(n for n in names if n not in self._ahead_of)
        ahead = self._ahead
        if ahead is None:
            return
        order, end = ahead.names, len(ahead.names)
        while True:
            got = ahead.take(wait=False)
            for name, read in got.items():
                self._adopt(name, read)
            arrived(list(got))
            if ahead.given >= end:
                break
            if got:
                continue  # worked on what came: the child may have handed more over meanwhile
            start = max(ahead.given, end - STEAL)
            read_here(order[start:end])
            end = start
        ahead.close()  # what it reads now, vnet has read itself
        read_here(order[:end])  # what it did not hand over (it died) or could not read

    def _read_own(self, names: list[str]) -> None:
        """Read these namespaces here, whether a child reads them too or not."""
        if not names:
            return
        self.nss.open(names)
        for ns in names:
            namespace = self.nss.get(ns)
            self._links[ns] = read_links(namespace)
            self._addrs[ns] = _by_index(namespace.nl.addrs())
            self._routes[ns] = marked_routes(namespace.nl)

    def take_target(self) -> list[rtnl.Route] | None:
        """The target namespace as the read-ahead read it where it was asked to (a head start's:
        readings.read_target), for links(), addresses() and routes(). Returns the main table's
        routes; None where it was not read (vnet reads the target itself, as it is asked)."""
        read = self._ahead.take_target() if self._ahead is not None else None
        if read is None:
            return None
        *inside, main = read
        self._adopt("", inside)
        self.nss.host.indexes = {li.name: li.index for li in self._links[""].values()}
        return [rtnl.Route(*f) for f in main]

    def close(self) -> None:
        """Stop a read-ahead whose answers were not taken, and reap its child."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def links(self, ns: str) -> dict[str, LinkInfo]:
        if ns not in self._links:
            self._take_ahead(ns)
            if ns not in self._links:
                self._links[ns] = read_links(self.nss.get(ns))
        return self._links[ns]

    def addresses(self, ns: str) -> dict[int, list[rtnl.Addr]]:
        """Every address of the namespace by ifindex: one dump, not one per link."""
        if ns not in self._addrs:
            self._take_ahead(ns)
            if ns not in self._addrs:
                self._addrs[ns] = _by_index(self.nss.get(ns).nl.addrs())
        return self._addrs[ns]

    def routes(self, ns: str) -> list[rtnl.Route]:
        """The namespace's routes with vnet's protocol number."""
        if ns not in self._routes:
            self._take_ahead(ns)
            if ns not in self._routes:
                self._routes[ns] = marked_routes(self.nss.get(ns).nl)
        return self._routes[ns]

    @staticmethod
    def alias(li: LinkInfo) -> str:
        """The mark as it stands in the link's ifalias."""
        assert li.mark is not None
        return ":".join((names.MARK, *li.mark[:3], *li.mark[3]))


class Observing:
    """An observation under way. Made, it has read the host (its links and routes, and the kinds
    that observe early: what desired state needs of the host is in `obs` by then) and set a child
    reading the topology's namespaces on the other core; `finish()` reads the rest and returns
    the whole Observation. Between the two the caller works out the desired state, so that the
    namespaces are read meanwhile, not before it. A child reading them since the namespaces were
    `listed` (a head start: headstart.py) is taken over as `ahead`."""

    def __init__(self, nss: Namespaces, topology: str, state_dir: Path, extra_netns: tuple[str, ...] = (), target: str = "",
                 ahead: readahead.ReadAhead | None = None, listed: list[str] | None = None) -> None:
        self.obs = obs = Observation(topology)
        self.target = target  # names.target_id of the target namespace
        if listed is None:
            listed = nsmod.listed()
        self.view = view = View(nss, topology, state_dir, listed)
        # the namespaces this observation reads, read ahead from the start: the topology's
        # namespaces and those it borrows (a veth's peer anywhere else is read when it is met)
        self.mine = sorted({n for n in listed if n.startswith(f"{topology}-")} | (set(extra_netns) & view.listed))
        view.read_ahead(self.mine, ahead)
        try:
            main = view.take_target()
            obs.links = view.links("")
            if main is None:
                main = nss.host.nl.routes(table=rtnl.RT_TABLE_MAIN)
            by_index = {li.index: li for li in obs.links.values()}
            for rt in main:
                dev = by_index.get(rt.oif)
                if rt.dst_len == 0:
                    if obs.default_uplink is None and dev is not None:
                        obs.default_uplink = dev.name
                    continue
                obs.routes.append((ipaddress.IPv4Network(f"{rt.dst}/{rt.dst_len}", strict=False), dev.name if dev else None))
            for kind in kinds.ordered():
                if kind.observe_early:
                    kind.observe(view, obs)
        except BaseException:
            view.close()
            raise

    def finish(self) -> Observation:
        """The whole observation. What needs no namespace is worked out first, while the other
        core may still read them; then what needs one, namespace by namespace as each is read
        (by vnet or the child: View.read_rest)."""
        try:
            later = self._host_side()
            waiting: dict[str | None, list[tuple[kinds.Kind, LinkInfo]]] = {}
            for kind, li in later:
                waiting.setdefault(kind.link_namespace(li), []).append((kind, li))
            mine, found = set(self.mine), {}

            def arrived(names: list[str]) -> None:
                for ns in names:
                    for kind, li in waiting.pop(ns, ()):
                        self._from_link(kind, li)
                    if ns in mine:
                        found[ns] = self._namespace(ns)

            self.view.read_rest(self.mine, arrived)
            for group in waiting.values():  # links into namespaces not read here (gone, or named by no link)
                for kind, li in group:
                    self._from_link(kind, li)
            self.obs.namespaces = {ns: found[ns] if ns in found else self._namespace(ns) for ns in self.mine}
            for kind in kinds.ordered():
                if not kind.observe_early and kind.reads_namespaces:
                    kind.observe(self.view, self.obs)
        finally:
            self.view.close()
        return self.obs

    def close(self) -> None:
        self.view.close()

    def __enter__(self) -> Observing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host_side(self) -> list[tuple[kinds.Kind, LinkInfo]]:
        """The owned links of kinds that read no namespace, vnet's routes in the target, and the
        kinds observed from the host or the state directory. Returns the owned links left for
        when their namespaces are read (finish), with their kinds."""
        view, obs, topology = self.view, self.obs, self.obs.topology
        owned_index: dict[int, str] = {}
        later = []
        for li in obs.links.values():
            if not li.mark or li.mark[0] != topology:
                continue
            kind = kinds.by_role(li.mark[1])
            if kind is None:
                continue  # a role of a newer vnet: left alone
            owned_index[li.index] = li.name
            if kind.reads_namespaces:
                later.append((kind, li))
                continue
            self._from_link(kind, li)
        for rt in observed_routes(view.routes(""), "", owned_index):
            obs.add(rt)
        # what is not a link: sysctls by vnet's record, daemons by pid file, tables by their comment
        for kind in kinds.ordered():
            if not kind.observe_early and not kind.reads_namespaces:
                kind.observe(view, obs)
        return later

    def _from_link(self, kind: kinds.Kind, li: LinkInfo) -> None:
        for r in kind.from_link(self.view, li):
            self.obs.add(r)

    def _namespace(self, name: str) -> str | None:
        """Who owns one of the namespaces read by name (vnet's default names start with the
        topology's; ownership is the mark on lo): the topology, another, or None (foreign)."""
        view, topology, target = self.view, self.obs.topology, self.target
        lo = view.links(name).get("lo")
        mark = lo.mark if lo else None
        owner = mark[0] if mark else None
        if owner == topology and mark[1] == "netns" and mark[3][:1] != ((target,) if target else ()):
            owner = f"{topology} (applied to another target namespace)"  # same name, not ours
        if owner == topology:
            self.obs.add(make("netns", name, mark=view.alias(lo)))
        return owner
