"""What ships for operators (deploy/, docker-compose.yml) names only what the server serves.

A real server, after a workload that gives every metric a sample, is scraped over HTTP:
every metric (and label) the Grafana dashboard and the alert rules name must be one it
exports, every metric it exports must be on the dashboard and in the docs' table, and
counters and histograms are read through rate() or increase(). promtool checks the rules
and the Prometheus config and runs the alerts' unit tests (deploy/prometheus/alerts_test.yml);
a real Prometheus scrapes the server and runs every query of the dashboard.
"""

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from patterns.cache.v1 import cache_pb2, cache_pb2_grpc
from patterns.events.v1 import events_pb2, events_pb2_grpc
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from devtools.processes import PatternsServer, RedisServer, free_port
from tests.conftest import redis_server_binary, require_tool
from tests.rpc import rpc_error
from tests.waiting import eventually

ROOT = Path(__file__).parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "patterns-server.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
COMPOSE = ROOT / "docker-compose.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
MINUTE = Duration(seconds=60)

# Series that Prometheus makes itself, which the dashboard and alerts may name.
PROMETHEUS_SERIES = {"up": {"job", "instance"}}
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
# What the dashboard's variables stand for when its queries run in Prometheus.
VARIABLES = {"$__rate_interval": "30s", "$job": ".*", "$tenant": ".*"}


# What the server exports


@dataclass
class Family:
    """A metric family of the scrape: its type, help, and each series name with the labels
    its samples carry."""

    name: str
    type: str
    help: str
    series: dict[str, set[str]] = field(default_factory=dict)
    sampled: bool = False  # without a sample, a labelled family shows no label names
    labels: list[str] = field(default_factory=list)  # `le` left out

    @property
    def queried_as(self) -> str:
        """The name a query gives: a counter's with `_total` (prometheus_client appends it),
        a histogram's without its `_bucket`, `_sum` and `_count`."""
        return self.name + "_total" if self.type == "counter" else self.name


SUFFIXES = {
    "counter": ["_total"],
    "histogram": ["_bucket", "_sum", "_count"],
    "gauge": [""],
}


@dataclass
class Exported:
    families: dict[str, Family]

    def series(self) -> dict[str, set[str]]:
        """Every series name a query may name, with its labels (Prometheus's own and the
        target labels included)."""
        names = dict(PROMETHEUS_SERIES)
        for family in self.families.values():
            for name, labels in family.series.items():
                names[name] = labels | TARGET_LABELS
        return names

    def family_of(self, series: str) -> str | None:
        for family in self.families.values():
            if series in family.series:
                return family.name
        return None


def read_families(text: str) -> dict[str, Family]:
    """The families of a scrape, by the names the server gave them. prometheus_client's
    `_created` series (a counter's or histogram's creation time) come out of the parser as
    gauges of their own: they are not families the server declared."""
    parsed = list(text_string_to_metric_families(text))
    declared = {f.name for f in parsed if f.type in ("counter", "histogram")}
    families = {}
    for parsed_family in parsed:
        if parsed_family.name.endswith("_created") and parsed_family.name[:-8] in declared:
            continue
        family = Family(parsed_family.name, parsed_family.type, parsed_family.documentation)
        for suffix in SUFFIXES[family.type]:  # named even before a first sample
            family.series[family.name + suffix] = {"le"} if suffix == "_bucket" else set()
        for sample in parsed_family.samples:
            if sample.name.endswith("_created"):
                continue
            family.series.setdefault(sample.name, set()).update(sample.labels)
            family.sampled = True
            family.labels += [k for k in sample.labels if k != "le" and k not in family.labels]
        families[family.name] = family
    return families


def workload(address: str, redis: RedisServer, scrape: Any) -> None:
    """Calls that give every labelled metric a sample: answers and errors, a refused
    stream, a write Redis refuses (UNAVAILABLE), and connections Redis closed."""
    with grpc.insecure_channel(address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        policy = ratelimit_pb2.Policy(
            algorithm=ratelimit_pb2.ALGORITHM_GCRA, limit=1, period=MINUTE
        )
        decisions = [
            limiter.Check(ratelimit_pb2.CheckRequest(key="user", policy=policy), timeout=10).allowed
            for _ in range(2)
        ]
        assert decisions == [True, False]
        empty_key = ratelimit_pb2.CheckRequest(key="", policy=policy)
        assert rpc_error(lambda: limiter.Check(empty_key, timeout=10)).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )

        cache = cache_pb2_grpc.CacheStub(channel)
        cache.Set(cache_pb2.SetRequest(key="page", value=b"v", ttl=MINUTE), timeout=10)
        assert cache.Get(cache_pb2.GetRequest(key="page"), timeout=10).found
        assert not cache.Get(cache_pb2.GetRequest(key="absent"), timeout=10).found
        cold = cache_pb2.GetOrLeaseRequest(key="cold", lease_ttl=MINUTE)
        assert cache.GetOrLease(cold, timeout=10).HasField("lease")

        locker = lock_pb2_grpc.LockerStub(channel)
        assert locker.Acquire(lock_pb2.AcquireRequest(name="job", ttl=MINUTE), timeout=10).acquired

        events = events_pb2_grpc.EventsStub(channel)
        request = events_pb2.SubscribeRequest(channels=["news"])
        subscriber = events.Subscribe(request, timeout=30)
        assert next(subscriber).WhichOneof("kind") == "subscribed"
        events.Publish(events_pb2.PublishRequest(channel="news", payload=b"x"), timeout=10)
        assert next(subscriber).event.payload == b"x"
        refused = events.Subscribe(request, timeout=30)  # beyond --max-streams 1
        with pytest.raises(grpc.RpcError) as overloaded:
            next(refused)
        assert overloaded.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        subscriber.cancel()

        redis.client().config_set("maxmemory", 1)  # with noeviction: no write fits
        try:
            check = ratelimit_pb2.CheckRequest(key="another user", policy=policy)
            assert rpc_error(lambda: limiter.Check(check, timeout=10)).code() == (
                grpc.StatusCode.UNAVAILABLE
            )
        finally:
            redis.client().config_set("maxmemory", 0)

    redis.client().client_kill_filter(_type="normal", skip_me=True)
    eventually(
        lambda: "patterns_redis_reconnects_total{" in scrape(), what="a pooled connection replaced"
    )
    eventually(lambda: "\npatterns_redis_up 1.0" in scrape(), what="Redis up again")


@dataclass
class Served:
    server: PatternsServer
    metrics_address: str
    exported: Exported


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server on a Redis of its own with metrics on, after the workload, and what its
    /metrics exports then."""
    redis = RedisServer(tmp_path_factory.mktemp("redis"), redis_server_binary())
    redis.start()
    server = PatternsServer(
        redis.url, "--metrics-listen", "127.0.0.1:0", "--max-streams", "1"
    ).start()
    try:
        server.wait_for_log("metrics on http://")
        match = re.search(r"metrics on http://([\d.]+:\d+)/metrics", server.log)
        assert match
        address = match.group(1)

        def scrape() -> str:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
                return str(response.read().decode())

        workload(server.address, redis, scrape)
        families = read_families(scrape())
        unsampled = [family.name for family in families.values() if not family.sampled]
        assert not unsampled, f"give these metrics a sample in workload(): {unsampled}"
        yield Served(server, address, Exported(families))
    finally:
        server.stop()
        redis.stop()


# Reading PromQL: enough of it to find the metrics and labels a query names


STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{([^{}]*)\}")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
RANGE = re.compile(r"\[[^\]]*\]")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.$:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}  # fmt: skip
CUMULATIVE = ("_total", "_bucket", "_sum", "_count")


@dataclass
class Query:
    expr: str
    metrics: set[str]
    labels: set[str]  # in matchers and in by/without/on/ignoring/group_* lists
    bare_cumulative: list[str]  # counter and histogram series not under rate()/increase()


def _blanked(match: re.Match[str]) -> str:
    """The match with its inside blanked and its first and last character kept: what
    follows keeps its place."""
    text = match.group(0)
    return text[0] + " " * (len(text) - 2) + text[-1]


def parse(expr: str) -> Query:
    """The metrics and labels a PromQL expression names (not a parser: enough for the
    queries of this project, which tests of its own pin down)."""
    text = STRING.sub(_blanked, expr)  # a string may hold anything
    labels: set[str] = set()
    for matchers in MATCHERS.findall(text):
        labels.update(MATCHER.findall(matchers))
    for grouping in GROUPING.findall(text):
        labels.update(label.strip() for label in grouping.split(",") if label.strip())
    text = MATCHERS.sub(_blanked, text)
    text = GROUPING.sub(lambda match: " " * len(match.group(0)), text)
    text = RANGE.sub(_blanked, text)
    metrics: set[str] = set()
    bare = []
    for identifier in IDENTIFIER.finditer(text):
        name = identifier.group(1)
        if name in KEYWORDS:
            continue
        metrics.add(name)
        if name.endswith(CUMULATIVE):
            windowed = re.match(r"\s*(\{\s*\})?\s*\[", text[identifier.end() :])
            under = re.search(r"\b(?:rate|increase)\(\s*$", text[: identifier.start()])
            if not (windowed and under):
                bare.append(name)
    return Query(expr, metrics, labels, bare)


def test_parse_finds_metrics_labels_and_bare_counters() -> None:
    query = parse(
        'sum by (service, le) (rate(a_bucket{job=~"$job", x="} y{"}[$__rate_interval]))\n'
        "  / on (job) group_left sum(b_total) > bool 0.5e3\n"
        "and histogram_quantile(0.9, c{instance!='i'}) unless increase(d_count[5m] offset 1h)"
    )
    assert query.metrics == {"a_bucket", "b_total", "c", "d_count"}
    assert query.labels == {"service", "le", "job", "x", "instance"}
    assert query.bare_cumulative == ["b_total"]
    assert parse('rate(e_sum{a="1"}[1m]) + e_count').bare_cumulative == ["e_count"]


# The dashboard


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of the dashboard."""
    return [
        (panel["title"], target)
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def variable_queries() -> dict[str, tuple[str, str]]:
    """The query variables: name -> (the metric selector, the label) of label_values()."""
    found = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
            assert match, f"variable {variable['name']}: not a label_values(): {definition}"
            found[variable["name"]] = (match.group(1), match.group(2))
    return found


def unknown_names(query: Query, exported: Exported, legend: str = "") -> list[str]:
    """What `query` names that the server does not export: metrics, and labels none of its
    metrics has (nor Prometheus's target labels); `legend`'s {{label}}s too."""
    series = exported.series()
    problems = [f"metric {name}" for name in sorted(query.metrics) if name not in series]
    known = set().union(*(series.get(name, set()) for name in query.metrics))
    used = query.labels | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    problems += [f"label {label}" for label in sorted(used - known)]
    return problems


def test_the_dashboard_names_only_what_the_server_exports(served: Served) -> None:
    problems = []
    for title, target in dashboard_targets():
        query = parse(target["expr"])
        assert query.metrics, f"{title}: no metric found in {target['expr']}"
        problems += [
            f"{title}: {problem}"
            for problem in unknown_names(query, served.exported, target.get("legendFormat", ""))
        ]
        problems += [f"{title}: {bare} outside rate()/increase()" for bare in query.bare_cumulative]
    for name, (selector, label) in variable_queries().items():
        problems += [
            f"variable {name}: {p}" for p in unknown_names(parse(selector), served.exported)
        ]
        if label not in served.exported.series().get(parse(selector).metrics.pop(), set()):
            problems.append(f"variable {name}: label {label}")
    assert not problems, "\n".join(problems)


def test_every_exported_metric_is_on_the_dashboard(served: Served) -> None:
    shown = {
        served.exported.family_of(name)
        for _, target in dashboard_targets()
        for name in parse(target["expr"]).metrics
    }
    missing = sorted(set(served.exported.families) - shown)
    assert not missing, f"no panel of the dashboard shows {missing}"


def test_the_dashboard_is_a_grafana_model_on_its_variables() -> None:
    model = dashboard()
    assert model["schemaVersion"] >= 39  # the JSON model of Grafana 10 and 11
    assert model["uid"] and model["title"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variable_queries()["tenant"] == ("patterns_rpcs_total", "tenant")
    panels = model["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        place = panel["gridPos"]
        assert place["x"] >= 0 and place["x"] + place["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(place["x"], place["x"] + place["w"])
            for y in range(place["y"], place["y"] + place["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel["targets"]
        assert targets and len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == panel["datasource"], panel["title"]
            for name in parse(target["expr"]).metrics:
                blocks = re.findall(rf"(?<![\w:]){name}(?![\w:])(\{{[^{{}}]*\}})?", target["expr"])
                assert all('job=~"$job"' in block for block in blocks), (
                    f'{panel["title"]}: {name} without job=~"$job"'
                )
                if name == "patterns_rpcs_total":
                    assert all('tenant=~"$tenant"' in block for block in blocks), (
                        f'{panel["title"]}: {name} without tenant=~"$tenant"'
                    )


# The alert rules


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_alert_rules_say_how_long_how_bad_and_what_to_do() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(set(names)) == len(names)
    assert {
        "PatternsRedisDown",
        "PatternsHighErrorRatio",
        "PatternsRateLimitFailingOpen",
        "PatternsHighLatency",
        "PatternsSlowConsumers",
        "PatternsAdmissionRefusals",
    } <= set(names)
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert len(rule["annotations"]["description"]) > 80, f"{rule['alert']}: what to do?"
    by_name = {rule["alert"]: rule for rule in rules}
    assert by_name["PatternsRedisDown"]["expr"].strip() == "patterns_redis_up == 0"
    assert by_name["PatternsRedisDown"]["for"] == "1m"


def test_the_alert_rules_name_only_what_the_server_exports(served: Served) -> None:
    problems = []
    for rule in alert_rules():
        query = parse(rule["expr"])
        assert query.metrics, f"{rule['alert']}: no metric found"
        problems += [f"{rule['alert']}: {p}" for p in unknown_names(query, served.exported)]
        problems += [
            f"{rule['alert']}: {b} outside rate()/increase()" for b in query.bare_cumulative
        ]
    # The unit tests' input series are series the server exports, too.
    for test in yaml.safe_load(ALERTS_TESTS.read_text())["tests"]:
        for series in test["input_series"]:
            query = parse(series["series"])
            problems += [f"{test['name']}: {p}" for p in unknown_names(query, served.exported)]
    assert not problems, "\n".join(problems)


def test_promtool_checks_the_rules_and_config_and_runs_the_alerts_unit_tests() -> None:
    promtool = require_tool("promtool")
    for command in (
        ["check", "rules", ALERTS.name],
        ["check", "config", "prometheus.yml"],  # its rule_files, alerts.yml, too
        ["test", "rules", ALERTS_TESTS.name],
    ):
        ran = subprocess.run(
            [promtool, *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, f"promtool {' '.join(command)}:\n{ran.stdout}{ran.stderr}"


# In a real Prometheus


@pytest.fixture
def prometheus(served: Served, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping the server every second, once it holds a few scrapes: its
    address."""
    binary = require_tool("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "patterns-server",
                        "static_configs": [{"targets": [served.metrics_address]}],
                    }
                ],
            }
        )
    )
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(
            lambda: _scrapes(address) >= 3, within=30, step=0.2, what="three scrapes in Prometheus"
        )
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _scrapes(address: str) -> int:
    try:
        result = instant_query(address, 'count_over_time(up{job="patterns-server"}[1m])')
    except OSError:  # not listening yet
        return 0
    return int(float(result[0]["value"][1])) if result else 0


def instant_query(address: str, expr: str) -> list[dict[str, Any]]:
    url = f"http://{address}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:  # a query Prometheus refuses: 400 or 422
        body = json.loads(error.read())
    assert body["status"] == "success", f"{expr}\n{body.get('error')}"
    return list(body["data"]["result"])


def test_every_dashboard_query_runs_in_prometheus_and_finds_data(prometheus: str) -> None:
    empty = []
    for title, target in dashboard_targets():
        expr = target["expr"]
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        if not instant_query(prometheus, expr):
            empty.append(f"{title}: {expr}")
    assert not empty, "no data for:\n" + "\n".join(empty)
    for rule in alert_rules():
        instant_query(prometheus, rule["expr"])  # valid PromQL (whether it fires or not)
    for name, (selector, label) in variable_queries().items():
        url = f"http://{prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode(
            {"match[]": selector}
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.loads(response.read())["data"], f"variable {name} has no values"


def test_compose_wires_the_files_and_ports_it_names() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"redis", "patterns", "prometheus", "grafana"} <= set(compose)
    listen = compose["patterns"]["environment"]["PATTERNS_METRICS_LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0" and port != "9090"  # 9090 is Prometheus's own
    assert f"{port}:{port}" in compose["patterns"]["ports"]
    for service in compose.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), f"docker-compose.yml mounts {source}, which is absent"
    mounted = {
        volume.split(":")[1]: ROOT / volume.split(":")[0]
        for volume in compose["grafana"]["volumes"] + compose["prometheus"]["volumes"]
    }
    assert mounted["/etc/prometheus"] == PROMETHEUS_DIR
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"patterns:{port}"]
    assert 'up{job="' + job["job_name"] + '"}' in ALERTS.read_text()  # PatternsServerDown's
    assert config["rule_files"] == [ALERTS.name]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["prometheus"]["ports"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "patterns-server.yml").read_text())[
        "providers"
    ]
    assert mounted[provider["options"]["path"] + "/" + DASHBOARD.name] == DASHBOARD


# The docs


def test_the_docs_list_every_metric_as_the_server_describes_it(served: Served) -> None:
    """docs/operations.md has a row per metric: its name as queried, type, labels (in any
    order) and the server's own help text; a wrong or missing row fails with the row to
    write."""
    page = OPERATIONS.read_text()
    rows = {
        name: (kind, set(re.findall(r"`(\w+)`", labels)), meaning)
        for name, kind, labels, meaning in re.findall(
            r"^\| `((?:patterns|process)_\w+)` \| (\w+) \| ([^|]*) \| (.*) \|$", page, re.MULTILINE
        )
    }
    wrong = []
    for family in served.exported.families.values():
        if rows.get(family.queried_as) != (family.type, set(family.labels), family.help):
            labels = ", ".join(f"`{label}`" for label in family.labels) or "(none)"
            wrong.append(f"| `{family.queried_as}` | {family.type} | {labels} | {family.help} |")
    assert not wrong, "docs/operations.md: write these metric rows:\n" + "\n".join(wrong)
    exported = {family.queried_as for family in served.exported.families.values()}
    assert set(rows) <= exported, f"docs/operations.md lists {set(rows) - exported}"
