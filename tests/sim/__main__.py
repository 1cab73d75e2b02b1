"""`python -m tests.sim --seed N` replays one seed; `--seeds K` searches K seeds from --start.

A failing seed prints its failure and the shortest schedule that still fails.
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.sim.world import play, schedule, shrink


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, help="replay this seed")
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to search")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--length", type=int, default=40, help="events per seed")
    args = parser.parse_args()
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    started = time.monotonic()
    totals: dict[str, int] = {}
    checks = events = 0
    for seed in seeds:
        outcome = play(seed, length=args.length)
        checks += outcome.checks
        events += outcome.events
        for kind, count in outcome.counts.items():
            totals[kind] = totals.get(kind, 0) + count
        if outcome.failure is not None:
            print(f"seed {seed} FAILED at event {outcome.failed_at}: {outcome.failure}")
            shortest = shrink(seed, schedule(seed, args.length))
            print(f"shortest failing schedule ({len(shortest)} events):")
            for event in shortest:
                print(f"  {event}")
            print(f"replay: python -m tests.sim --seed {seed} --length {args.length}")
            return 1
    took = time.monotonic() - started
    print(
        f"{len(seeds)} seeds, {events} events, {checks} invariant checks, all converged "
        f"in {took:.1f}s; events by kind: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(totals.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
