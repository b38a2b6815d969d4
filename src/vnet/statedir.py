"""The state directory: where vnet keeps journals, claims, records and its daemons' files.

Root replays what it finds there (a journal left by a killed run), so whoever can write it, or
swap it for another, could make vnet change the host as they please. vnet therefore refuses a
directory that is not owned by root (or the user running vnet), or that group or others may
write, and any parent that others could use to swap it: writable by them without the sticky bit
(the rule OpenSSH's StrictModes applies). A directory it creates is 0700.

Each target namespace has a root of its own under it (`@<netns>/`), so topologies of the same
name applied to different targets (three hosts sandboxed on one machine) never share state.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vnet.errors import VnetError


class UnsafeStateDir(VnetError):
    """The state directory could be written or swapped by someone else."""


def target_root(state_dir: Path | str, netns: str | None) -> Path:
    return Path(state_dir) / f"@{netns}" if netns else Path(state_dir)


def topology_lock(root: Path, topology: str) -> Path:
    """The topology's lock file in a target's root."""
    return root / f"{topology}.lock"


def journal(root: Path, topology: str) -> Path:
    """The journal of the topology's run in progress (or of one that was killed)."""
    return root / topology / "journal.jsonl"


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _check(state: Path, path: Path, st: os.stat_result) -> None:
    what = "the state directory" if path == state else f"its parent {path}"
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateDir(f"{state}: {what} is not a directory; point --state-dir at a directory")
    if not _trusted_owner(st):
        raise UnsafeStateDir(f"{state}: {what} is owned by uid {st.st_uid}, not by root: vnet would run what it holds as root; "
                             f"use a directory root owns (chown root {path}), or another --state-dir")


def check_parents(path: Path) -> None:
    for parent in path.parents:
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            raise UnsafeStateDir(f"{path}: a parent of the state directory is not a directory; point --state-dir at a directory") from None
        _check(path, parent, st)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise UnsafeStateDir(f"{path}: its parent {parent} is writable by group or others without the sticky bit, so they could "
                                 f"swap the state directory; chmod go-w {parent}, or choose another --state-dir")


def secure(path: Path | str, create: bool) -> Path:
    """`path`, checked (and made 0700 where it is missing and `create` is set). Symlinks are
    judged by where they lead: the real path and every parent of it."""
    path = Path(os.path.realpath(path))
    check_parents(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if create:
            missing = [path, *(p for p in path.parents if not p.exists())]
            for d in reversed(missing):
                try:
                    os.mkdir(d, 0o700)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise VnetError(f"{path}: the state directory cannot be made there ({(exc.strerror or str(exc)).lower()}); "
                                    "point --state-dir at a directory vnet can write") from None
        return path
    except NotADirectoryError:
        raise UnsafeStateDir(f"{path}: a parent of the state directory is not a directory; point --state-dir at a directory") from None
    _check(path, path, st)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeStateDir(f"{path}: the state directory is writable by group or others, who could make vnet run anything as root; "
                             f"chmod go-w {path}, or choose another --state-dir")
    return path
