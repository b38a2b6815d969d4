"""The resources vnet manages: a flat, typed, comparable description of host state.

A resource is a kind, a key that is unique within its kind, and attributes. Desired state (from
the topology) and observed state (from the host) are both sets of resources, so a plan is a diff.
"""

from __future__ import annotations

from typing import Any

from vnet.values import Frozen, _set


class Resource(Frozen):
    """One object vnet manages (a link, an address, a table, a daemon …): kind, key, compared
    attributes. It compares and hashes by kind, key and attrs, not extra."""

    __slots__ = ("kind", "key", "attrs", "extra")
    _compared = ("kind", "key", "attrs")
    kind: str
    key: str
    attrs: tuple[tuple[str, Any], ...]
    # attributes that describe the object but are not compared (e.g. text to restore it with)
    extra: tuple[tuple[str, Any], ...]

    def __init__(self, kind: str, key: str, attrs: tuple[tuple[str, Any], ...] = (), extra: tuple[tuple[str, Any], ...] = ()) -> None:
        _set(self, "kind", kind)
        _set(self, "key", key)
        _set(self, "attrs", attrs)
        _set(self, "extra", extra)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Resource:
            return NotImplemented
        return self.kind == other.kind and self.key == other.key and self.attrs == other.attrs  # type: ignore[attr-defined]

    def __hash__(self) -> int:  # these two by hand: a plan compares thousands of resources
        return hash((self.kind, self.key, self.attrs))

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.key}"

    def get(self, name: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == name:
                return v
        for k, v in self.extra:
            if k == name:
                return v
        return default

    @property
    def a(self) -> dict[str, Any]:
        return dict(self.attrs)

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.attrs if v not in (None, "", ()) and k != "digest")
        return f"{self.kind} {self.key}" + (f" ({shown})" if shown else "")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key, "attrs": dict(self.attrs), "extra": dict(self.extra)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resource:
        return make(data["kind"], data["key"], data.get("extra", {}), **data["attrs"])


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


_SCALARS = frozenset({str, int, bool, float, type(None)})


def _frozen(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """(name, value) pairs sorted by name, lists and dicts made tuples (the common case, scalars
    only, tested in one pass over their types: a no-op apply at a thousand endpoints makes five
    thousand)."""
    if _SCALARS.issuperset(map(type, values.values())):
        return tuple(sorted(values.items()))
    items = sorted(values.items())
    for _, v in items:
        if isinstance(v, (list, dict)):
            return tuple((k, _freeze(v)) for k, v in items)
    return tuple(items)


def make(kind: str, key: str, extra: dict[str, Any] | None = None, **attrs: Any) -> Resource:
    """A resource of any registered kind (vnet.kinds); the order kinds run in lives there."""
    return Resource(kind, key, _frozen(attrs), _frozen(extra) if extra else ())


def ns_key(ns: str, *parts: str) -> str:
    """Key of an object inside a namespace; '' is the target (host) namespace."""
    return "/".join((ns or "@host", *parts))
