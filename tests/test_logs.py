"""The log keeps no secret: a server that sees an API key, a Redis password, session ids
and lock tokens (and refuses some of them) writes none of them in any line, in either
format; and the JSON format is one object a line with the request's fields."""

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.lock.v1 import lock_pb2, lock_pb2_grpc
from patterns.session.v1 import session_pb2, session_pb2_grpc

from devtools.processes import PatternsServer, RedisServer
from patterns_server.runtime.auth import new_token
from tests.rpc import bearer, rpc_error
from tests.tenants import Tenant, write_auth_file

PASSWORD = "redis-password-" + new_token()[0][4:20]
TEAM = Tenant("team", "team", *new_token())
MINUTE = Duration(seconds=60)


def redis_user(redis: RedisServer) -> None:
    """A Redis ACL user `patterns` with PASSWORD, allowed everything."""
    redis.client().acl_setuser(
        "patterns",
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"],
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_reaches_the_log(own_redis: RedisServer, tmp_path: Path, log_format: str) -> None:
    redis_user(own_redis)
    url = own_redis.url.replace("redis://", f"redis://patterns:{PASSWORD}@")
    auth = write_auth_file(tmp_path / "tenants.toml", [TEAM])
    server = PatternsServer(
        url, "--auth-file", str(auth), "--log-level", "debug", "--log-format", log_format
    ).start()
    secrets: list[str] = [PASSWORD, TEAM.token]
    try:
        with grpc.insecure_channel(server.address) as channel:
            sessions = session_pb2_grpc.SessionsStub(channel)
            created = sessions.Create(
                session_pb2.CreateRequest(user_id="ada", ttl=MINUTE), metadata=bearer(TEAM)
            ).session
            secrets.append(created.id)
            rotated = sessions.Rotate(
                session_pb2.RotateRequest(id=created.id), metadata=bearer(TEAM)
            ).session
            secrets.append(rotated.id)
            gone = rpc_error(
                lambda: sessions.Get(session_pb2.GetRequest(id=created.id), metadata=bearer(TEAM))
            )
            assert gone.code() == grpc.StatusCode.NOT_FOUND
            locker = lock_pb2_grpc.LockerStub(channel)
            held = locker.Acquire(
                lock_pb2.AcquireRequest(name="job", ttl=MINUTE), metadata=bearer(TEAM)
            )
            secrets.append(held.token)
            locker.Release(lock_pb2.ReleaseRequest(name="job", token="x" + held.token[1:]),
                           metadata=bearer(TEAM))  # fmt: skip
            locker.Release(
                lock_pb2.ReleaseRequest(name="job", token=held.token), metadata=bearer(TEAM)
            )
            wrong = "pat_" + TEAM.token[4:-1] + "A"
            secrets.append(wrong)
            refused = rpc_error(
                lambda: sessions.Get(
                    session_pb2.GetRequest(id=rotated.id),
                    metadata=[("authorization", f"Bearer {wrong}")],
                )
            )
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop()
    assert sum("/patterns." in line for line in server.log_lines) >= 7  # the request log ran
    for secret in secrets:
        leaked = [line for line in server.log_lines if secret in line]
        assert not leaked, leaked
    if log_format == "json":
        entries = [json.loads(line) for line in server.log_lines if line.strip()]
        assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
        calls = [entry for entry in entries if "method" in entry]
        assert {entry["tenant"] for entry in calls} == {"team", "-"}
        assert all({"code", "duration_ms", "peer"} <= entry.keys() for entry in calls)


def test_a_wrong_redis_password_is_reported_without_it(own_redis: RedisServer) -> None:
    redis_user(own_redis)
    wrong = PASSWORD[::-1]
    server = PatternsServer(own_redis.url.replace("redis://", f"redis://patterns:{wrong}@")).start()
    try:
        server.wait_for_log("Redis cannot serve")
    finally:
        server.stop()
    assert "***@" in server.log
    assert wrong not in server.log and PASSWORD not in server.log
