"""Running a plan: each step through its kind's verb, journaled; on any failure, the steps done
so far are undone, newest first."""

from __future__ import annotations

from vnet import kinds
from vnet.engine.journal import Journal
from vnet.errors import StepFailed
from vnet.kinds import Ctx
from vnet.plan import Action, batches


class Runner:
    def __init__(self, ctx: Ctx, journal: Journal):
        self.ctx = ctx
        self.journal = journal
        self.phase = "run"  # run | undo | recover: what the current verbs are for

    def execute(self, action: Action) -> None:
        kind = kinds.get(action.resource.kind)
        if action.op == "create":
            kind.create(self.ctx, action.new)
        elif action.op == "delete":
            kind.delete(self.ctx, action.old)
        else:
            kind.update(self.ctx, action.old, action.new)

    def complete(self, action: Action) -> Action:
        """The action with what undoing it needs but observing did not read (kind.complete)."""
        if action.old is None:
            return action
        old = kinds.get(action.old.kind).complete(self.ctx, action.old)
        return action if old is action.old else Action(action.op, action.new, old)

    def run(self, actions: list[Action]) -> None:
        """Run every action; `actions` is completed in place (it is what the caller reports)."""
        done: list[Action] = []
        try:
            actions[:] = [self.complete(a) for a in actions]
            if actions:
                self.journal.begin(actions)
            for run in batches(actions):
                steps = [i + 1 for i in run]
                self.journal.start(steps)
                if len(steps) > 1:
                    first = actions[run[0]].resource
                    kinds.get(first.kind).delete_many(self.ctx, [actions[i].old for i in run])  # type: ignore[misc]
                else:
                    self.execute(actions[run[0]])
                for step in steps:
                    done.append(actions[step - 1])
                    self.journal.done(step)
                    self.ctx.log(actions[step - 1].describe())
        except BaseException as exc:
            failed = len(done) + 1
            ok = self.undo(done)
            self.journal.close(remove=ok)
            raise StepFailed(failed, actions[failed - 1].describe(), exc, rolled_back=ok) from exc
        self.journal.close(remove=True)

    def undo(self, done: list[Action]) -> bool:
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
