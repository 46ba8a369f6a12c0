"""Key naming: every key of one name shares a Cluster slot, and names never collide."""

import itertools

from redis.crc import key_slot

from patterns_server.storage import KeySpace


def test_layout_is_prefix_namespace_pattern_and_hash_tagged_name() -> None:
    keys = KeySpace("patterns", "default", "counter")
    assert keys("visitors") == "patterns:default:counter:{visitors}"
    assert keys("user:42", "tb", "100") == "patterns:default:counter:{user:42}:tb:100"


def test_all_keys_of_one_name_share_a_slot() -> None:
    keys = KeySpace("p", "default", "ratelimit")
    for name in ["user:42", "a}b", "}", "}x", "{x}", "{", "é"]:
        slots = {key_slot(keys(name, *parts).encode()) for parts in [(), ("a",), ("a", "b")]}
        assert len(slots) == 1, name


def test_distinct_names_and_parts_give_distinct_keys() -> None:
    keys = KeySpace("p", "default", "counter")
    names = ["a", "a}", "a}:b", "}", "}a", "{", "a:b", "{a}", "#"]
    parts = [(), ("b",), ("b", "c"), ("}",)]
    built = [
        keys(name, *part)
        for name, part in itertools.product(names, parts)
        if "}" not in "".join(part)
    ]
    assert len(built) == len(set(built))
