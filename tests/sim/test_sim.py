"""The simulation as part of the suite: a few hundred seeds, each replayable by its number."""

from __future__ import annotations

import pytest

from tests.sim.world import play, schedule, shrink

SEEDS = range(200)


def test_the_same_seed_is_the_same_schedule() -> None:
    assert schedule(7, 40) == schedule(7, 40)
    assert schedule(7, 40) != schedule(8, 40)


@pytest.mark.parametrize("block", range(0, len(SEEDS), 50))
def test_seeds_keep_every_invariant_and_converge(block: int) -> None:
    for seed in SEEDS[block : block + 50]:
        outcome = play(seed)
        if outcome.failure is not None:
            shortest = shrink(seed, schedule(seed, 40))
            pytest.fail(
                f"seed {seed}, event {outcome.failed_at}: {outcome.failure}; shortest "
                f"schedule {shortest}; replay: python -m tests.sim --seed {seed}"
            )
        assert outcome.converged_in is not None
