"""Envoy's rate limit configuration (envoyproxy/ratelimit's YAML), read and matched as
envoyproxy/ratelimit's `src/config/config_impl.go` does: no Redis, no gRPC."""

import asyncio
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from patterns_server.ratelimit.envoy_config import (
    EnvoyConfig,
    EnvoyConfigError,
    EnvoyConfigSource,
    load_config,
)
from patterns_server.ratelimit.ratelimit import Algorithm, Policy

EDGE = """
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: path
    value: /api/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 10, algorithm: gcra}
  - key: path
    value: /web/*/img
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: path
    value: /api/login
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: path
    rate_limit: {unit: hour, requests_per_unit: 1000}
  - key: user
    value: alice
    rate_limit:
      unit: minute
      unit_multiplier: 5
      requests_per_unit: 100
      name: alice
      replaces: [{name: users}]
    descriptors:
      - key: method
        rate_limit: {unlimited: true}
  - key: user
    detailed_metric: true
    shadow_mode: true
    rate_limit: {unit: day, requests_per_unit: 7, name: users}
  - key: tenant
    descriptors:
      - key: plan
        value: free
        rate_limit: {unit: second, requests_per_unit: 1}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def edge(tmp_path: Path) -> EnvoyConfig:
    return load_config(write(tmp_path / "edge.yaml", EDGE))


def limit_of(config: EnvoyConfig, *entries: tuple[str, str], domain: str = "edge") -> int | None:
    match = config.limit_for(domain, entries)
    return None if match is None else match.limit.requests_per_unit


def test_an_exact_value_wins_over_a_wildcard_which_wins_over_the_key_alone(
    edge: EnvoyConfig,
) -> None:
    assert limit_of(edge, ("path", "/api/login")) == 5
    assert limit_of(edge, ("path", "/api/orders")) == 10
    assert limit_of(edge, ("path", "/web/a/b/img")) == 20  # a `*` inside the value
    assert limit_of(edge, ("path", "/web/a/b/css")) == 1000
    assert limit_of(edge, ("path", "/")) == 1000
    assert limit_of(edge, ("remote_address", "10.0.0.1")) == 3


def test_a_limit_applies_only_at_the_depth_of_the_descriptors_last_entry(
    edge: EnvoyConfig,
) -> None:
    assert limit_of(edge, ("remote_address", "1"), ("path", "/")) is None  # deeper than it
    assert limit_of(edge, ("tenant", "t1")) is None  # no limit at that level
    assert limit_of(edge, ("tenant", "t1"), ("plan", "free")) == 1
    assert limit_of(edge, ("tenant", "t1"), ("plan", "paid")) is None
    assert limit_of(edge, ("nothing", "x")) is None
    assert limit_of(edge, ("path", "/"), domain="unknown") is None


def test_what_a_limit_carries(edge: EnvoyConfig) -> None:
    alice = edge.limit_for("edge", [("user", "alice")])
    assert alice is not None
    assert alice.limit.name == "alice" and alice.limit.replaces == ("users",)
    assert alice.limit.policy == Policy(Algorithm.FIXED_WINDOW, 100, timedelta(minutes=5))
    unlimited = edge.limit_for("edge", [("user", "alice"), ("method", "GET")])
    assert unlimited is not None and unlimited.limit.unlimited and unlimited.limit.policy is None
    bob = edge.limit_for("edge", [("user", "bob")])
    assert bob is not None and bob.limit.shadow_mode and bob.limit.detailed_metric
    api = edge.limit_for("edge", [("path", "/api/x")])
    assert api is not None and api.limit.algorithm is Algorithm.GCRA


def test_counters_are_the_requests_entries_except_for_shared_wildcards(
    edge: EnvoyConfig,
) -> None:
    one = edge.limit_for("edge", [("path", "/api/a")])
    two = edge.limit_for("edge", [("path", "/api/b")])
    assert one is not None and two is not None
    assert one.counter == two.counter == (("path", "/api/*"),)  # share_threshold
    web = edge.limit_for("edge", [("path", "/web/a/img")])
    assert web is not None and web.counter == (("path", "/web/a/img"),)
    user = edge.limit_for("edge", [("user", "bob")])
    assert user is not None and user.counter == (("user", "bob"),)


def test_a_directory_holds_a_domain_per_file(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", EDGE)
    (tmp_path / "more").mkdir()
    write(
        tmp_path / "more" / "b.yml",
        "domain: mail\ndescriptors: [{key: k, rate_limit: {unit: second, requests_per_unit: 2}}]\n",
    )
    write(tmp_path / ".hidden.yaml", "not: [valid")
    write(tmp_path / "notes.txt", "not: [valid")
    config = load_config(tmp_path)
    assert config.domains == ["edge", "mail"]
    assert limit_of(config, ("k", "v"), domain="mail") == 2


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("descriptors: []\n", None, "config file cannot have empty domain"),
        ("domain: d\ndescriptors:\n  - value: v\n", 3, "descriptor has empty key"),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n",
            4,
            "invalid rate limit unit 'fortnight'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n"
            "    rate_limit: {unit: second, unlimited: true}\n",
            4,
            "should not specify rate limit unit when unlimited",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n  - key: k\n",
            4,
            "duplicate descriptor composite key 'd.k'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
            "      unit_multiplier: 0\n",
            6,
            "invalid unit multiplier of 0",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
            "      name: n\n      replaces: [{name: n}]\n",
            7,
            "replaces should not contain name of same descriptor",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
            "      algorthm: gcra\n",
            6,
            "unknown key 'algorthm' in a rate_limit",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
            "      algorithm: leaky\n",
            6,
            "unknown algorithm 'leaky'",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
            "      requests_per_unit: many\n",
            6,
            "requests_per_unit must be a whole number",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    quota_mode: true\n",
            4,
            "quota_mode is not supported",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    share_threshold: true\n",
            4,
            "share_threshold can only be used with wildcard values",
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: year\n"
            "      unit_multiplier: 2\n      requests_per_unit: 1\n",
            5,
            "unit * unit_multiplier must be 1 ms to 366 days",
        ),
        ("domain: d\ndescriptors:\n  - key: k\n   bad: [\n", 4, "not valid YAML"),
    ],
)
def test_errors_name_the_file_and_the_line(
    tmp_path: Path, text: str, line: int | None, message: str
) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(EnvoyConfigError) as error:
        load_config(path)
    where = f"{path}: line {line}: " if line else f"{path}: "
    assert str(error.value).startswith(where), str(error.value)
    assert message in str(error.value)


def test_a_domain_twice_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "domain: d\n")
    write(tmp_path / "b.yaml", "domain: d\n")
    with pytest.raises(EnvoyConfigError, match="duplicate domain 'd'"):
        load_config(tmp_path)


def test_scalars_read_as_envoyproxy_ratelimit_reads_them(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path / "c.yaml",
            "domain: d\ndescriptors:\n  - key: code\n    value: 429\n"
            "    rate_limit: {unit: SECOND, requests_per_unit: 0}\n",
        )
    )
    match = config.limit_for("d", [("code", "429")])  # the value's text; the unit in any case
    assert match is not None and match.limit.requests_per_unit == 0
    assert match.limit.policy is None  # 0 per unit: every request is over the limit


def test_a_bad_version_keeps_the_last_good_one_and_a_change_is_picked_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "c.yaml", "domain: one\n")
    source = EnvoyConfigSource(path)
    assert source.load().domains == ["one"]
    write(path, "domain: two\ndescriptors: [{key: k, rate_limit: {unit: weak}}]\n")
    assert not source.reload()
    assert source.config.domains == ["one"]
    assert (
        f"the previous version stays in force: {path}: line 2: invalid rate limit unit"
        in caplog.text
    )

    async def watched() -> list[str]:
        watch = asyncio.create_task(source.watch(0.05))
        write(path, "domain: three\n")
        try:
            async with asyncio.timeout(20):
                while source.config.domains != ["three"]:  # noqa: ASYNC110 (polled: no event)
                    await asyncio.sleep(0.05)
        finally:
            watch.cancel()
        return source.config.domains

    assert asyncio.run(watched()) == ["three"]


def test_the_examples_are_what_the_docs_show() -> None:
    """examples/envoy/ratelimit.yaml loads, and docs/envoy.md shows it (less its header);
    envoy.yaml asks the rate limit service through transport_api_version V3."""
    root = Path(__file__).parents[1]
    example = root / "examples" / "envoy" / "ratelimit.yaml"
    config = load_config(example)
    assert config.domains == ["edge"]
    login = config.limit_for("edge", [("user", "42"), ("path", "/login")])
    assert login is not None and login.limit.unit_multiplier == 5
    body = "".join(
        line for line in example.read_text().splitlines(True) if not line.startswith("# ")
    )
    assert f"```yaml\n{body}```" in (root / "docs" / "envoy.md").read_text()
    envoy = yaml.safe_load((root / "examples" / "envoy" / "envoy.yaml").read_text())
    listener = envoy["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ratelimit = manager["http_filters"][0]["typed_config"]
    assert ratelimit["domain"] == "edge"
    assert ratelimit["rate_limit_service"]["transport_api_version"] == "V3"
