"""Key and channel names: `<prefix>:<namespace>:<pattern>:{<name>}[:<part>...]` for keys,
`<prefix>:<namespace>:<pattern>:<name>` for Pub/Sub channels, built only here.

The namespace is the calling tenant's (`core.tenancy`), read at each name built: no
request can name, scan, match or subscribe outside its own namespace, whatever it writes
(namespaces hold no `:`, so one is never the start of another's base).
"""

from patterns_server.core.tenancy import current_namespace

# Redis ends a hash tag at the first `}`: inside the braces a name is written with `}` and
# `#` escaped (`#` first, so that the escaping is reversible: two names never share a key).
_ESCAPES = str.maketrans({"#": "#h", "}": "#c"})
# Characters special in Redis glob patterns (PSUBSCRIBE), escaped where meant literally.
_GLOB_ESCAPES = str.maketrans({char: "\\" + char for char in "*?[]\\"})


class KeySpace:
    """Names the keys of one pattern: `<prefix>:<namespace>:<pattern>:{<name>}[:<part>...]`.

    The braces are a Redis Cluster hash tag: every key derived from one name lands in one
    slot, so one script can touch them all. Inside them the name is escaped (`#` as `#h`,
    `}` as `#c`), so the tag always ends where the name does and is never empty, and the
    escaping can be undone: distinct names (and parts, which never hold braces) give
    distinct keys.
    """

    def __init__(self, prefix: str, pattern: str, namespace: str | None = None) -> None:
        """`namespace` None: the calling tenant's, at each use; else this one always (for
        the server's own keys: health probes, the Pub/Sub route)."""
        if any(brace in prefix + (namespace or "") + pattern for brace in "{}"):
            raise ValueError("a key's prefix, namespace and pattern hold no braces")
        self._prefix = prefix
        self._pattern = pattern
        self._namespace = namespace
        self._bases: dict[str, str] = {}  # one per namespace seen: tenants are few

    @property
    def _base(self) -> str:
        namespace = self._namespace or current_namespace()
        base = self._bases.get(namespace)
        if base is None:
            base = self._bases[namespace] = f"{self._prefix}:{namespace}:{self._pattern}:"
        return base

    def __call__(self, name: str, *parts: str) -> str:
        if "#" in name or "}" in name:
            name = name.translate(_ESCAPES)
        return "".join((self._base, "{", name, "}", *(":" + part for part in parts)))

    def matching(self, prefix: str) -> str:
        """A SCAN pattern for the keys of every name that starts with `prefix` (their
        parts included), `prefix` taken literally."""
        if "#" in prefix or "}" in prefix:
            prefix = prefix.translate(_ESCAPES)
        return self._base.translate(_GLOB_ESCAPES) + "{" + prefix.translate(_GLOB_ESCAPES) + "*"

    # Pub/Sub channels are not keys: no hash tag (classic Pub/Sub reaches every Cluster
    # node), so the caller's name follows the namespace as it is, and the caller's glob
    # patterns keep their meaning.

    def channel(self, name: str) -> bytes:
        """The Redis channel of `name`."""
        return (self._base + name).encode()

    def channel_pattern(self, pattern: str) -> bytes:
        """The Redis pattern of the caller's glob `pattern`: it matches the channels of
        this namespace whose names `pattern` matches, and no others."""
        return (self._base.translate(_GLOB_ESCAPES) + pattern).encode()

    def channel_name(self, channel: bytes) -> str:
        """The caller's name of the Redis channel `channel` (made by `channel`)."""
        return channel.decode()[len(self._base) :]
