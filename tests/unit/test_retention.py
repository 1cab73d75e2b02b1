from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.retention import Unwanted, select_removals


def unwanted(run: str, since: float, *models: str) -> Unwanted:
    return Unwanted(run * 32, frozenset(models or ("M",)), since)


def test_grace_period_respected() -> None:
    items = [unwanted("a", 100.0), unwanted("b", 50.0)]
    assert select_removals(items, now=120.0, grace=60.0, keep_previous=0) == ["b" * 32]


def test_newest_previous_kept_per_model() -> None:
    items = [unwanted("a", 10.0), unwanted("b", 20.0), unwanted("c", 30.0)]
    assert select_removals(items, now=1000.0, grace=1.0, keep_previous=1) == ["a" * 32, "b" * 32]
    assert select_removals(items, now=1000.0, grace=1.0, keep_previous=2) == ["a" * 32]


def test_a_folder_kept_for_any_of_its_models_stays() -> None:
    items = [unwanted("a", 10.0, "M", "N"), unwanted("b", 20.0, "M")]
    # "a" is the newest unwanted folder of N: kept although M has a newer one
    assert select_removals(items, now=1000.0, grace=1.0, keep_previous=1) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdef"), st.floats(0, 100), st.sampled_from(["M", "N"])),
        unique_by=lambda item: item[0],
    ),
    st.floats(0, 200),
    st.floats(0, 50),
    st.integers(0, 3),
)
def test_removals_are_old_enough_and_never_the_kept_ones(
    raw: list[tuple[str, float, str]], now: float, grace: float, keep: int
) -> None:
    items = [unwanted(run, since, model) for run, since, model in raw]
    removed = set(select_removals(items, now=now, grace=grace, keep_previous=keep))
    for model in ("M", "N"):
        mine = sorted((i for i in items if model in i.models), key=lambda i: (i.since, i.run_id))
        survivors = [i for i in mine if i.run_id not in removed]
        assert len(survivors) >= min(keep, len(mine))
    assert all(now - i.since >= grace for i in items if i.run_id in removed)
