"""Key names: `<prefix>:<namespace>:<pattern>:{<name>}[:<part>...]`, built only here."""

import hashlib


class KeySpace:
    """Names the keys of one pattern: `<prefix>:<namespace>:<pattern>:{<name>}[:<part>...]`.

    The braces are a Redis Cluster hash tag: every key derived from one name lands in one
    slot, so one script can touch them all. Redis ends a tag at the first `}`, so a name
    that holds one is replaced in the tag by `#` and its SHA-1: the keys of such a name
    still share a slot (a name starting with `}` would otherwise give an empty tag, which
    Redis ignores). Parts never contain braces, so distinct names never share a key.
    """

    def __init__(self, prefix: str, namespace: str, pattern: str) -> None:
        self._base = f"{prefix}:{namespace}:{pattern}:"

    def __call__(self, name: str, *parts: str) -> str:
        if "}" in name:
            name = "#" + hashlib.sha1(name.encode()).hexdigest()
        return "".join((self._base, "{", name, "}", *(":" + part for part in parts)))
