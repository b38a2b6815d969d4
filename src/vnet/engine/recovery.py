"""Recovery of a killed run: bring every resource the run touched back to what it was before.

Convergent rather than a replay of inverses: the journal says, for each resource the run touched,
what it was before (the action's `old`, None for absent); the host is observed; the difference is
planned and run. So a recovery that is itself killed is simply done again, and a step that ran in
part (or not at all, or fully without being marked done) needs no guess. Parts of a step cut short
that carry no ownership mark yet (a link or namespace made but not yet marked, a daemon not yet in
its pid file) are swept first, by their kind.
"""

from __future__ import annotations

from typing import Callable

from vnet import kinds
from vnet.drivers import ns as nsmod
from vnet.engine.run import Runner
from vnet.errors import VnetError
from vnet.observe import Observation
from vnet.plan import diff
from vnet.resources import Resource


def recover(runner: Runner, observe: Callable[[tuple[str, ...]], Observation]) -> None:
    journal = runner.journal
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
    runner.phase, runner.ctx.undoing = "recover", True
    try:
        obs = observe(extra)
        for _, a, started, done in steps:
            if started and not done and a.op in ("create", "update") and a.new is not None:
                try:
                    kinds.get(a.new.kind).sweep(runner.ctx, a.new, obs)
                except Exception as exc:
                    errors.append(f"removing what '{a.describe()}' left: {exc}")
        obs = observe(tuple(n for n in extra if nsmod.exists(n)))
        have = {rid: r for rid, r in obs.owned.items() if rid in before}
        for action in diff([r for r in before.values() if r is not None], have):
            try:
                runner.execute(action)
                runner.ctx.log(f"recovery: {action.describe()}")
            except Exception as exc:  # keep going; report at the end
                errors.append(f"'{action.describe()}': {exc}")
    finally:
        runner.phase, runner.ctx.undoing = "run", False
    if errors:
        raise VnetError(
            f"could not undo the interrupted run recorded in {journal.path}: " + "; ".join(errors)
            + " — the journal is kept; fix the cause and run the command again"
        )
    journal.close(remove=True)
