"""The Locker scenarios, run in a client process of their own (beside Redis):

- uncontended: `in_flight` clients each Acquire then Release a lock of their own, again and
  again: pairs per second;
- hand-off: `contenders` clients wait for one lock, each holding it briefly; the time from
  one holder sending its Release to the next holder's Acquire returning (so it includes
  the Release's own round trip).
"""

import asyncio
import time
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from patterns.lock.v1 import lock_pb2 as pb
from patterns.lock.v1 import lock_pb2_grpc

from benchmarks.load import pin, run_on_uvloop

TTL = Duration(seconds=10)
WAIT = Duration(seconds=10)


@dataclass
class LockResult:
    pairs: int
    seconds: float
    handoffs_ns: list[int]


def run_locks(
    address: str, in_flight: int, contenders: int, seconds: float, cores: set[int] | None
) -> LockResult:
    pin(cores)

    async def main() -> LockResult:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = lock_pb2_grpc.LockerStub(channel)
            pairs = await _uncontended(stub, in_flight, seconds)
            handoffs = await _handoffs(stub, contenders, seconds)
        return LockResult(pairs, seconds, sorted(handoffs))

    return run_on_uvloop(main())


async def _uncontended(stub: lock_pb2_grpc.LockerStub, in_flight: int, seconds: float) -> int:
    end = time.monotonic() + seconds
    pairs = 0

    async def client(number: int) -> None:
        nonlocal pairs
        name = f"bench-lock-{number}"
        while time.monotonic() < end:
            lease = await stub.Acquire(pb.AcquireRequest(name=name, ttl=TTL))
            await stub.Release(pb.ReleaseRequest(name=name, token=lease.token))
            pairs += 1

    await asyncio.gather(*(client(n) for n in range(in_flight)))
    return pairs


async def _handoffs(stub: lock_pb2_grpc.LockerStub, contenders: int, seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    released_at = [0]  # perf_counter_ns when the last holder sent its Release
    handoffs: list[int] = []

    async def contender() -> None:
        request = pb.AcquireRequest(name="bench-contended", ttl=TTL, wait_timeout=WAIT)
        while time.monotonic() < end:
            lease = await stub.Acquire(request)
            granted = time.perf_counter_ns()
            if released_at[0]:
                handoffs.append(granted - released_at[0])
            await asyncio.sleep(0.001)  # the critical section
            released_at[0] = time.perf_counter_ns()
            await stub.Release(pb.ReleaseRequest(name="bench-contended", token=lease.token))

    await asyncio.gather(*(contender() for _ in range(contenders)))
    return handoffs
