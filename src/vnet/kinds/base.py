"""What every resource kind provides, and the context the engine hands it.

A kind is a small class with the same hooks (the way pve-network's zone plugins share one base):
what the topology wants of it (pure), what the host holds of it, and the verbs that change it.
The engine looks a kind up by name and calls its verb; it has no per-kind branches.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator

from vnet.resources import Resource

if TYPE_CHECKING:
    from vnet.drivers.ns import Namespaces
    from vnet.drivers.sysctl import SysctlRecord
    from vnet.facts import HostFacts
    from vnet.observe import LinkInfo, Observation, View
    from vnet.spec.models import Topology


def _quiet(msg: str) -> None:
    pass


class Ctx:
    """What a verb may use: the namespaces, the topology's state directory, the short lock that
    guards state shared with other topologies in the target namespace, and those topologies."""

    __slots__ = ("nss", "topology", "state", "state_root", "record", "host_lock", "others", "log", "undoing", "cache")
    nss: Namespaces
    topology: str
    state: Path  # the topology's own state directory
    state_root: Path  # where every topology's directory lives
    record: SysctlRecord
    host_lock: Callable[[], AbstractContextManager[None]]
    others: Callable[[], Iterator[tuple[str, Any]]]  # (topology, claim) of the others here
    log: Callable[[str], None]
    undoing: bool  # putting things back (undo, recovery): no checks that could refuse it
    cache: dict

    def __init__(self, nss: Namespaces, topology: str, state: Path, state_root: Path, record: SysctlRecord,
                 host_lock: Callable[[], AbstractContextManager[None]], others: Callable[[], Iterator[tuple[str, Any]]],
                 log: Callable[[str], None] = _quiet, undoing: bool = False, cache: dict | None = None) -> None:
        self.nss = nss
        self.topology = topology
        self.state = state
        self.state_root = state_root
        self.record = record
        self.host_lock = host_lock
        self.others = others
        self.log = log
        self.undoing = undoing
        self.cache = {} if cache is None else cache

    def __repr__(self) -> str:
        return f"Ctx(topology={self.topology!r}, state={self.state!r}, undoing={self.undoing!r})"


class Kind:
    name: ClassVar[str]
    # kinds this one is created after (and deleted before): plan order comes from these
    after: ClassVar[tuple[str, ...]] = ()
    # the role in a link's ownership mark that this kind reads back from the host (links only)
    link_roles: ClassVar[tuple[str, ...]] = ()
    # deletions of kinds that share a batch name run as one call when they follow each other
    batch: ClassVar[str | None] = None
    # creations likewise (create_many): for kinds whose creations can overlap in time or share a
    # cost (one trip into a namespace, one write of a record)
    create_batch: ClassVar[str | None] = None
    # creations and updates that may start early: once every deletion and every step of these
    # kinds is done, on a thread of their own, alongside the steps between; the run waits for them
    # at their own place in the plan, so nothing after that place sees them unfinished. None: at
    # their place only
    starts_after: ClassVar[tuple[str, ...] | None] = None
    # observe() reads only the host and needs nothing else observed first: it runs while the
    # namespaces are read on the other core, before the desired state is worked out (which may
    # need what it read)
    observe_early: ClassVar[bool] = False
    # from_link() or observe() needs the topology's namespaces as read, or what was found in them:
    # it runs once they are read. The others run first, while the other core still reads them
    reads_namespaces: ClassVar[bool] = False

    # --- pure ---
    def desired(self, topo: Topology, facts: HostFacts) -> list[Resource]:
        return []

    def starts_after_for(self, r: Resource) -> tuple[str, ...] | None:
        """`starts_after` for this one resource, where resources of a kind need different things."""
        return self.starts_after

    # --- reading the host ---
    def observe(self, view: View, obs: Observation) -> None:
        """Add what the host holds of this kind (kinds that are not links)."""

    def from_link(self, view: View, li: LinkInfo) -> Iterable[Resource]:
        """The resources an owned link with one of `link_roles` stands for."""
        return ()

    def link_namespace(self, li: LinkInfo) -> str | None:
        """Of a kind that `reads_namespaces`: the one namespace from_link reads for this link (None:
        not known), so that it runs as soon as that namespace is read, not after all of them."""
        return None

    def complete(self, ctx: Ctx, r: Resource) -> Resource:
        """`r` with what undoing a change to it needs but observing did not read."""
        return r

    def namespaces(self, r: Resource) -> tuple[str, ...]:
        """Namespaces besides the target that hold parts of `r` (recovery reads them)."""
        return ()

    # --- changing the host ---
    def create(self, ctx: Ctx, r: Resource) -> None:
        raise NotImplementedError

    def delete(self, ctx: Ctx, r: Resource) -> None:
        raise NotImplementedError

    def update(self, ctx: Ctx, old: Resource, new: Resource) -> None:
        self.delete(ctx, old)
        self.create(ctx, new)

    def delete_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        for r in rs:
            self.delete(ctx, r)

    def create_many(self, ctx: Ctx, rs: list[Resource]) -> None:
        for r in rs:
            self.create(ctx, r)

    def sweep(self, ctx: Ctx, r: Resource, obs: Observation) -> None:
        """Remove what a create cut short left before it carried vnet's mark."""
