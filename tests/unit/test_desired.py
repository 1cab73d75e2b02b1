"""Desired pointers from one registry listing, and the resolution cache across restarts."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.core.desired import RegisteredModel, pointed
from syncd.core.resolved import Resolution, ResolutionCache
from syncd.settings import TargetSettings

MODELS = ["llama-a", "llama-b", "mistral"]
ALIASES = ["production", "staging", "candidate"]


def target(**fields: object) -> TargetSettings:
    base: dict[str, object] = {"name": "prod", "root": Path("/r"), "models": ["llama-*"]}
    base.update(fields or {"alias": "production"})
    return TargetSettings(**base)  # type: ignore[arg-type]


def test_alias_target_wants_the_aliased_versions_of_matching_models() -> None:
    models = [
        RegisteredModel("llama-a", {"production": "3", "staging": "4"}),
        RegisteredModel("llama-b", {"staging": "2"}),
        RegisteredModel("mistral", {"production": "9"}),
    ]
    wanted = pointed(target(alias="production", prefetch=["staging"]), models)
    assert [(r.model, r.version, r.selector, role) for r, role in wanted] == [
        ("llama-a", "3", "alias production", "serving"),
        ("llama-a", "4", "alias staging", "prefetch"),
        ("llama-b", "2", "alias staging", "prefetch"),
    ]


def test_prefetch_of_the_serving_version_adds_nothing() -> None:
    models = [RegisteredModel("llama-a", {"production": "3", "staging": "3"})]
    wanted = pointed(target(alias="production", prefetch=["staging"]), models)
    assert [(r.version, role) for r, role in wanted] == [("3", "serving")]


def test_stage_target_uses_the_listed_latest_stage_versions() -> None:
    models = [RegisteredModel("llama-a", stages={"Production": "5", "Staging": "6"})]
    (wanted,) = pointed(target(stage="Production"), models)
    assert (wanted[0].version, wanted[0].selector) == ("5", "stage Production")


listings = st.lists(
    st.builds(
        RegisteredModel,
        st.sampled_from(MODELS),
        st.dictionaries(st.sampled_from(ALIASES), st.sampled_from(["1", "2", "3", "4"])),
    ),
    max_size=6,
).map(lambda ms: list({m.name: m for m in ms}.values()))


@given(moves=st.lists(listings, min_size=1, max_size=8), restarts=st.lists(st.booleans()))
@settings(max_examples=200, deadline=None)
def test_any_sequence_of_moves_and_restarts_wants_exactly_the_pointed_versions(
    moves: list[list[RegisteredModel]], restarts: list[bool]
) -> None:
    """Resolutions come from the cache when known and survive restarts through its JSON form;
    after every listing, what is wanted is exactly what the aliases point at now."""
    config = target(alias="production", prefetch=["staging"])
    cache = ResolutionCache()
    resolved_calls = 0

    def resolve(model: str, version: str) -> Resolution:
        nonlocal resolved_calls
        known = cache.get(model, version, "model")
        if known is None:
            resolved_calls += 1
            run_id = f"{abs(hash((model, version))):032x}"[-32:]
            known = Resolution(run_id, "model_context", f"s3://b/0/{run_id}/artifacts/model")
            cache.put(model, version, "model", known)
        return known

    for index, models in enumerate(moves):
        if index < len(restarts) and restarts[index]:
            saved = cache.to_json()
            cache = ResolutionCache()
            cache.merge_json(saved)  # a restart: everything known comes back from disk
        wanted = {(r.model, r.version) for r, _ in pointed(config, models)}
        expected = {
            (m.name, version)
            for m in models
            if m.name.startswith("llama-")
            for alias, version in m.aliases.items()
            if alias in ("production", "staging")
        }
        assert wanted == expected
        for model, version in wanted:
            resolve(model, version)
    distinct = {
        (m.name, v)
        for models in moves
        for m in models
        if m.name.startswith("llama-")
        for a, v in m.aliases.items()
        if a in ("production", "staging")
    }
    assert resolved_calls == len(distinct)  # each version resolved once, restarts included


def test_cache_refuses_rows_that_could_reach_a_path() -> None:
    cache = ResolutionCache()
    own, other = "a" * 32, "b" * 32
    text = (
        '{"resolutions": [{"model": "m", "version": "1", "artifact_path": "model",'
        ' "run_id": "../../etc", "basis": "model_context", "source_uri": "s3://b"},'
        ' {"model": "m", "version": "2", "artifact_path": "model",'
        f' "run_id": "{own}", "basis": "model_context",'
        f' "source_uri": "s3://b/1/{own}/artifacts/model"}},'
        # a row whose source is another run's binaries: it would redirect the download
        ' {"model": "m", "version": "3", "artifact_path": "model",'
        f' "run_id": "{own}", "basis": "model_context",'
        f' "source_uri": "s3://b/1/{other}/artifacts/model"}}]}}'
    )
    assert cache.merge_json(text) == 1
    assert cache.get("m", "1", "model") is None
    assert cache.get("m", "2", "model") is not None
    assert cache.get("m", "3", "model") is None
    assert cache.merge_json("not json") == 0
