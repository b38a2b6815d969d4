"""Frozen values and plain records: the parts of `dataclasses` vnet uses, as two base classes, so
that no command imports dataclasses (and inspect with it, ~10 ms of every start-up) and builds its
classes at import. A subclass declares its fields as __slots__ and sets them in its __init__."""

from __future__ import annotations

# typing only for type checkers: importing it is ~4 ms, and `vnet apply` imports this module
# before it forks its head start's child (headstart.py), which needs nothing of typing.
# Type checkers read the name TYPE_CHECKING as True whatever its value.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, ClassVar, TypeVar

    T = TypeVar("T")

_set = object.__setattr__  # how a subclass's __init__ sets its fields


class Frozen:
    """A value with __slots__ that cannot change once made. It compares and hashes by the fields
    in `_compared` (all of them unless a subclass names fewer: some fields only describe), and
    shows and pickles all of them, in slot order; a subclass's __init__ takes them in that order
    and sets each with `_set(self, name, value)`."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _compared: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "_fields" not in cls.__dict__:
            cls._fields = tuple(cls.__dict__.get("__slots__", ()))
        if "_compared" not in cls.__dict__:
            cls._compared = cls._fields

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._compared)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._fields)})"

    def __reduce__(self) -> tuple:
        return (type(self), tuple(getattr(self, f) for f in self._fields))


class Record:
    """A mutable record with __slots__: it compares (and shows) by its fields, in slot order, and
    is not hashable, as a plain dataclass."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "_fields" not in cls.__dict__:
            cls._fields = tuple(cls.__dict__.get("__slots__", ()))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._fields)})"




def per_topology(derive: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """derive(topo, key), remembered per key for the last topology it was asked of. Validation,
    the desired state and the renderers ask the same things of one topology per endpoint (a
    network's addressing: a thousand times at a thousand endpoints). A topology is frozen, and
    the cache holds the one it serves, so identity tells it from another; what it returns must
    be immutable too."""
    last: list[tuple[Any, dict]] = []  # [(the topology, its results)], swapped whole

    def of(topo: Any, key: Any) -> T:
        entry = last[0] if last else None
        if entry is None or entry[0] is not topo:
            entry = (topo, {})
            last[:] = [entry]
        made = entry[1]
        if key not in made:
            made[key] = derive(topo, key)
        return made[key]

    of.__name__, of.__doc__, of.__wrapped__ = derive.__name__, derive.__doc__, derive  # type: ignore[attr-defined]
    return of
