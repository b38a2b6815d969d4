"""Running a plan: each step through its kind's verb, journaled; on any failure, everything the
run touched is brought back to what it was before the run.

Bringing back is convergent rather than a replay of inverses, for a failed run and for one that
was killed (`recover`, called by the next command) alike: the journal says, for each resource the
run touched, what it was before (the action's `old`, None for absent); the host is observed; the
difference is planned and run. So a step that ran in part (a kernel or nft error halfway, a kill
inside a driver call), fully without being marked done, or not at all needs no guess, and a
recovery that is itself cut short is simply done again. Parts of a step cut short that carry no
ownership mark yet (a link or namespace made but not yet marked, a daemon not yet in its pid
file) are swept first, by their kind.
"""

from __future__ import annotations

import threading
from typing import Callable, NamedTuple

from vnet import kinds
from vnet.drivers import ns as nsmod
from vnet.engine.journal import Journal
from vnet.errors import StepFailed, VnetError
from vnet.kinds import Ctx
from vnet.observe import Observation
from vnet.plan import Action, batches, diff
from vnet.resources import Resource

Observe = Callable[[tuple[str, ...]], Observation]


class EarlyStarts(NamedTuple):
    after: dict[int, list[int]]  # position of a run → the early runs that start once it is done
    hoisted: set[int]  # positions of the runs that start early


def early_starts(actions: list[Action], runs: list[range]) -> EarlyStarts:
    """Which runs start before their place in the plan, and after which run. A run of creations or
    updates whose kind names what it needs (`starts_after_for`, for each resource of the run)
    starts once every deletion and every step of those kinds (and of what they need) before it is
    done; -1: before the first run. A needed run that itself starts early is done before this one
    starts: early runs run one at a time, in the order they were started, and this one is started
    no sooner than that one."""
    after: dict[int, list[int]] = {}
    hoisted: dict[int, int] = {}  # position → the point it starts after
    for pos, run in enumerate(runs):
        if actions[run[0]].op == "delete":
            continue
        wants = [kinds.get(actions[i].resource.kind).starts_after_for(actions[i].resource) for i in run]
        if any(w is None for w in wants):
            continue
        needed = kinds.closure(tuple(n for w in wants for n in w))  # type: ignore[union-attr]
        point = max((hoisted.get(p, p) for p in range(pos) if any(
            actions[i].op == "delete" or actions[i].resource.kind in needed for i in runs[p])), default=-1)
        if point < pos - 1:  # else it starts where it stands
            after.setdefault(point, []).append(pos)
            hoisted[pos] = point
    return EarlyStarts(after, set(hoisted))


class _EarlyFailed(Exception):
    """A step started early failed (the error is the _Early's)."""


class _Early:
    """The thread that runs the steps started early, one run at a time in the order they were
    started, while the plan goes on. Starting one never waits for the one before."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._todo: list[tuple[Callable[[list[Action], range, list[Action]], None], list[Action], range, list[Action]]] = []
        self._started = 0  # runs handed over
        self._ended = 0  # runs done, failed, or dropped after a failure
        self._closing = False
        self.thread: threading.Thread | None = None
        self.failed = 0  # the step that failed, and how
        self.error: BaseException | None = None

    def start(self, fn: Callable[[list[Action], range, list[Action]], None], actions: list[Action],
              run: range, done: list[Action]) -> None:
        with self._cond:
            self._todo.append((fn, actions, run, done))
            self._started += 1
            self._cond.notify_all()
        if self.thread is None:
            worker = threading.Thread(target=self._work, name="vnet-early")
            worker.start()  # kept only once started: finish() never joins a thread that is not running
            self.thread = worker

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._todo and not self._closing:
                    self._cond.wait()
                if not self._todo:
                    return
                fn, actions, run, done = self._todo.pop(0)
                skip = self.error is not None  # after a failure nothing more starts
            if not skip:
                try:
                    fn(actions, run, done)
                except BaseException as exc:  # noqa: BLE001 — handed to the main thread
                    self.failed, self.error = run[0] + 1, exc
            with self._cond:
                self._ended += 1
                self._cond.notify_all()

    def check(self) -> None:
        if self.error is not None:
            raise _EarlyFailed()

    def wait(self) -> None:
        """Until every run started so far has ended."""
        with self._cond:
            while self._ended < self._started:
                self._cond.wait()
        self.check()

    def finish(self) -> None:
        """Drop what has not started, and wait for a step still running, whatever the main thread
        is going through."""
        while True:
            try:
                with self._cond:
                    self._closing = True
                    self._ended += len(self._todo)
                    self._todo.clear()
                    self._cond.notify_all()
                break
            except KeyboardInterrupt:  # a second Ctrl-C: the worker must still be told to stop
                continue
        while self.thread is not None:
            try:
                self.thread.join()
                self.thread = None
            except KeyboardInterrupt:  # a second Ctrl-C: the step still has to end first
                continue


class Runner:
    def __init__(self, ctx: Ctx, journal: Journal, observe: Observe):
        self.ctx = ctx
        self.journal = journal
        self.observe = observe  # the host as it is now, with these namespaces read too
        self.phase = "run"  # run | undo | recover: what the current verbs are for
        self._lock = threading.Lock()  # the journal and the list of done steps, for an early step

    def execute(self, action: Action) -> None:
        kind = kinds.get(action.resource.kind)
        if action.op == "create":
            kind.create(self.ctx, action.new)
        elif action.op == "delete":
            kind.delete(self.ctx, action.old)
        else:
            kind.update(self.ctx, action.old, action.new)

    def _open_namespaces(self, actions: list[Action]) -> None:
        """The sockets of the namespaces the run works in that exist already, opened in one trip
        of the thread that enters namespaces, not one trip each as they are met (observing read
        them in a child, which opens no socket here)."""
        inside = set()
        for a in actions:
            for r in (a.old, a.new):
                if r is not None:
                    inside.update(n for n in (r.get("ns"), *kinds.get(r.kind).namespaces(r)) if n)
        if inside:
            self.ctx.nss.open(sorted(inside & set(nsmod.listed())))

    def complete(self, action: Action) -> Action:
        """The action with what undoing it needs but observing did not read (kind.complete)."""
        if action.old is None:
            return action
        old = kinds.get(action.old.kind).complete(self.ctx, action.old)
        return action if old is action.old else Action(action.op, action.new, old)

    def run(self, actions: list[Action]) -> None:
        """Run every action; `actions` is completed in place (it is what the caller reports)."""
        done: list[Action] = []
        step = 1  # the step the main thread is at: a failure's number, unless an early one failed
        early = _Early()
        self._open_namespaces(actions)
        try:
            actions[:] = [self.complete(a) for a in actions]
            if actions:
                self.journal.begin(actions)
            runs = batches(actions)
            starts = early_starts(actions, runs)
            for pos in range(-1, len(runs)):  # -1: before the first run, for what starts there
                if pos in starts.hoisted:
                    early.wait()  # its place in the plan: what follows may need it
                    continue
                if pos >= 0:
                    early.check()
                    step = runs[pos][0] + 1
                    self._run(actions, runs[pos], done)
                for later in starts.after.get(pos, ()):
                    early.start(self._run, actions, runs[later], done)
            early.wait()
            early.finish()
        except BaseException as exc:
            early.finish()  # not while its step still runs: undoing would race it
            failed, cause = (early.failed, early.error) if isinstance(exc, _EarlyFailed) else (step, exc)
            ok = self.roll_back(done)
            raise StepFailed(failed, actions[failed - 1].describe(), cause, rolled_back=ok) from cause
        self.journal.close(remove=True)

    def _run(self, actions: list[Action], run: range, done: list[Action]) -> None:
        """One run of steps through its kind's verb, marked started and done in the journal."""
        steps = [i + 1 for i in run]
        with self._lock:
            self.journal.start(steps)
        if len(steps) > 1:
            first = actions[run[0]]
            kind = kinds.get(first.resource.kind)
            if first.op == "delete":
                kind.delete_many(self.ctx, [actions[i].old for i in run])  # type: ignore[misc]
            else:
                kind.create_many(self.ctx, [actions[i].new for i in run])  # type: ignore[misc]
        else:
            self.execute(actions[run[0]])
        with self._lock:
            self.journal.done(steps)
            for step in steps:
                done.append(actions[step - 1])
                self.ctx.log(actions[step - 1].describe())

    def roll_back(self, done: list[Action]) -> bool:
        """Everything the run touched back as before it (the journal keeps it when that fails)."""
        if not self.journal.exists():
            return self._undo(done)  # failed before anything was journaled, so before any change
        try:
            self.recover(say_each=False)  # the failure is what the user hears of; undone steps are not news
            return True
        except VnetError as exc:
            self.ctx.log(str(exc))
            return False

    def _undo(self, done: list[Action]) -> bool:
        ok = True
        self.phase, self.ctx.undoing = "undo", True
        try:
            for action in reversed(done):
                try:
                    self.execute(action.inverse())
                except Exception as exc:  # keep undoing the rest; report at the end
                    ok = False
                    self.ctx.log(f"undo of '{action.describe()}' failed: {exc}")
        finally:
            self.phase, self.ctx.undoing = "run", False
        return ok

    def recover(self, say_each: bool = True) -> None:
        """Converge every resource the journaled run touched to what it was before that run."""
        journal = self.journal
        journal.close(remove=False)  # this run's records are all written: read them back
        steps = journal.steps()
        before: dict[str, Resource | None] = {}
        extra_ns: set[str] = set()
        for _, a, _, _ in steps:
            before.setdefault(a.resource.id, a.old)
            for r in (a.new, a.old):
                if r is not None:
                    extra_ns.update(kinds.get(r.kind).namespaces(r))
        extra = tuple(sorted(n for n in extra_ns if nsmod.exists(n)))
        errors: list[str] = []
        self.phase, self.ctx.undoing = "recover", True
        try:
            obs = self.observe(extra)
            for _, a, started, done in steps:
                if started and not done and a.op in ("create", "update") and a.new is not None:
                    try:
                        kinds.get(a.new.kind).sweep(self.ctx, a.new, obs)
                    except Exception as exc:
                        errors.append(f"removing what '{a.describe()}' left: {exc}")
            obs = self.observe(tuple(n for n in extra if nsmod.exists(n)))
            have = {rid: r for rid, r in obs.owned.items() if rid in before}
            for action in diff([r for r in before.values() if r is not None], have):
                try:
                    # what the host holds now, completed (a ruleset's text: then only the elements
                    # that differ change, and the counters of the others live on)
                    self.execute(self.complete(action))
                    if say_each:
                        self.ctx.log(f"undone: {action.describe()}")
                except Exception as exc:  # keep going; report at the end
                    errors.append(f"'{action.describe()}': {exc}")
        finally:
            self.phase, self.ctx.undoing = "run", False
        if errors:
            raise VnetError(
                f"could not undo the run recorded in {journal.path}: " + "; ".join(errors)
                + " — the journal is kept; fix the cause and run the command again"
            )
        journal.close(remove=True)
