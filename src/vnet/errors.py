"""Errors vnet reports to users. Each carries text meant to be read by a person."""

from __future__ import annotations

from vnet.values import Frozen, _set


class VnetError(Exception):
    """A failure the user can act on; the CLI prints it as one line, exit 1."""

    exit_code = 1


class Problem(Frozen):
    """One thing wrong with a topology: where it is, what is wrong, how to fix it."""

    __slots__ = ("path", "message", "fix")
    path: str
    message: str
    fix: str

    def __init__(self, path: str, message: str, fix: str = "") -> None:
        _set(self, "path", path)
        _set(self, "message", message)
        _set(self, "fix", fix)

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        return f"{text} — {self.fix}" if self.fix else text


class SpecError(VnetError):
    """The topology file is invalid; lists every problem found. Nothing was changed."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ClashError(SpecError):
    """The topology does not fit the host: a name taken by something vnet did not make (or by
    another topology), a missing uplink, a subnet that collides with a host route."""

    def __init__(self, problems: list[Problem]):
        # the host checks and the claims of other topologies may both see one clash (another
        # topology's bridge exists, and is claimed): it is reported once, by the first that saw it
        seen: set[str] = set()
        once = []
        for p in problems:
            if p.path not in seen or not p.path:
                once.append(p)
            seen.add(p.path)
        super().__init__(once)


class NotPermitted(VnetError):
    """The command needs privileges the caller does not have."""

    exit_code = 1


class StepFailed(VnetError):
    """A step of a plan failed; everything done before it was undone."""

    def __init__(self, step: int, action: str, cause: BaseException, rolled_back: bool = True):
        self.step, self.action, self.cause = step, action, cause
        tail = "everything this run changed was undone" if rolled_back else "ROLLBACK INCOMPLETE"
        super().__init__(f"step {step} ({action}) failed: {cause}; {tail}")
