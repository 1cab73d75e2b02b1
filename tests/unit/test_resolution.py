import pytest

from syncd.core.resolution import parse_model_context, resolve_parent_run
from syncd.errors import ResolutionError

PARENT = "a" * 32
OTHER = "b" * 32
CHILD = "c" * 32


def resolve(**kwargs: object):  # type: ignore[no-untyped-def]
    defaults: dict[str, object] = {
        "version_run_id": CHILD,
        "context_run_id": None,
        "parent_tag": None,
        "allow_foreign_parent": False,
    }
    defaults.update(kwargs)
    return resolve_parent_run("M", "3", **defaults)  # type: ignore[arg-type]


def test_context_wins_when_it_agrees_with_the_parent_tag() -> None:
    parent = resolve(context_run_id=PARENT, parent_tag=PARENT)
    assert (parent.run_id, parent.basis) == (PARENT, "model_context")


def test_context_alone_is_enough() -> None:
    assert resolve(context_run_id=PARENT).run_id == PARENT


def test_parent_tag_when_no_context() -> None:
    parent = resolve(parent_tag=PARENT)
    assert (parent.run_id, parent.basis) == (PARENT, "parent_tag")


def test_version_run_when_nothing_else() -> None:
    parent = resolve()
    assert (parent.run_id, parent.basis) == (CHILD, "version_run")


def test_foreign_parent_refused_by_default() -> None:
    with pytest.raises(ResolutionError, match="foreign parent") as caught:
        resolve(context_run_id=OTHER, parent_tag=PARENT)
    assert caught.value.model == "M"
    assert caught.value.version == "3"


def test_foreign_parent_allowed_when_relaxed() -> None:
    assert (
        resolve(context_run_id=OTHER, parent_tag=PARENT, allow_foreign_parent=True).run_id == OTHER
    )


@pytest.mark.parametrize("bad", ["../../etc", "A" * 32, "abc", ""])
def test_bad_run_ids_refused(bad: str) -> None:
    with pytest.raises(ResolutionError, match="32-hex"):
        resolve(context_run_id=bad)
    with pytest.raises(ResolutionError, match="32-hex"):
        resolve(parent_tag=bad)
    with pytest.raises(ResolutionError, match="32-hex"):
        resolve(version_run_id=bad)


def test_no_run_at_all() -> None:
    with pytest.raises(ResolutionError, match="no run"):
        resolve(version_run_id=None)


def test_model_context_parsed() -> None:
    assert parse_model_context("M", "1", f'{{"run_id": "{PARENT}"}}'.encode()) == PARENT


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "no run_id"),
        (b'{"other": 1}', "no run_id"),
        (b'{"run_id": "../../x"}', "32-hex"),
        (b'{"run_id": 12}', "32-hex"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_model_context_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ResolutionError, match=message):
        parse_model_context("M", "1", raw)
