"""`python -m tests.sim --seed N` replays one seed; `--seeds K` searches K seeds from --start.

`--world daemon` runs the whole daemon's simulation (triggers, controller, registry on a fake
clock) instead of the syncer's. A failing seed prints its failure and the shortest schedule
that still fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from types import ModuleType

from tests.sim import daemon_world, world

WORLDS: dict[str, ModuleType] = {"syncer": world, "daemon": daemon_world}
LENGTHS = {"syncer": 40, "daemon": 30}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", choices=sorted(WORLDS), default="syncer")
    parser.add_argument("--seed", type=int, help="replay this seed")
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to search")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--length", type=int, help="events per seed (default 40, daemon 30)")
    args = parser.parse_args()
    sim = WORLDS[args.world]
    length = args.length or LENGTHS[args.world]
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    started = time.monotonic()
    totals: dict[str, int] = {}
    checks = events = hooks = 0
    for seed in seeds:
        outcome = sim.play(seed, length=length)
        checks += outcome.checks
        events += outcome.events
        hooks += getattr(outcome, "hooks", 0)
        for kind, count in outcome.counts.items():
            totals[kind] = totals.get(kind, 0) + count
        if outcome.failure is not None:
            print(f"seed {seed} FAILED at event {outcome.failed_at}: {outcome.failure}")
            shortest = sim.shrink(seed, sim.schedule(seed, length))
            print(f"shortest failing schedule ({len(shortest)} events):")
            for event in shortest:
                print(f"  {event}")
            print(
                f"replay: python -m tests.sim --world {args.world} --seed {seed} --length {length}"
            )
            return 1
    took = time.monotonic() - started
    fired = f", {hooks} hook runs" if args.world == "daemon" else ""
    print(
        f"{args.world}: {len(seeds)} seeds, {events} events, {checks} invariant checks"
        f"{fired}, all converged in {took:.1f}s; events by kind: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(totals.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
