"""Where what must outlive a reboot is kept: dnsmasq's leases (and generated VM disks).

The state directory lives in /run, which a reboot empties; the journal belongs there (a reboot
ends every run it could describe). Leases do not: a guest should get its address back after a
reboot. They live in the lib directory, derived from the state directory so that every part of
vnet finds them without being told:

    state /run/vnet[/@ns]/TOPO        → lib /var/lib/vnet[/@ns]/TOPO
    state BASE[/@ns]/TOPO (any other) → lib BASE/.lib[/@ns]/TOPO   (tests: one tmp tree)

`--lib-dir` (api: lib_dir=) names another lib base for a state base. Topology names start with a
letter, so `.lib` never clashes with a topology's directory. Pure but for `configure`.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_BASE = Path("/run/vnet")
DEFAULT_LIB_BASE = Path("/var/lib/vnet")
_chosen: dict[Path, Path] = {}  # state base → lib base, from --lib-dir


def _abs(p: Path | str) -> Path:
    return Path(os.path.abspath(p))


def configure(state_base: Path | str, lib_base: Path | str | None) -> None:
    """Use `lib_base` for the topologies under `state_base` (None: the derived default)."""
    if lib_base is None:
        _chosen.pop(_abs(state_base), None)
    else:
        _chosen[_abs(state_base)] = _abs(lib_base)


def lib_base(state_base: Path | str) -> Path:
    base = _abs(state_base)
    if base in _chosen:
        return _chosen[base]
    return DEFAULT_LIB_BASE if base == DEFAULT_STATE_BASE else base / ".lib"


def split(state: Path | str) -> tuple[Path, str | None, str]:
    """(state base, target namespace's `@ns` part or None, topology) of a topology's state dir."""
    state = _abs(state)
    parent = state.parent
    if parent.name.startswith("@"):
        return parent.parent, parent.name, state.name
    return parent, None, state.name


def lib_of(state: Path | str) -> Path:
    """The lib directory of the topology whose state directory is `state`."""
    base, at, topo = split(state)
    root = lib_base(base)
    return root / at / topo if at else root / topo


def ensure(state: Path | str) -> Path:
    """The topology's lib directory, made (0700, every missing parent too) and checked as the
    state directory is: root replays nothing from it, but dnsmasq writes there as root."""
    from vnet import statedir

    lib = lib_of(state)
    base, _, _ = split(state)
    statedir.secure(lib_base(base), create=True)
    for d in reversed([lib, *[p for p in lib.parents if not p.exists()]]):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
    return lib


def named(d: Path, prefix: str, suffix: str = "") -> list[Path]:
    """The entries of directory `d` named PREFIX*SUFFIX, as `d.glob(f"{prefix}*{suffix}")` gives
    them (nothing where `d` is missing), without compiling a pattern per glob: observing a
    topology asks for seven kinds of state file, ~1.5 ms of `vnet status` as regexes."""
    least = len(prefix) + len(suffix)
    try:
        with os.scandir(d) as entries:
            return [d / e.name for e in entries if len(e.name) >= least and e.name.startswith(prefix) and e.name.endswith(suffix)]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
