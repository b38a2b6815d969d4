"""Where a vnet apply spends its time: `python -m bench profile [-n 1000] [--phases apply,noop,destroy]`.

Runs vnet in this process against the sandbox `bench` and reports, per phase:
  - wall time of its parts (recovery check, observe, desired+preflight+diff, running the actions);
  - time and count per action kind (create bridge, create tap, …);
  - netlink requests by method of vnet's client (count, time), subprocesses by program, calls into
    namespaces;
  - the top functions of a cProfile run (a second run of the same phase: cProfile slows Python down,
    so the timings above come from a run without it).
The .prof files and the text go to bench/results/profile-<date>-N<n>/.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import os
import pstats
import subprocess
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

from vnet import api, sandbox
from vnet.desired import desired
from vnet.drivers import ns as nsmod
from vnet.drivers import rtnl
from vnet.engine import Engine
from vnet.observe import Observation

from bench import baselines, topo, world
from bench.env import ROOT


class Probe:
    """Counters patched into vnet's seams for the length of one phase (test-style monkeypatching of
    the benchmark's own process; nothing in src/ changes)."""

    def __init__(self) -> None:
        self.t: dict[str, list[float]] = defaultdict(list)
        self._undo: list = []

    def timeit(self, key: str, dt: float) -> None:
        self.t[key].append(dt)

    def wrap(self, owner, name: str, key) -> None:
        orig = getattr(owner, name)
        probe = self

        def wrapped(*a, **kw):
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                probe.timeit(key(*a, **kw) if callable(key) else key, time.perf_counter() - t0)

        setattr(owner, name, wrapped)
        self._undo.append((owner, name, orig))

    @contextmanager
    def installed(self):
        import vnet.engine as engine_mod
        import vnet.observe as observe_mod
        from vnet.engine.run import Runner

        self.wrap(Runner, "execute", lambda self_, action: f"step  {action.op} {action.resource.kind}")
        self.wrap(Runner, "run", "phase run actions")
        self.wrap(Runner, "complete", "phase complete (undo text)")
        self.wrap(Engine, "_recover", "phase recover (journal check)")
        self.wrap(Engine, "observe", "phase observe")
        import vnet.preflight as preflight_mod

        self.wrap(preflight_mod, "check", "phase preflight")
        self.wrap(engine_mod, "diff", "phase diff")
        self.wrap(engine_mod, "desired", "phase desired")
        self.wrap(Engine, "facts", "phase facts")
        from vnet import kinds
        from vnet.kinds.links import LinkKind

        self.wrap(LinkKind, "delete_many", "step  delete links (one batch)")
        for kind in kinds.ordered():
            if kind.create_batch:
                self.wrap(kind, "create_many", f"step  create {kind.name} (one batch)")
        self.wrap(observe_mod, "read_links", "observe read_links")
        self.wrap(nsmod.Namespaces, "open", "observe open sockets")
        import vnet.kinds.route as route_mod

        self.wrap(observe_mod, "observed_routes", "observe routes (host)")
        self.wrap(route_mod, "observed_routes", "observe routes")
        self.wrap(nsmod.Namespace, "call", "call inside a namespace")
        self.wrap(nsmod, "create", "netns create")
        self.wrap(subprocess, "run", lambda argv, *a, **kw: "process " + _prog(argv))
        for cls, label in ((rtnl.Netlink, "netlink"), (rtnl.Rtnl, "netlink"), (rtnl.Nft, "nfnetlink")):
            for name, fn in list(vars(cls).items()):
                if callable(fn) and not name.startswith("_"):
                    self.wrap(cls, name, f"{label} {name}")
        try:
            yield self
        finally:
            for owner, name, orig in reversed(self._undo):
                setattr(owner, name, orig)
            self._undo.clear()

    def report(self, wall: float) -> str:
        lines = [f"  {'what':<48} {'calls':>7} {'total':>9} {'each':>9} {'of wall':>8}"]
        for key, ts in sorted(self.t.items(), key=lambda kv: -sum(kv[1])):
            total = sum(ts)
            lines.append(f"  {key:<48} {len(ts):>7} {total:>8.2f}s {total / len(ts) * 1000:>7.2f}ms {total / wall * 100:>7.0f}%")
        return "\n".join(lines)


def _prog(argv) -> str:
    argv = list(argv) if not isinstance(argv, str) else argv.split()
    if argv and argv[0] == "nsenter":
        argv = argv[argv.index("--") + 1 :] if "--" in argv else argv[2:]
    words = [os.path.basename(argv[0])] + [w for w in argv[1:3] if not w.startswith("-")][:2] if argv else ["?"]
    return " ".join(words)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench profile")
    p.add_argument("-n", type=int, default=1000, help="endpoints (default 1000)")
    p.add_argument("--phases", default="apply", help="comma-separated, in order: apply,noop,destroy (default apply)")
    p.add_argument("--no-cprofile", action="store_true", help="only the instrumented run")
    args = p.parse_args(argv)
    phases = [x for x in args.phases.split(",") if x]
    out_dir = ROOT / "bench" / "results" / f"profile-{datetime.date.today().isoformat()}-N{args.n}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if world.exclusive() is None:
        print("another benchmark (make bench or python -m bench profile) is running: they share sandbox 'bench'")
        return 1
    world.stale_state_dirs()
    state = Path(tempfile.mkdtemp(prefix="vnet-bench-prof-"))
    if world.exists(f"{world.SANDBOX}-host"):
        print("sandbox 'bench' exists: is a benchmark running? (`vnet sandbox destroy bench --state-dir …` if it is a leftover)")
        return 1
    sb = sandbox.create(world.SANDBOX, state_dir=state)
    text = io.StringIO()

    def say(s: str = "") -> None:
        print(s, flush=True)
        text.write(s + "\n")

    t = topo.load(topo.build_dict(args.n))
    eng = Engine(t.name, netns=sb.host, state_dir=state)
    facts = eng.facts(t, Observation(t.name))
    work = baselines.derive(desired(t, facts), facts.state)
    scratch = state / "scratch"
    scratch.mkdir()

    def run_phase(phase: str) -> None:
        if phase == "destroy":
            api.destroy(t.name, netns=sb.host, state_dir=state)
        else:
            api.apply(t, netns=sb.host, state_dir=state)

    def reset_before(phase: str) -> None:
        """apply starts from nothing; noop and destroy from the topology applied (by the floor:
        same objects, and fast)."""
        baselines.delete_floor(work, sb.host, facts.state, scratch, {})
        if phase in ("noop", "destroy"):
            api.apply(t, netns=sb.host, state_dir=state)

    try:
        say(f"vnet profile: N={args.n}, phases {', '.join(phases)}, sandbox {sb.host}")
        for phase in phases:
            reset_before(phase)
            probe = Probe()
            with probe.installed():
                t0 = time.perf_counter()
                run_phase(phase)
                wall = time.perf_counter() - t0
            say(f"\n=== {phase} at N={args.n}: {wall:.2f}s wall (instrumented, no cProfile)")
            say(probe.report(wall))
            if not args.no_cprofile:
                reset_before(phase)
                prof = cProfile.Profile()
                t0 = time.perf_counter()
                prof.enable()
                run_phase(phase)
                prof.disable()
                wall_p = time.perf_counter() - t0
                path = out_dir / f"{phase}.prof"
                prof.dump_stats(path)
                for order, count in (("cumulative", 30), ("tottime", 20)):
                    s = io.StringIO()
                    st = pstats.Stats(prof, stream=s)
                    st.sort_stats(order).print_stats(count)
                    body = s.getvalue()
                    body = body[body.find("   ncalls"):]
                    say(f"\n--- {phase}: cProfile ({wall_p:.2f}s under the profiler), top {count} by {order}")
                    say("\n".join(line.replace(str(ROOT) + "/", "").replace(str(Path(os.__file__).parent) + "/", "")[:170] for line in body.splitlines()))
    finally:
        try:
            baselines.delete_floor(work, sb.host, facts.state, scratch, {})
        finally:
            for name in os.listdir(world.NETNS_DIR):
                if name.startswith("bn-"):
                    world.sweep([name])
            world.kill_in(sb.host)
            sandbox.destroy(world.SANDBOX, state_dir=state)
            world.remove_tree(state)
    (out_dir / f"summary-{'-'.join(phases)}.txt").write_text(text.getvalue())
    print(f"\nwrote {out_dir.relative_to(ROOT)}/")
    return 0
