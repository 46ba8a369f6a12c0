"""Key names: `<prefix>:<namespace>:<pattern>:{<name>}[:<part>...]`, built only here."""

# Redis ends a hash tag at the first `}`: inside the braces a name is written with `}` and
# `#` escaped (`#` first, so that the escaping is reversible: two names never share a key).
_ESCAPES = str.maketrans({"#": "#h", "}": "#c"})


class KeySpace:
    """Names the keys of one pattern: `<prefix>:<namespace>:<pattern>:{<name>}[:<part>...]`.

    The braces are a Redis Cluster hash tag: every key derived from one name lands in one
    slot, so one script can touch them all. Inside them the name is escaped (`#` as `#h`,
    `}` as `#c`), so the tag always ends where the name does and is never empty, and the
    escaping can be undone: distinct names (and parts, which never hold braces) give
    distinct keys.
    """

    def __init__(self, prefix: str, namespace: str, pattern: str) -> None:
        if any(brace in prefix + namespace + pattern for brace in "{}"):
            raise ValueError("a key's prefix, namespace and pattern hold no braces")
        self._base = f"{prefix}:{namespace}:{pattern}:"

    def __call__(self, name: str, *parts: str) -> str:
        if "#" in name or "}" in name:
            name = name.translate(_ESCAPES)
        return "".join((self._base, "{", name, "}", *(":" + part for part in parts)))
