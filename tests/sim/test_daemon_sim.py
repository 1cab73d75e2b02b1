"""The whole daemon's simulation as part of the suite: a hundred seeds, each replayable."""

from __future__ import annotations

import pytest

from tests.sim.daemon_world import FakeClock, play, schedule, shrink

SEEDS = range(100)


def test_the_fake_clock_fires_what_falls_due_in_order() -> None:
    clock, fired = FakeClock(), []
    clock.later(5, lambda: fired.append("b"))
    clock.later(1, lambda: fired.append("a"))
    clock.later(9, lambda: fired.append("never")).cancel()
    assert clock.advance(4) == 1
    assert fired == ["a"]
    assert clock.advance(10) == 1
    assert fired == ["a", "b"]


@pytest.mark.parametrize("block", range(0, len(SEEDS), 50))
def test_daemon_seeds_keep_every_invariant_and_converge(block: int) -> None:
    for seed in SEEDS[block : block + 50]:
        outcome = play(seed)
        if outcome.failure is not None:
            shortest = shrink(seed, schedule(seed, 30))
            pytest.fail(
                f"seed {seed}, event {outcome.failed_at}: {outcome.failure}; shortest "
                f"schedule {shortest}; replay: python -m tests.sim --world daemon --seed {seed}"
            )
        assert outcome.converged_in is not None
        assert outcome.hooks >= 2  # the first pass puts both models in place: both fire
