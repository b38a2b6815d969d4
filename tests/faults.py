"""Fault injection, installed around vnet from outside: production code carries no test hooks.

A fault is a failure or a SIGKILL at a chosen point of a run:
  fail_at="k"          step k raises before it starts (the steps before it ran)
  fail_at="k:call<n>"  step k raises right after its n-th driver call: a real change made halfway
  kill_at="k"          SIGKILL before step k starts; "k:after" after it ran, before it is marked
                       done; "k:call<n>" right after the n-th driver call inside step k;
                       "recover:<n>" after the n-th action of a recovery
  (steps that run as one batch — link deletions, veth or daemon creations — share their driver
  calls: "k:call<n>" is the n-th call of the batch that holds step k; a step started early, on a
  thread of its own, counts its own calls)
  delay=seconds        sleep before each step (to make runs overlap)

In-process: `with injected(fail_at=3): api.apply(...)`. For a vnet process of its own, run
`python -m tests.faults <vnet arguments>` with VNET_FAIL_AT, VNET_KILL_AT or VNET_STEP_DELAY set:
it installs the faults and then runs vnet's command line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from vnet.drivers import ns as nsmod
from vnet.drivers import process
from vnet.engine.journal import Journal
from vnet.engine.run import Runner
from vnet.errors import VnetError


class InjectedFault(VnetError):
    """The failure a test asked for."""


@dataclass
class Point:
    phase: str  # step | recover
    at: int
    when: str = "before"  # before | after | call
    call: int = 0

    @classmethod
    def parse(cls, spec: str) -> Point:
        head, _, tail = spec.partition(":")
        try:
            if head == "recover":
                return cls("recover", int(tail))
            tail = tail or "before"
            if tail.startswith("call"):
                return cls("step", int(head), "call", int(tail[4:] or 1))
            if tail in ("before", "after"):
                return cls("step", int(head), tail)
        except ValueError:
            pass
        raise ValueError(f"fault point {spec!r}: use k, k:after, k:call<n> or recover:<n>")


class Faults:
    def __init__(self, fail_at: str | int | None = None, kill_at: str | None = None, delay: float = 0.0):
        self.fail = Point.parse(str(fail_at)) if fail_at is not None else None
        self.kill = Point.parse(kill_at) if kill_at else None
        self.delay = delay
        # per runner thread (the main one, and the one that runs steps started early), the steps
        # it runs now (one, or a batch that runs as one call) and the driver calls made inside
        # them; a thread that runs no steps (the one that enters namespaces) counts for the main one
        self._slots: dict[int, list] = {}
        self.recovered = 0
        self.fired: list[str] = []  # what fired, for tests that count

    @classmethod
    def from_env(cls) -> Faults:
        return cls(os.environ.get("VNET_FAIL_AT") or None, os.environ.get("VNET_KILL_AT") or None,
                   float(os.environ.get("VNET_STEP_DELAY") or 0))

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def _slot(self, own: bool = False) -> list:
        """[steps, calls] of this thread's steps."""
        me = threading.get_ident()
        if own or me in self._slots:
            return self._slots.setdefault(me, [[], 0])
        return self._slots.setdefault(threading.main_thread().ident, [[], 0])

    def _hits(self, p: Point | None, when: str, step: int) -> bool:
        return p is not None and p.phase == "step" and p.at == step and p.when == when

    # --- the points ---
    def starting(self, steps: list[int]) -> None:
        for k in steps:
            if self.delay:
                time.sleep(self.delay)
            if self._hits(self.kill, "before", k):
                self.die()
            if self._hits(self.fail, "before", k):
                self.fired.append(f"fail {k}")
                raise InjectedFault(f"fault injected before step {k}")
        self._slot(own=True)[:] = [list(steps), 0]

    def finishing(self, step: int) -> None:
        if self._hits(self.kill, "after", step):
            self.die()
        self._slot()[0] = []

    def called(self) -> None:
        slot = self._slot()
        steps = slot[0]
        if not steps:
            return
        slot[1] += 1
        calls = slot[1]
        # "k:call<n>" in a batch: the n-th driver call of the batch that holds step k
        if self.kill is not None and self.kill.when == "call" and self.kill.at in steps and self.kill.call == calls:
            self.die()
        if self.fail is not None and self.fail.when == "call" and self.fail.at in steps and self.fail.call == calls:
            self.fired.append(f"fail {self.fail.at}:call{calls}")
            raise InjectedFault(f"fault injected inside step {self.fail.at}, after driver call {calls}")

    def recovery_action(self) -> None:
        self.recovered += 1
        if self.kill is not None and self.kill.phase == "recover" and self.kill.at == self.recovered:
            self.die()


@contextmanager
def injected(fail_at: str | int | None = None, kill_at: str | None = None, delay: float = 0.0) -> Iterator[Faults]:
    """Install faults around vnet in this process for the duration of the block."""
    faults = Faults(fail_at, kill_at, delay)
    undo = install(faults)
    try:
        yield faults
    finally:
        undo()


def install(faults: Faults):
    """Wrap the journal's start/done marks (step boundaries), every driver call into the kernel or
    a tool (a netlink request, a command, a call inside a namespace), and the runner's verbs
    during recovery. Returns a function that takes the wrappers off again."""
    saved = []

    def wrap(owner, name, make):
        orig = owner.__dict__[name]
        saved.append((owner, name, orig))
        setattr(owner, name, make(orig))

    def start(orig):
        def start(self, steps):
            faults.starting(steps)
            return orig(self, steps)
        return start

    def done(orig):
        def done(self, steps):
            for k in steps:
                faults.finishing(k)
            return orig(self, steps)
        return done

    def execute(orig):
        def execute(self, action):
            try:
                return orig(self, action)
            finally:
                if self.phase == "recover":
                    faults.recovery_action()
        return execute

    class Counted:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            attr = getattr(self._inner, name)
            if not callable(attr) or name.startswith("_") or name == "close":
                return attr
            return counted_call(attr)

    def counted_call(orig):  # a function, or a method (its self is the first argument)
        def function(*a, **kw):
            try:
                return orig(*a, **kw)
            finally:
                faults.called()
        return function

    def counted_property(orig):
        return property(lambda self: Counted(orig.fget(self)))

    wrap(Journal, "start", start)
    wrap(Journal, "done", done)
    wrap(Runner, "execute", execute)
    ns_class = nsmod.Namespace
    wrap(ns_class, "run", counted_call)
    # a daemon's start counts once it is up (its foreground exited, its pid file read), as a
    # command run to its end does: not at the spawn, when a kill would race its start-up
    wrap(process, "start_many", counted_call)
    wrap(ns_class, "call", counted_call)
    # each namespace made (by either thread that makes them), before its lo is marked
    wrap(nsmod, "_unshare_and_bind", counted_call)
    wrap(ns_class, "ipr", counted_property)
    wrap(ns_class, "nl", counted_property)

    def undo():
        for owner, name, orig in reversed(saved):
            setattr(owner, name, orig)
    return undo


def main() -> None:
    install(Faults.from_env())
    from vnet.cli import main as vnet_main

    sys.argv[0] = "vnet"
    vnet_main()


if __name__ == "__main__":
    main()
