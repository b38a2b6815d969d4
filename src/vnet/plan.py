"""Desired vs observed → an ordered list of actions, each with its inverse. Pure."""

from __future__ import annotations

from typing import Iterable

from vnet import kinds
from vnet.values import Frozen, _set
from vnet.kinds import rank
from vnet.resources import Resource




class Action(Frozen):
    """One step of a plan: a resource created, updated or deleted."""

    __slots__ = ("op", "new", "old")
    op: str  # create | update | delete
    new: Resource | None  # what the host holds afterwards (None for delete)
    old: Resource | None  # what it held before (None for create)

    def __init__(self, op: str, new: Resource | None, old: Resource | None) -> None:
        _set(self, "op", op)
        _set(self, "new", new)
        _set(self, "old", old)

    @property
    def resource(self) -> Resource:
        return self.new or self.old  # type: ignore[return-value]

    def inverse(self) -> Action:
        return Action({"create": "delete", "delete": "create", "update": "update"}[self.op], self.old, self.new)

    def describe(self) -> str:
        sign = {"create": "+", "delete": "-", "update": "~"}[self.op]
        text = f"{sign} {self.resource.describe()}"
        if self.op == "update":
            changes = [
                f"{k}: {self.old.get(k)} → {v}"  # type: ignore[union-attr]
                for k, v in self.new.attrs  # type: ignore[union-attr]
                if v is not None and self.old.get(k) != v  # type: ignore[union-attr]
            ]
            text = f"~ {self.resource.kind} {self.resource.key} ({'; '.join(changes)})"
        return text

    def to_json(self) -> dict:
        return {
            "op": self.op,
            "new": self.new.to_json() if self.new else None,
            "old": self.old.to_json() if self.old else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> Action:
        return cls(
            data["op"],
            Resource.from_json(data["new"]) if data["new"] else None,
            Resource.from_json(data["old"]) if data["old"] else None,
        )


def matches(want: Resource, have: Resource) -> bool:
    """An attribute the topology leaves open (None) matches whatever the host has."""
    has = dict(have.extra)
    has.update(have.attrs)  # as have.get() finds them (attrs first), looked up once: a no-op at N=1000 asks of a thousand resources
    return all(v is None or has.get(k) == v for k, v in want.attrs)


def diff(desired: Iterable[Resource], observed: dict[str, Resource]) -> list[Action]:
    want = {r.id: r for r in desired}
    deletes = [Action("delete", None, r) for rid, r in observed.items() if rid not in want]
    changes = []
    for rid, r in want.items():
        have = observed.get(rid)
        if have is None:
            changes.append(Action("create", r, None))
        elif r.attrs != have.attrs and not matches(r, have):  # equal: the common case, one comparison
            changes.append(Action("update", r, have))
    deletes.sort(key=lambda a: (-rank(a.resource.kind), a.resource.key))
    changes.sort(key=lambda a: (rank(a.resource.kind), a.resource.key))
    return deletes + changes


def _batch(a: Action) -> tuple[str, str] | None:
    kind = kinds.get(a.resource.kind)
    name = kind.batch if a.op == "delete" else kind.create_batch if a.op == "create" else None
    return None if name is None else (a.op, name)


def batches(actions: list[Action]) -> list[range]:
    """The actions, cut into runs that execute together: consecutive deletions of kinds that share
    a batch (links: the kernel then waits out its grace periods once, not per link) form one run,
    as do consecutive creations of kinds that share a create batch (daemons: their start-ups
    overlap); every other action is a run of its own. Steps keep their own numbers in the journal."""
    out: list[range] = []
    i = 0
    while i < len(actions):
        j = i + 1
        batch = _batch(actions[i])
        if batch is not None:
            while j < len(actions) and _batch(actions[j]) == batch:
                j += 1
        out.append(range(i, j))
        i = j
    return out
