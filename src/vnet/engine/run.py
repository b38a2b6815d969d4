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

from typing import Callable

from vnet import kinds
from vnet.drivers import ns as nsmod
from vnet.engine.journal import Journal
from vnet.errors import StepFailed, VnetError
from vnet.kinds import Ctx
from vnet.observe import Observation
from vnet.plan import Action, batches, diff
from vnet.resources import Resource

Observe = Callable[[tuple[str, ...]], Observation]


class Runner:
    def __init__(self, ctx: Ctx, journal: Journal, observe: Observe):
        self.ctx = ctx
        self.journal = journal
        self.observe = observe  # the host as it is now, with these namespaces read too
        self.phase = "run"  # run | undo | recover: what the current verbs are for

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
        self._open_namespaces(actions)
        try:
            actions[:] = [self.complete(a) for a in actions]
            if actions:
                self.journal.begin(actions)
            for run in batches(actions):
                steps = [i + 1 for i in run]
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
                for step in steps:
                    done.append(actions[step - 1])
                    self.journal.done(step)
                    self.ctx.log(actions[step - 1].describe())
        except BaseException as exc:
            failed = len(done) + 1
            ok = self.roll_back(done)
            raise StepFailed(failed, actions[failed - 1].describe(), exc, rolled_back=ok) from exc
        self.journal.close(remove=True)

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
