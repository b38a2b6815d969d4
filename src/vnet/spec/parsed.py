"""A topology file's plain data as vnet last parsed it, kept in the target's state root, so that a
command on an unchanged file (`status`, `plan`, a no-op `apply`) neither imports PyYAML nor parses
(PyYAML's import alone is 8–13 ms of a 90 ms `vnet status`; parsing 1000 endpoints ~20 ms more).

Nothing here is trusted over the file: an entry is used only when the file's text is exactly the
text it was made from, and the data it gives then goes through every check, as freshly parsed data
does. Only data that JSON gives back unchanged is kept (not keys that are numbers, nor NaN). The
entries live where only root may write (statedir.secure), as the journals do, and only for files
that passed the checks; a directory that is not safe, or cannot be written, means no entry,
never an error.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

from vnet.errors import VnetError

MISSING = object()  # no usable entry: parse the file


DIR = ".parsed"  # beside the topologies' directories: no topology's name starts with a dot


def _entry(root: Path, path: str) -> Path:
    # the file's path names the entry; two paths that share a checksum only take turns
    return root / DIR / f"{zlib.crc32(path.encode(errors='surrogateescape')):08x}.json"


def read(root: Path, path: str, text: str) -> Any:
    """The data kept for `path` if it was parsed from this very `text`, else MISSING."""
    from vnet import statedir

    entry = _entry(root, path)
    try:
        statedir.secure(entry.parent, create=False)
        with open(entry) as f:
            kept = json.load(f)
    except (OSError, ValueError, VnetError):
        return MISSING
    if not isinstance(kept, dict) or kept.get("path") != path or kept.get("text") != text or "data" not in kept:
        return MISSING
    return kept["data"]


def keep(root: Path, path: str, text: str, data: Any) -> None:
    """Keep `data`, parsed from `text`, for the next command on `path` (best effort)."""
    from vnet import statedir

    entry = _entry(root, path)
    tmp = entry.with_name(f".{os.getpid()}.tmp")
    try:
        blob = json.dumps({"path": path, "text": text, "data": data})
        if json.loads(blob)["data"] != data:
            return  # JSON would give back something else (a number as a key): parse every time
        statedir.secure(entry.parent, create=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(blob)
        os.replace(tmp, entry)
    except (OSError, ValueError, TypeError, VnetError):
        try:
            tmp.unlink(missing_ok=True)  # a write cut short leaves nothing behind
        except OSError:
            pass


def forget(root: Path, name: str) -> None:
    """Drop the entries of files that declare the topology `name`: `vnet destroy` leaves none of
    its topology's state behind, whichever file (or none, with --name) it was given."""
    from vnet import statedir

    folder = root / DIR
    try:
        statedir.secure(folder, create=False)  # not a link to somewhere else, nor others' to write
        entries = list(folder.iterdir())
    except (OSError, VnetError):
        return
    for entry in entries:
        try:
            with open(entry) as f:
                data = json.load(f).get("data")
            if isinstance(data, dict) and data.get("name") == name:
                entry.unlink()
        except (OSError, ValueError, AttributeError):
            continue  # not one of ours, or already gone
