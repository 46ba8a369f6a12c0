"""What a developer sees when debugging by hand with grpcurl."""

import json
import uuid

from devtools.processes import PatternsServer
from tests.rpc import grpcurl


def test_list_shows_every_service(grpcurl_path: str, server: PatternsServer) -> None:
    listed = grpcurl(grpcurl_path, server, "list").split()
    assert listed == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "patterns.cache.v1.Cache",
        "patterns.counter.v1.UniqueCounter",
        "patterns.events.v1.Events",
        "patterns.leaderboard.v1.Leaderboard",
        "patterns.lock.v1.Locker",
        "patterns.ratelimit.v1.RateLimiter",
        "patterns.session.v1.Sessions",
    ]


def test_describe_shows_the_contract_comments(grpcurl_path: str, server: PatternsServer) -> None:
    described = grpcurl(grpcurl_path, server, "describe", "patterns.counter.v1.AddRequest")
    assert "1 to 10,000 per call" in described
    service = grpcurl(grpcurl_path, server, "describe", "patterns.counter.v1.UniqueCounter")
    assert "rpc Count" in service and "union" in service


def test_add_and_count(grpcurl_path: str, server: PatternsServer) -> None:
    key = f"grpcurl-{uuid.uuid4()}"
    added = grpcurl(
        grpcurl_path,
        server,
        "patterns.counter.v1.UniqueCounter/Add",
        data={"key": key, "items": ["a", "b", "c"], "ttl": "60s"},
    )
    assert json.loads(added) == {"changed": True}
    counted = grpcurl(
        grpcurl_path, server, "patterns.counter.v1.UniqueCounter/Count", data={"keys": [key]}
    )
    assert json.loads(counted) == {"count": "3"}  # uint64 is a string in JSON


def test_rate_limit_check(grpcurl_path: str, server: PatternsServer) -> None:
    rule = {"algorithm": "ALGORITHM_GCRA", "limit": 3, "period": "60s"}
    request = {"key": f"grpcurl-{uuid.uuid4()}", "policy": rule}
    method = "patterns.ratelimit.v1.RateLimiter/Check"
    first = json.loads(grpcurl(grpcurl_path, server, method, data=request))
    assert first == {
        "allowed": True,
        "limit": "3",
        "remaining": "2",
        "resetAfter": "20s",
        "retryAfter": "0s",
    }
