"""Key naming: every key of one name shares a Cluster slot, and names never collide."""

import itertools

import pytest
from redis.crc import key_slot

from patterns_server.storage import KeySpace


def test_layout_is_prefix_namespace_pattern_and_hash_tagged_name() -> None:
    keys = KeySpace("patterns", "counter", "default")
    assert keys("visitors") == "patterns:default:counter:{visitors}"
    assert keys("user:42", "tb", "100") == "patterns:default:counter:{user:42}:tb:100"


def test_all_keys_of_one_name_share_a_slot() -> None:
    keys = KeySpace("p", "ratelimit", "default")
    for name in ["user:42", "a}b", "}", "}x", "{x}", "{", "é", "#", "a#c"]:
        slots = {key_slot(keys(name, *parts).encode()) for parts in [(), ("a",), ("a", "b")]}
        assert len(slots) == 1, name


def every_name(alphabet: str, longest: int) -> list[str]:
    return [
        "".join(letters)
        for length in range(1, longest + 1)
        for letters in itertools.product(alphabet, repeat=length)
    ]


def hash_tag(key: str) -> str:
    """What Redis hashes: the text between the first `{` and the first `}` after it."""
    start = key.index("{")
    return key[start + 1 : key.index("}", start)]


def test_key_naming_is_injective_over_hostile_names() -> None:
    """Every name of up to 5 characters from `a{}#:` (3,905 of them), with and without
    parts: no two give one key, and every key's hash tag is the whole (escaped) name, never
    empty. (A name holding `}` was once stored under `#` and its SHA-1, which a caller
    could send as a name of its own: two names, one rate limit.)"""
    keys = KeySpace("p", "ratelimit", "default")
    names = every_name("a{}#:", 5)
    built = [keys(name, *parts) for name in names for parts in [(), ("x",), ("x", "y")]]
    assert len(set(built)) == len(built) == 3 * len(names)
    tags = {hash_tag(keys(name)) for name in names}
    assert len(tags) == len(names) and "" not in tags


def test_the_reported_collision_is_gone() -> None:
    keys = KeySpace("patterns", "ratelimit", "default")
    impostor = "#48b8e67b15cce45c8d5b30c29a84d40a52b44363"  # once the key of "victim}"
    assert keys("victim}") != keys(impostor)
    assert keys("victim}") != keys("victim#c")


def test_braces_in_the_fixed_parts_are_refused() -> None:
    with pytest.raises(ValueError):
        KeySpace("p", "counter", "tenant{1}")
