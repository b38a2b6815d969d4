"""Skipped tests never pass in silence: every run names what it skipped and why, and in CI
(`CI=true`) a single skip fails the run, because a test that did not run proves nothing."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skipped(config: pytest.Config) -> list[tuple[str, str]]:
    """(test or module, reason) of every skip of this run, collection skips included."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    out = []
    for report in reporter.stats.get("skipped", []) if reporter else []:
        reason = ""
        if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        out.append((report.nodeid or str(report.fspath), reason))
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and _skipped(session.config) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = _skipped(config)
    if not skipped:
        return
    if in_ci():
        # named one by one: each is a test CI was supposed to run
        terminalreporter.section(f"{len(skipped)} skipped: skips fail the run in CI (CI=true)", sep="=", red=True, bold=True)
        for where, reason in skipped:
            terminalreporter.write_line(f"SKIPPED {where}: {reason}", red=True)
        return
    terminalreporter.section(f"{len(skipped)} skipped: these did not run and prove nothing", sep="=", yellow=True, bold=True)
    by_reason: dict[str, int] = {}
    for _, reason in skipped:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{n:4d} skipped: {reason}", yellow=True)
