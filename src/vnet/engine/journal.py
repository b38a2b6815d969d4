"""The write-ahead journal of one run: every step and its inverse are on disk before step 1 runs.

A journal left behind by a killed run is what recovery (recovery.py) reads to bring the host back
to what it held before that run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vnet.plan import Action


class Journal:
    def __init__(self, path: Path):
        self.path = path
        self._f = None

    def exists(self) -> bool:
        return self.path.exists()

    def _append(self, records: list[dict], durable: bool) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a")
        self._f.write("".join(json.dumps(r) + "\n" for r in records))
        self._f.flush()  # in the kernel's hands: survives a kill of vnet
        if durable:
            os.fsync(self._f.fileno())  # on disk: survives a crash of the machine

    def begin(self, actions: list[Action]) -> None:
        """Every step of the run, before the first one runs: one write and one fsync, not two per
        step. Recovery treats a step not marked done as possibly run in part, and converges from
        each resource's recorded old state, so recording steps that never ran costs nothing."""
        records = [{"journal": 2}] + [{"step": k, "action": a.to_json()} for k, a in enumerate(actions, 1)]
        self._append(records, durable=True)

    def start(self, steps: list[int]) -> None:
        """These steps are about to run (flushed: a kill of vnet cannot lose it). Recovery sweeps
        up after steps that started, never after those that were only recorded."""
        self._append([{"start": k} for k in steps], durable=False)

    def done(self, steps: list[int]) -> None:
        """These steps ran (a batch's in one write: 2,500 writes of one line each cost an apply
        of 1,000 endpoints ~20 ms). Not fsynced: a lost `done` only makes recovery check that
        step too."""
        self._append([{"done": k} for k in steps], durable=False)

    def steps(self) -> list[tuple[int, Action, bool, bool]]:
        """(step, action, started, done) in journal order; a torn last line is ignored. A journal
        of an older vnet, which recorded each step as it started, has every step started."""
        begun: dict[int, Action] = {}
        started: set[int] = set()
        done: set[int] = set()
        marks_starts = False
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "step" in rec:
                begun[rec["step"]] = Action.from_json(rec["action"])
            elif "start" in rec:
                started.add(rec["start"])
            elif "done" in rec:
                done.add(rec["done"])
            elif rec.get("journal") == 2:
                marks_starts = True
        return [(k, begun[k], k in started or k in done or not marks_starts, k in done) for k in sorted(begun)]

    def close(self, remove: bool) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if remove:
            self.path.unlink(missing_ok=True)
