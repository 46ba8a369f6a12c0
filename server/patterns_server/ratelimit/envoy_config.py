"""Envoy's rate limit configuration, in envoyproxy/ratelimit's YAML format, and which limit a
request's descriptor meets: the semantics of envoyproxy/ratelimit's `src/config/config_impl.go`.

A file holds one `domain` and its nested `descriptors` (`key`, optional `value`, optional
`rate_limit`, `descriptors` below); `--envoy-config` names a file, or a directory whose
`*.yaml` / `*.yml` files (any depth, dot-files left out) are read together, one domain each.
Matching, for the entries of a request's descriptor, one level at a time: the entry's exact
`key_value`, else the first wildcard value (`*` anywhere) that matches, else the key alone;
a limit applies only at the level of the descriptor's last entry. Plain Python: the servicer
turns requests into (domain, entries) and reads the `Match`.
"""

import asyncio
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import yaml

from patterns_server.core.errors import InvalidArgument
from patterns_server.ratelimit.ratelimit import Algorithm, Policy, capacity

logger = logging.getLogger(__name__)

# envoyproxy/ratelimit's units, in seconds (its `UnitToDivider`: a month is 30 days, a year
# 365); windows start at multiples of the unit (times `unit_multiplier`) since the epoch.
UNIT_SECONDS = {
    "SECOND": 1,
    "MINUTE": 60,
    "HOUR": 3_600,
    "DAY": 86_400,
    "WEEK": 7 * 86_400,
    "MONTH": 30 * 86_400,
    "YEAR": 365 * 86_400,
}
# Our addition, `algorithm` in a rate_limit: the algorithms of RateLimiter, as the contract
# names them, in lower case (fixed_window when absent, as envoyproxy/ratelimit counts).
ALGORITHMS = {algorithm.name.lower(): algorithm for algorithm in Algorithm}
MAX_UINT32 = (1 << 32) - 1

_ROOT_KEYS = {"domain", "descriptors"}
_DESCRIPTOR_KEYS = {
    "key",
    "value",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "metadata",
}
_RATE_LIMIT_KEYS = {
    "requests_per_unit",
    "unit",
    "unit_multiplier",
    "unlimited",
    "name",
    "replaces",
    "algorithm",
}


class EnvoyConfigError(Exception):
    """A configuration that cannot be used: the message names the file and the line."""


@dataclass(frozen=True)
class Limit:
    """A `rate_limit` of the configuration. `policy` is what RateLimiter decides with; None
    for an unlimited one, and for `requests_per_unit: 0`, which refuses every request."""

    requests_per_unit: int
    unit: str  # a key of UNIT_SECONDS; "" when unlimited
    unit_multiplier: int = 1
    algorithm: Algorithm = Algorithm.FIXED_WINDOW
    name: str = ""
    replaces: tuple[str, ...] = ()
    unlimited: bool = False
    shadow_mode: bool = False
    detailed_metric: bool = False
    policy: Policy | None = None


class Match(NamedTuple):
    """The limit a descriptor meets, and the entries that name its counter: the request's
    own, except where a `share_threshold` wildcard matched (there, the wildcard itself, so
    every value it matches shares one counter)."""

    limit: Limit
    counter: tuple[tuple[str, str], ...]


@dataclass
class _Node:
    limit: Limit | None = None
    children: dict[str, "_Node"] = field(default_factory=dict)
    # The children whose value holds a `*`: (their "key_value", the value split on `*`).
    wildcards: list[tuple[str, list[str]]] = field(default_factory=list)
    share_threshold: bool = False


class EnvoyConfig:
    """Every domain of a configuration (none: every descriptor is unknown, no limit)."""

    def __init__(self, domains: dict[str, _Node] | None = None, files: int = 0) -> None:
        self._domains = domains or {}
        self.files = files

    @property
    def domains(self) -> list[str]:
        return sorted(self._domains)

    def knows(self, domain: str) -> bool:
        return domain in self._domains

    def limit_for(self, domain: str, entries: Sequence[tuple[str, str]]) -> Match | None:
        """The limit that a descriptor of `domain` with `entries` meets, if any."""
        node = self._domains.get(domain)
        if node is None or not entries:
            return None
        parent = node
        found: Limit | None = None
        shared: dict[int, str] = {}
        last = len(entries) - 1
        for index, (key, value) in enumerate(entries):
            full = f"{key}_{value}"
            child = parent.children.get(full)
            if child is None:
                for pattern, parts in parent.wildcards:
                    if _wildcard_match(parts, full):
                        child = parent.children[pattern]
                        if child.share_threshold:
                            shared[index] = pattern.removeprefix(key + "_")
                        break
            if child is None:
                child = parent.children.get(key)
            if child is None:
                break
            if child.limit is not None and index == last:
                found = child.limit
            if not child.children:
                break
            parent = child
        if found is None:
            return None
        counter = tuple(
            (key, shared.get(index, value)) for index, (key, value) in enumerate(entries)
        )
        return Match(found, counter)


def _wildcard_match(parts: list[str], value: str) -> bool:
    """Whether `value` matches the pattern split into `parts` on `*` (each `*` any text,
    the empty text too): envoyproxy/ratelimit's `wildcardMatch`."""
    if len(parts) == 1:
        return parts[0] == value
    first, last = parts[0], parts[-1]
    if not value.startswith(first) or not value.endswith(last):
        return False
    if len(value) < sum(map(len, parts)):
        return False
    remaining = value[len(first) : len(value) - len(last)]
    for part in parts[1:-1]:
        at = remaining.find(part)
        if at < 0:
            return False
        remaining = remaining[at + len(part) :]
    return True


def config_files(path: Path) -> list[Path]:
    """The files a configuration is read from: `path` itself, or the YAML files under the
    directory `path` (sorted, dot-files and dot-directories left out)."""
    if not path.is_dir():
        return [path]
    found = []
    for directory, subdirectories, names in os.walk(path):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and name.endswith((".yaml", ".yml")):
                found.append(Path(directory) / name)
    return found


def load_config(path: Path) -> EnvoyConfig:
    """The configuration at `path` (a file or a directory); EnvoyConfigError otherwise."""
    if not path.exists():
        raise EnvoyConfigError(f"{path}: no such file or directory")
    domains: dict[str, _Node] = {}
    files = config_files(path)
    for file in files:
        try:
            text = file.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise EnvoyConfigError(f"{file}: cannot read it: {error}") from None
        domain, node = _Parser(file).root(text)
        if domain in domains:
            raise EnvoyConfigError(f"{file}: duplicate domain '{domain}' (another file has it)")
        domains[domain] = node
    return EnvoyConfig(domains, len(files))


class _Parser:
    """One file: checks each mapping's keys and each value's type as it walks the YAML
    nodes, so that every error names its line."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._scalars = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node | None, what: str) -> EnvoyConfigError:
        where = f"line {node.start_mark.line + 1}: " if node is not None else ""
        return EnvoyConfigError(f"{self._path}: {where}{what}")

    def root(self, text: str) -> tuple[str, _Node]:
        try:
            document = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error)
            raise EnvoyConfigError(f"{self._path}: {where}not valid YAML: {problem}") from None
        if document is None:
            raise EnvoyConfigError(f"{self._path}: config file cannot have empty domain")
        fields = self.mapping(document, _ROOT_KEYS, "the file")
        domain = self.string(fields.get("domain"))
        if not domain:
            raise self.error(document, "config file cannot have empty domain")
        node = _Node()
        self.descriptors(node, fields.get("descriptors"), domain)
        return domain, node

    def mapping(self, node: yaml.Node, allowed: set[str], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        fields: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(key_node, f"unknown key '{key}' in {what} (known: {known})")
            if key in fields:
                raise self.error(key_node, f"'{key}' appears twice in {what}")
            fields[key] = value_node
        return fields

    def items(self, node: yaml.Node | None, what: str) -> Iterator[yaml.Node]:
        if node is None or _is_null(node):
            return iter(())
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        return iter(node.value)

    def string(self, node: yaml.Node | None) -> str:
        """A scalar's text, as envoyproxy/ratelimit's YAML decoder reads it into a string
        (`value: 42` is "42"); null is ""."""
        if node is None or _is_null(node):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, "must be a string")
        return str(node.value)

    def boolean(self, node: yaml.Node | None, name: str) -> bool:
        if node is None or _is_null(node):
            return False
        if node.tag != "tag:yaml.org,2002:bool":
            raise self.error(node, f"{name} must be true or false")
        return bool(self._scalars.construct_object(node))

    def uint32(self, node: yaml.Node | None, name: str) -> int | None:
        if node is None or _is_null(node):
            return None
        if node.tag != "tag:yaml.org,2002:int":
            raise self.error(node, f"{name} must be a whole number")
        number = int(self._scalars.construct_object(node))
        if not 0 <= number <= MAX_UINT32:
            raise self.error(node, f"{name} must be 0 to {MAX_UINT32:,}")
        return number

    def descriptors(self, parent: _Node, node: yaml.Node | None, path: str) -> None:
        for item in self.items(node, "descriptors"):
            fields = self.mapping(item, _DESCRIPTOR_KEYS, "a descriptor")
            key = self.string(fields.get("key"))
            if not key:
                raise self.error(item, "descriptor has empty key")
            value = self.string(fields.get("value"))
            full = f"{key}_{value}" if value else key
            if full in parent.children:
                raise self.error(item, f"duplicate descriptor composite key '{path}.{full}'")
            if self.boolean(fields.get("quota_mode"), "quota_mode"):
                raise self.error(fields["quota_mode"], "quota_mode is not supported by this server")
            share_threshold = self.boolean(fields.get("share_threshold"), "share_threshold")
            if share_threshold and "*" not in full:
                raise self.error(
                    fields["share_threshold"],
                    "share_threshold can only be used with wildcard values (containing '*'), "
                    f"but found key '{full}'",
                )
            child = _Node(share_threshold=share_threshold)
            # value_to_metric and metadata shape envoyproxy/ratelimit's statistics and
            # dynamic metadata, which this server does not produce: read, then left.
            self.boolean(fields.get("value_to_metric"), "value_to_metric")
            if "rate_limit" in fields:
                child.limit = self.limit(
                    fields["rate_limit"],
                    shadow_mode=self.boolean(fields.get("shadow_mode"), "shadow_mode"),
                    detailed_metric=self.boolean(fields.get("detailed_metric"), "detailed_metric"),
                )
            if "*" in full:
                parent.wildcards.append((full, full.split("*")))
            self.descriptors(child, fields.get("descriptors"), f"{path}.{full}")
            parent.children[full] = child

    def limit(self, node: yaml.Node, shadow_mode: bool, detailed_metric: bool) -> Limit:
        fields = self.mapping(node, _RATE_LIMIT_KEYS, "a rate_limit")
        unlimited = self.boolean(fields.get("unlimited"), "unlimited")
        unit_text = self.string(fields.get("unit"))
        unit = unit_text.upper()
        if unlimited:
            if unit in UNIT_SECONDS:
                raise self.error(
                    fields["unit"], "should not specify rate limit unit when unlimited"
                )
            unit = ""
        elif unit not in UNIT_SECONDS:
            raise self.error(fields.get("unit", node), f"invalid rate limit unit '{unit_text}'")
        requests = self.uint32(fields.get("requests_per_unit"), "requests_per_unit") or 0
        multiplier = self.uint32(fields.get("unit_multiplier"), "unit_multiplier")
        if multiplier == 0:
            raise self.error(fields["unit_multiplier"], "invalid unit multiplier of 0")
        name = self.string(fields.get("name"))
        replaces = []
        for item in self.items(fields.get("replaces"), "replaces"):
            entry = self.mapping(item, {"name"}, "a replaces entry")
            replaced = self.string(entry.get("name"))
            if not replaced:
                raise self.error(item, "should not have an empty replaces entry")
            if replaced == name:
                raise self.error(item, "replaces should not contain name of same descriptor")
            replaces.append(replaced)
        algorithm_text = self.string(fields.get("algorithm")) or "fixed_window"
        algorithm = ALGORITHMS.get(algorithm_text.lower())
        if algorithm is None:
            raise self.error(
                fields["algorithm"],
                f"unknown algorithm '{algorithm_text}' (one of {', '.join(ALGORITHMS)})",
            )
        limit = Limit(
            requests_per_unit=requests,
            unit=unit,
            unit_multiplier=multiplier or 1,
            algorithm=algorithm,
            name=name,
            replaces=tuple(replaces),
            unlimited=unlimited,
            shadow_mode=shadow_mode,
            detailed_metric=detailed_metric,
        )
        if unlimited or requests == 0:
            return limit
        period = timedelta(seconds=UNIT_SECONDS[unit] * limit.unit_multiplier)
        policy = Policy(algorithm, requests, period)
        try:
            capacity(policy)
        except InvalidArgument as error:
            what = {"policy.limit": "requests_per_unit", "policy.period": "unit * unit_multiplier"}
            field_name = what.get(error.field, error.field)
            raise self.error(node, f"{field_name} {error.description}") from None
        return Limit(**{**limit.__dict__, "policy": policy})


def _is_null(node: yaml.Node) -> bool:
    return node.tag == "tag:yaml.org,2002:null"


class EnvoyConfigSource:
    """The configuration at `path`, read again when its files change and on `reload()`
    (SIGHUP); a version that cannot be used leaves the last good one in force."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = EnvoyConfig()
        self._seen: object = None

    def load(self) -> EnvoyConfig:
        """Read it now and put it in force; EnvoyConfigError otherwise."""
        self._seen = self._signature()
        self.config = load_config(self.path)
        return self.config

    def reload(self) -> bool:
        """Read it again; whether the new version is in force."""
        try:
            config = self.load()
        except EnvoyConfigError as error:
            logger.error(
                "Envoy rate limit config not reloaded, the previous version stays in force: %s",
                error,
            )
            return False
        logger.info("Envoy rate limit config reloaded: domains %s", ", ".join(config.domains))
        return True

    async def watch(self, interval: float) -> None:
        """Reload whenever a file's time, size or inode changes, or the set of files does
        (until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            signature = await asyncio.to_thread(self._signature)
            if signature != self._seen:
                self.reload()

    def _signature(self) -> object:
        try:
            return [
                (str(file), status.st_mtime_ns, status.st_size, status.st_ino)
                for file in config_files(self.path)
                for status in [file.stat()]
            ]
        except OSError:
            return None
