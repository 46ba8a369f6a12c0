"""What callers see when Redis misbehaves: refusals, dropped connections, a dead node."""

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from patterns.counter.v1 import counter_pb2, counter_pb2_grpc
from patterns.ratelimit.v1 import ratelimit_pb2 as pb
from patterns.ratelimit.v1 import ratelimit_pb2_grpc

from devtools.processes import PatternsServer, RedisCluster, RedisServer
from patterns_server.ratelimit.ratelimit import Algorithm, Check, Policy, RateLimiter
from patterns_server.storage import RedisBackend
from tests.conftest import redis_server_binary, windows_of
from tests.rpc import assert_unavailable

HOUR = timedelta(hours=1)
RULE = pb.Policy(algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=100, period=Duration(seconds=3600))


@pytest.mark.parametrize("refusal", ["out of memory", "read-only replica"])
def test_writes_refused_by_redis_are_unavailable(
    own_redis: RedisServer, server_on_own_redis: Callable[..., PatternsServer], refusal: str
) -> None:
    with grpc.insecure_channel(server_on_own_redis().address) as channel:
        limiter = ratelimit_pb2_grpc.RateLimiterStub(channel)
        counter = counter_pb2_grpc.UniqueCounterStub(channel)
        limiter.Check(pb.CheckRequest(key="warm-up", policy=RULE), timeout=10)
        if refusal == "out of memory":
            own_redis.client().config_set("maxmemory", 1)
        else:
            own_redis.client().replicaof("127.0.0.1", 1)  # a replica of nothing
        check = pb.CheckRequest(key="user", policy=RULE)
        assert_unavailable(lambda: limiter.Check(check, timeout=10))
        add = counter_pb2.AddRequest(key="visitors", items=["alice"])
        assert_unavailable(lambda: counter.Add(add, timeout=10))


def test_a_dropped_reply_never_runs_a_script_twice(own_redis: RedisServer) -> None:
    """The connection breaks after Redis ran a Check but before its reply came back: the
    call fails, and the Check was applied once, not resent and applied again."""

    async def scenario() -> tuple[BaseException | None, int]:
        dropping = asyncio.Event()

        async def proxy(client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
            redis_in, redis_out = await asyncio.open_connection("127.0.0.1", own_redis.port)

            async def upstream() -> None:
                while data := await client_in.read(65536):
                    redis_out.write(data)
                    await redis_out.drain()

            async def downstream() -> None:
                while data := await redis_in.read(65536):
                    if dropping.is_set():
                        dropping.clear()
                        client_out.transport.abort()
                        redis_out.close()
                        return
                    client_out.write(data)
                    await client_out.drain()

            await asyncio.gather(upstream(), downstream(), return_exceptions=True)

        listener = await asyncio.start_server(proxy, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        redis = RedisBackend.from_url(
            f"redis://127.0.0.1:{port}", prefix="patterns", timeout=2, batch_wait=0
        )
        limiter = RateLimiter(redis)
        period = windows_of(own_redis.url).calm(HOUR).ToTimedelta()  # no window ends meanwhile
        policy = Policy(Algorithm.FIXED_WINDOW, 10, period)
        await limiter.check(Check("warm-up", policy))
        dropping.set()
        failure = None
        try:
            await limiter.check(Check("user", policy))
        except Exception as error:
            failure = error
        remaining = (await limiter.check(Check("user", policy, peek=True))).remaining
        await redis.close()
        listener.close()
        return failure, remaining

    failure, remaining = asyncio.run(scenario())
    assert failure is not None, "the call whose reply was lost must fail"
    assert remaining == 9


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "cluster", binary=redis_server_binary())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_a_dead_cluster_node_fails_only_the_calls_it_serves(own_cluster: RedisCluster) -> None:
    server = PatternsServer(own_cluster.url).start()
    keys = [f"user:{uuid.uuid4()}" for _ in range(60)]
    period = windows_of(own_cluster.url).calm(HOUR)  # no window ends during the test
    rule = pb.Policy(algorithm=pb.ALGORITHM_FIXED_WINDOW, limit=100, period=period)

    async def check_all(peek: bool = False) -> list[pb.CheckResponse | grpc.RpcError]:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = ratelimit_pb2_grpc.RateLimiterStub(channel)
            calls = [
                stub.Check(pb.CheckRequest(key=key, policy=rule, peek=peek), timeout=10)
                for key in keys
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    try:
        assert all(isinstance(r, pb.CheckResponse) for r in asyncio.run(check_all()))
        own_cluster.nodes[2].stop()
        rounds = [asyncio.run(check_all()) for _ in range(3)]
        for answers in rounds:
            served = [
                key
                for key, answer in zip(keys, answers, strict=True)
                if isinstance(answer, pb.CheckResponse)
            ]
            failed = [answer for answer in answers if isinstance(answer, grpc.RpcError)]
            assert 10 < len(served) < 50, "keys of the two live nodes are served, and only they"
            assert {error.code() for error in failed} == {grpc.StatusCode.UNAVAILABLE}
        # Each live key was charged once per round: warm-up + 3, never a resent script.
        peeked = asyncio.run(check_all(peek=True))
        remaining = {answer.remaining for answer in peeked if isinstance(answer, pb.CheckResponse)}
        assert remaining == {96}
    finally:
        server.stop()
