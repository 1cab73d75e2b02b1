import pytest

from syncd.core.ids import is_run_id, safe_relative_path
from syncd.errors import UnsafeKeyError


@pytest.mark.parametrize(
    "value",
    ["0123456789abcdef0123456789abcdef", "f" * 32],
)
def test_run_ids_accepted(value: str) -> None:
    assert is_run_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0123",
        "0123456789ABCDEF0123456789ABCDEF",
        "g" * 32,
        "a" * 33,
        "../" + "a" * 29,
        None,
        42,
    ],
)
def test_run_ids_refused(value: object) -> None:
    assert not is_run_id(value)


@pytest.mark.parametrize(
    "key",
    [
        "config.json",
        "shards/model-00001.safetensors",
        "a/b/c.bin",
        "..hidden",
        "x..y",
        "tok en.json",
    ],
)
def test_safe_keys_kept(key: str) -> None:
    assert safe_relative_path(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../evil", "'..'"),
        ("a/../../evil", "'..'"),
        ("a/..", "'..'"),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("a\\..\\b", "backslash"),
        ("a\nb", "control"),
        (".syncd/manifests/x.json", "reserved"),
        ("a/" + "x" * 256, "255"),
    ],
)
def test_unsafe_keys_refused(key: str, reason: str) -> None:
    with pytest.raises(UnsafeKeyError, match=reason):
        safe_relative_path(key)
