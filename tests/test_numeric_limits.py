"""Every numeric field of every request of the contract, at its type's extremes, on every
backend (standalone 7, 6.2, Cluster): the answer is OK, or INVALID_ARGUMENT naming that
field, or a code the method documents (listed in OTHER_OUTCOMES) — never INTERNAL or
UNKNOWN, and never a traceback in the server's log.

The methods and their fields come from the contract (`contract.binpb`, which the server
serves by reflection), not from a list kept here: each method's request starts from a valid
base request of BASES (the base alone must answer OK), and each numeric field reachable from
it (through nested messages, Durations and Timestamps included, and every element of a
repeated message the base holds) is set in turn to each of its type's extremes: 0, the
largest value and the one below it, for signed types the smallest (and -1), for uint64 also
2^63 and 2^63 - 1 (where a signed 64-bit conversion overflows), for doubles -0, ±the
largest, ±infinity, NaN and the smallest subnormal, and for enums the int32 extremes (values
no enum lists). A method of the contract without a base request fails here: a new RPC must
be given one, so its numeric fields are walked too.

A field of a Duration or Timestamp is named by the field that holds the message (`ttl`, not
`ttl.seconds`), as the server's conversion names it.
"""

import importlib
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as envoy_common
from envoy.service.ratelimit.v3 import rls_pb2 as envoy_rls
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import UInt64Value
from patterns.cache.v1 import cache_pb2 as cache
from patterns.counter.v1 import counter_pb2 as counter
from patterns.events.v1 import events_pb2 as events
from patterns.leaderboard.v1 import leaderboard_pb2 as leaderboard
from patterns.lock.v1 import lock_pb2 as lock
from patterns.ratelimit.v1 import ratelimit_pb2 as ratelimit
from patterns.session.v1 import session_pb2 as session
from patterns.streams.v1 import streams_pb2 as streams

from devtools.processes import PatternsServer
from tests.rpc import details

CONTRACT = Path(__file__).parents[1] / "server" / "patterns_server" / "contract.binpb"
# Envoy's rate limit service, served beside the contract from its vendored protos.
ENVOY_CONTRACT = CONTRACT.with_name("envoy.binpb")
MINUTE = Duration(seconds=60)
CALL_TIMEOUT = 10.0
FLOATING = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
WELL_KNOWN = {"google.protobuf.Duration", "google.protobuf.Timestamp"}

_INT32 = (0, 2**31 - 1, 2**31 - 2, -(2**31), -1)
_INT64 = (0, 2**63 - 1, 2**63 - 2, -(2**63), -1)
_UINT32 = (0, 2**32 - 1, 2**32 - 2, 2**31)
_UINT64 = (0, 2**64 - 1, 2**64 - 2, 2**63, 2**63 - 1)
_DOUBLE_MAX = 1.7976931348623157e308
_FLOAT_MAX = 3.4028234663852886e38
_DOUBLE = (0.0, -0.0, _DOUBLE_MAX, -_DOUBLE_MAX, math.inf, -math.inf, math.nan, 5e-324)
_FLOAT = (0.0, -0.0, _FLOAT_MAX, -_FLOAT_MAX, math.inf, -math.inf, math.nan, 1e-45)
EXTREMES: dict[int, Sequence[Any]] = {
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
    FieldDescriptor.TYPE_DOUBLE: _DOUBLE,
    FieldDescriptor.TYPE_FLOAT: _FLOAT,
    FieldDescriptor.TYPE_ENUM: (2**31 - 1, -(2**31)),
}


# The contract's methods, from the descriptor set the server serves.


def contract_modules() -> list[ModuleType]:
    """The generated module of every file of the contract (`patterns/x/v1/x.proto` is
    `patterns.x.v1.x_pb2`)."""
    names = [
        file.name
        for path in (CONTRACT, ENVOY_CONTRACT)
        for file in descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes()).file
        if file.service
    ]
    return [
        importlib.import_module(name.removesuffix(".proto").replace("/", ".") + "_pb2")
        for name in names
    ]


def contract_methods() -> dict[str, MethodDescriptor]:
    """Every method of every service of the contract, by its path."""
    return {
        f"/{service.full_name}/{method.name}": method
        for module in contract_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


METHODS = contract_methods()


# Base requests: valid, with fresh names, so that each call stands alone.


@dataclass
class Setup:
    """What a base request may need: fresh names, and calls that make the state it names
    (a session to get, a lock to release)."""

    channel: grpc.Channel

    def key(self) -> str:
        return f"numeric:{uuid.uuid4().hex}"

    def call(self, path: str, request: Message) -> Any:
        response_class = message_factory.GetMessageClass(METHODS[path].output_type)
        method = self.channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        return method(request, timeout=CALL_TIMEOUT)

    def session(self) -> str:
        created = self.call(
            "/patterns.session.v1.Sessions/Create",
            session.CreateRequest(user_id=self.key(), ttl=MINUTE),
        )
        return str(created.session.id)

    def lock(self, name: str) -> str:
        acquired = self.call(
            "/patterns.lock.v1.Locker/Acquire", lock.AcquireRequest(name=name, ttl=MINUTE)
        )
        assert acquired.acquired
        return str(acquired.token)

    def score(self, board: str, member: str, score: float) -> None:
        self.call(
            "/patterns.leaderboard.v1.Leaderboard/Submit",
            leaderboard.SubmitRequest(board=board, member=member, score=score),
        )


Base = Callable[[Setup], Message]


def _policy(algorithm: ratelimit.Algorithm) -> ratelimit.Policy:
    return ratelimit.Policy(algorithm=algorithm, limit=10, period=MINUTE)


def _extend(setup: Setup) -> Message:
    name = setup.key()
    return lock.ExtendRequest(name=name, token=setup.lock(name), ttl=MINUTE)


def _release(setup: Setup) -> Message:
    name = setup.key()
    return lock.ReleaseRequest(name=name, token=setup.lock(name))


def _increment(setup: Setup) -> Message:
    """An INCREMENT onto a score near the largest double: a large increment overflows."""
    board = setup.key()
    setup.score(board, "m", 1e308)
    return leaderboard.SubmitRequest(
        board=board, member="m", score=1, mode=leaderboard.MODE_INCREMENT
    )


def _check(algorithm: ratelimit.Algorithm) -> Base:
    return lambda setup: ratelimit.CheckRequest(key=setup.key(), policy=_policy(algorithm))


def _check_stream(algorithm: ratelimit.Algorithm) -> Base:
    return lambda setup: ratelimit.CheckStreamRequest(
        id=2**64 - 1, check=ratelimit.CheckRequest(key=setup.key(), policy=_policy(algorithm))
    )


def _reset(algorithm: ratelimit.Algorithm) -> Base:
    return lambda setup: ratelimit.ResetRequest(key=setup.key(), policy=_policy(algorithm))


def _all_or_nothing(setup: Setup) -> Message:
    """A CheckMany of one key (as all_or_nothing requires) under every algorithm."""
    key = setup.key()
    checks = [ratelimit.CheckRequest(key=key, policy=_policy(a)) for a in ALGORITHMS]
    return ratelimit.CheckManyRequest(checks=checks, all_or_nothing=True)


def _board(setup: Setup) -> str:
    """A board of three members."""
    board = setup.key()
    for n in range(3):
        setup.score(board, f"m{n}", n)
    return board


ALGORITHMS = [
    ratelimit.ALGORITHM_FIXED_WINDOW,
    ratelimit.ALGORITHM_SLIDING_WINDOW_LOG,
    ratelimit.ALGORITHM_SLIDING_WINDOW_COUNTER,
    ratelimit.ALGORITHM_TOKEN_BUCKET,
    ratelimit.ALGORITHM_GCRA,
]


def _should_rate_limit(override: bool) -> Base:
    """A descriptor of the `numeric` domain of tests/envoy.yaml (the shared servers'), with
    hits_addend at both levels, and a `limit` override or the configured limit."""

    def base(setup: Setup) -> Message:
        entry = envoy_common.RateLimitDescriptor.Entry(key="user", value=setup.key())
        limit = envoy_common.RateLimitDescriptor.RateLimitOverride(
            requests_per_unit=10, unit="HOUR"
        )
        descriptor = envoy_common.RateLimitDescriptor(
            entries=[entry], hits_addend=UInt64Value(value=1), limit=limit if override else None
        )
        return envoy_rls.RateLimitRequest(domain="numeric", descriptors=[descriptor], hits_addend=1)

    return base


# Every method of the contract has at least one; a new RPC must be added here.
BASES: dict[str, list[Base]] = {
    "/patterns.cache.v1.Cache/Get": [lambda s: cache.GetRequest(key=s.key())],
    "/patterns.cache.v1.Cache/GetMany": [lambda s: cache.GetManyRequest(keys=[s.key()])],
    "/patterns.cache.v1.Cache/Set": [
        lambda s: cache.SetRequest(key=s.key(), value=b"v"),  # neither ttl nor expire_at
        lambda s: cache.SetRequest(key=s.key(), value=b"v", tags=["t"], only_if_absent=True),
    ],
    "/patterns.cache.v1.Cache/Delete": [lambda s: cache.DeleteRequest(keys=[s.key()])],
    "/patterns.cache.v1.Cache/InvalidateTags": [
        lambda s: cache.InvalidateTagsRequest(tags=[s.key()])
    ],
    "/patterns.cache.v1.Cache/InvalidatePrefix": [
        lambda s: cache.InvalidatePrefixRequest(prefix=s.key())
    ],
    "/patterns.cache.v1.Cache/GetOrLease": [
        lambda s: cache.GetOrLeaseRequest(key=s.key(), lease_ttl=MINUTE)
    ],
    "/patterns.cache.v1.Cache/ReleaseLease": [
        lambda s: cache.ReleaseLeaseRequest(key=s.key(), lease_token="no-longer-held")
    ],
    "/patterns.counter.v1.UniqueCounter/Add": [
        lambda s: counter.AddRequest(key=s.key(), items=["a"], ttl=MINUTE)
    ],
    "/patterns.counter.v1.UniqueCounter/Count": [lambda s: counter.CountRequest(keys=[s.key()])],
    "/patterns.counter.v1.UniqueCounter/Merge": [
        lambda s: counter.MergeRequest(destination=s.key(), sources=[s.key()], ttl=MINUTE)
    ],
    "/patterns.events.v1.Events/Publish": [
        lambda s: events.PublishRequest(channel=s.key(), payload=b"p")
    ],
    "/patterns.events.v1.Events/Subscribe": [lambda s: events.SubscribeRequest(channels=[s.key()])],
    "/patterns.leaderboard.v1.Leaderboard/Submit": [
        lambda s: leaderboard.SubmitRequest(board=s.key(), member="m", score=1),
        lambda s: leaderboard.SubmitRequest(
            board=s.key(),
            member="m",
            score=1,
            mode=leaderboard.MODE_BEST,
            order=leaderboard.ORDER_LOW_FIRST,
            period=leaderboard.PERIOD_DAILY,
        ),
        _increment,
    ],
    "/patterns.leaderboard.v1.Leaderboard/GetRank": [
        lambda s: leaderboard.GetRankRequest(board=_board(s), member="m1"),
        lambda s: leaderboard.GetRankRequest(
            board=s.key(), member="m", period=leaderboard.PERIOD_MONTHLY
        ),
    ],
    "/patterns.leaderboard.v1.Leaderboard/Top": [
        lambda s: leaderboard.TopRequest(board=_board(s), limit=10),
        lambda s: leaderboard.TopRequest(board=s.key(), limit=10, period=leaderboard.PERIOD_WEEKLY),
    ],
    "/patterns.leaderboard.v1.Leaderboard/Around": [
        lambda s: leaderboard.AroundRequest(board=_board(s), member="m1", radius=1),
        lambda s: leaderboard.AroundRequest(
            board=s.key(), member="m", radius=1, period=leaderboard.PERIOD_DAILY
        ),
    ],
    "/patterns.leaderboard.v1.Leaderboard/Remove": [
        lambda s: leaderboard.RemoveRequest(board=_board(s), members=["m1"]),
        lambda s: leaderboard.RemoveRequest(
            board=s.key(), members=["m"], period=leaderboard.PERIOD_DAILY
        ),
    ],
    "/patterns.leaderboard.v1.Leaderboard/Size": [
        lambda s: leaderboard.SizeRequest(board=_board(s)),
        lambda s: leaderboard.SizeRequest(board=s.key(), period=leaderboard.PERIOD_MONTHLY),
    ],
    "/patterns.lock.v1.Locker/Acquire": [lambda s: lock.AcquireRequest(name=s.key(), ttl=MINUTE)],
    "/patterns.lock.v1.Locker/Release": [_release],
    "/patterns.lock.v1.Locker/Extend": [_extend],
    "/patterns.lock.v1.Locker/Hold": [lambda s: lock.HoldRequest(name=s.key(), ttl=MINUTE)],
    "/patterns.lock.v1.Locker/Inspect": [lambda s: lock.InspectRequest(name=s.key())],
    "/patterns.lock.v1.Locker/ForceRelease": [lambda s: lock.ForceReleaseRequest(name=s.key())],
    "/patterns.ratelimit.v1.RateLimiter/Check": [_check(a) for a in ALGORITHMS],
    "/patterns.ratelimit.v1.RateLimiter/CheckMany": [
        lambda s: ratelimit.CheckManyRequest(
            checks=[ratelimit.CheckRequest(key=s.key(), policy=_policy(a)) for a in ALGORITHMS]
        ),
        _all_or_nothing,
    ],
    "/patterns.ratelimit.v1.RateLimiter/CheckStream": [_check_stream(a) for a in ALGORITHMS],
    "/patterns.ratelimit.v1.RateLimiter/Reset": [_reset(a) for a in ALGORITHMS],
    "/patterns.session.v1.Sessions/Create": [
        lambda s: session.CreateRequest(user_id=s.key(), attributes={"a": "b"}, ttl=MINUTE)
    ],
    "/patterns.session.v1.Sessions/Get": [lambda s: session.GetRequest(id=s.session())],
    "/patterns.session.v1.Sessions/Update": [
        lambda s: session.UpdateRequest(id=s.session(), set={"a": "c"})
    ],
    "/patterns.session.v1.Sessions/Destroy": [lambda s: session.DestroyRequest(id=s.session())],
    "/patterns.session.v1.Sessions/List": [
        lambda s: session.ListRequest(user_id=s.key(), limit=10)
    ],
    "/patterns.session.v1.Sessions/DestroyAll": [
        lambda s: session.DestroyAllRequest(user_id=s.key())
    ],
    "/patterns.session.v1.Sessions/Rotate": [lambda s: session.RotateRequest(id=s.session())],
    "/patterns.streams.v1.Streams/Append": [
        lambda s: streams.AppendRequest(
            stream=s.key(), payload=b"p", idempotency_key="k", idempotency_window=MINUTE
        )
    ],
    "/patterns.streams.v1.Streams/Read": [
        lambda s: streams.ReadRequest(stream=s.key(), after_id="1-1", limit=10),
        lambda s: streams.ReadRequest(stream=s.key(), at_time=Timestamp(seconds=1), limit=10),
    ],
    "/patterns.streams.v1.Streams/Consume": [
        lambda s: streams.ConsumeRequest(
            open=streams.ConsumeOpen(
                stream=s.key(),
                group="g",
                consumer="c",
                start=streams.START_POSITION_EARLIEST,
                max_in_flight=10,
                ack_timeout=MINUTE,
                max_deliveries=3,
            )
        ),
        lambda s: streams.ConsumeRequest(
            open=streams.ConsumeOpen(
                stream=s.key(),
                group="g",
                consumer="c",
                start=streams.START_POSITION_AT_TIME,
                start_time=Timestamp(seconds=1),
            )
        ),
    ],
    "/patterns.streams.v1.Streams/Info": [lambda s: streams.InfoRequest(stream=s.key())],
    "/patterns.streams.v1.Streams/Trim": [
        lambda s: streams.TrimRequest(
            stream=s.key(), bounds=streams.Retention(max_len=10, max_age=MINUTE)
        )
    ],
    "/patterns.streams.v1.Streams/SetRetention": [
        lambda s: streams.SetRetentionRequest(
            stream=s.key(), retention=streams.Retention(max_len=10, max_age=MINUTE)
        )
    ],
    "/patterns.streams.v1.Streams/DeleteGroup": [
        lambda s: streams.DeleteGroupRequest(stream=s.key(), group="g")
    ],
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit": [
        _should_rate_limit(override=False),
        _should_rate_limit(override=True),
    ],
}

# Codes other than OK and INVALID_ARGUMENT that a method documents for a numeric field's
# value, by method: none so far.
OTHER_OUTCOMES: dict[str, set[grpc.StatusCode]] = {}


# The walk.


@dataclass(frozen=True)
class Leaf:
    """A numeric field reachable from a request: `steps` lead to it (field name, and the
    element's index in a repeated field); `names` are what an error may call it."""

    steps: tuple[tuple[str, int | None], ...]
    field: FieldDescriptor
    names: frozenset[str]

    @property
    def path(self) -> str:
        return _path(self.steps)

    def set(self, request: Message, value: Any) -> Message:
        """A copy of `request` with this field set to `value`."""
        changed = type(request)()
        changed.CopyFrom(request)
        message = changed
        for name, index in self.steps[:-1]:
            message = getattr(message, name) if index is None else getattr(message, name)[index]
        name, index = self.steps[-1]
        if index is None:
            setattr(message, name, value)
        else:  # a repeated number: this one value
            del getattr(message, name)[:]
            getattr(message, name).append(value)
        return changed


def numeric_leaves(
    message: Message | None,
    descriptor: Any,
    steps: tuple[tuple[str, int | None], ...] = (),
    names: frozenset[str] = frozenset(),
) -> Iterator[Leaf]:
    """Every numeric field under `descriptor` (the type of `message`, which is the base's
    part at `steps`, or None where the base does not set it). A field of a oneof whose
    other member the base sets is not walked: setting it would replace the base's choice
    (a Consume's `nack` instead of its `open`), not vary it."""
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and message is not None:
            chosen = message.WhichOneof(oneof.name)
            if chosen is not None and chosen != field.name:
                continue
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            child = field.message_type
            if child.GetOptions().map_entry:
                kind = child.fields_by_name["value"].type
                assert kind not in EXTREMES and kind != FieldDescriptor.TYPE_MESSAGE, (
                    f"{_path((*steps, (field.name, None)))}: a map of numbers or messages, "
                    "which the walk does not reach yet: teach it"
                )
                continue
            if repeated:  # each element the base holds
                held = getattr(message, field.name) if message is not None else []
                for index, element in enumerate(held):
                    yield from _under(element, child, (*steps, (field.name, index)), names)
            else:
                part = getattr(message, field.name) if message is not None else None
                yield from _under(part, child, (*steps, (field.name, None)), names)
        elif field.type in EXTREMES:
            leaf_steps = (*steps, (field.name, 0 if repeated else None))
            yield Leaf(leaf_steps, field, names | {_path(leaf_steps)})


def _under(
    message: Message | None,
    descriptor: Any,
    steps: tuple[tuple[str, int | None], ...],
    names: frozenset[str],
) -> Iterator[Leaf]:
    if descriptor.full_name in WELL_KNOWN:  # errors name the field that holds it
        names = names | {_path(steps)}
    if len(steps) > 6:
        return
    yield from numeric_leaves(message, descriptor, steps, names)


def _path(steps: tuple[tuple[str, int | None], ...]) -> str:
    """A field's path as the server names it: `checks[2].policy.period`."""
    return ".".join(name + ("" if index is None else f"[{index}]") for name, index in steps)


# Calling.


@dataclass(frozen=True)
class Outcome:
    """A call's status, its message, the fields its BadRequest names, and (when OK) the
    fields of the response that hold a number that is not finite."""

    code: grpc.StatusCode
    message: str = ""
    fields: tuple[str, ...] = ()
    not_finite: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.not_finite:
            return f"{self.code.name} with {', '.join(self.not_finite)} not finite"
        named = f" naming {', '.join(self.fields)}" if self.fields else ""
        return f"{self.code.name}{named}: {self.message}"


def not_finite(message: Message, prefix: str = "") -> Iterator[str]:
    """The paths of the doubles and floats of `message` that are infinite or NaN: the
    contract answers finite numbers only."""
    for field, value in message.ListFields():
        kind, entry = field.type, field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            kind = entry.fields_by_name["value"].type
            items = [(f"{field.name}[{key!r}]", item) for key, item in value.items()]
        elif field.is_repeated:
            items = [(f"{field.name}[{index}]", item) for index, item in enumerate(value)]
        else:
            items = [(field.name, value)]
        for path, item in items:
            if kind == FieldDescriptor.TYPE_MESSAGE:
                yield from not_finite(item, f"{prefix}{path}.")
            elif kind in FLOATING and not math.isfinite(item):
                yield f"{prefix}{path} = {item}"


def outcome(channel: grpc.Channel, path: str, request: Message) -> Outcome:
    """What the server answers `request` with (a stream: its first message)."""
    method = METHODS[path]
    response_class = message_factory.GetMessageClass(method.output_type)
    options = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    try:
        if method.client_streaming:  # one message; its answer may be an error of its own
            stream = channel.stream_stream(path, **options)(iter([request]), timeout=CALL_TIMEOUT)
            try:
                response = next(stream)
            finally:
                stream.cancel()
            # A CheckStream answers an error on its own message (a Consume has no such).
            oneofs = response.DESCRIPTOR.oneofs_by_name
            if "outcome" in oneofs and response.WhichOneof("outcome") == "error":
                return _answered_error(response.error)
        elif method.server_streaming:
            stream = channel.unary_stream(path, **options)(request, timeout=CALL_TIMEOUT)
            try:
                response = next(stream)
            finally:
                stream.cancel()
        else:
            response = channel.unary_unary(path, **options)(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        code, text = error.code(), error.details() or ""
        fields: tuple[str, ...] = ()
        if code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            found = details(error)
            if "BadRequest" in found:
                fields = tuple(v.field for v in found["BadRequest"].field_violations)
        return Outcome(code, text, fields)
    return Outcome(grpc.StatusCode.OK, not_finite=tuple(not_finite(response)))


def _answered_error(error: Any) -> Outcome:
    """A CheckStream's error answered on its own message, as the outcome of a call: its
    field named as in the request message (under `check`)."""
    code = next(c for c in grpc.StatusCode if c.value[0] == error.code)
    return Outcome(code, error.message, (f"check.{error.field}",) if error.field else ())


def acceptable(path: str, leaf: Leaf, answer: Outcome) -> bool:
    if answer.code == grpc.StatusCode.OK:
        return not answer.not_finite
    if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
        return len(answer.fields) == 1 and answer.fields[0] in leaf.names
    return answer.code in OTHER_OUTCOMES.get(path, set())


def test_every_method_of_the_contract_has_a_base_request() -> None:
    """A new RPC fails here until it has a base request: its numeric fields (if any, now or
    later) are then walked like every other method's."""
    missing = sorted(set(METHODS) - set(BASES))
    assert not missing, f"no base request in BASES (tests/test_numeric_limits.py) for {missing}"
    stale = sorted(set(BASES) - set(METHODS))
    assert not stale, f"BASES names methods the contract does not have: {stale}"
    for path, bases in BASES.items():
        assert bases, f"{path}: an empty list of bases"


@pytest.mark.parametrize("path", sorted(METHODS))
def test_every_numeric_field_at_its_extremes(
    path: str, channel: grpc.Channel, server: PatternsServer
) -> None:
    if path not in BASES:
        pytest.fail(f"{path} has no base request: add one to BASES in {Path(__file__).name}")
    log_start = len(server.log_lines)
    setup = Setup(channel)
    failures: list[str] = []
    walked = 0
    for number, base in enumerate(BASES[path]):
        first = base(setup)
        answer = outcome(channel, path, first)
        assert answer == Outcome(grpc.StatusCode.OK), f"{path} base {number}: {answer}"
        for leaf in numeric_leaves(first, first.DESCRIPTOR):
            for value in EXTREMES[leaf.field.type]:
                walked += 1
                request = leaf.set(base(setup), value)
                answer = outcome(channel, path, request)
                if not acceptable(path, leaf, answer):
                    failures.append(f"base {number}, {leaf.path} = {value!r}: {answer}")
    logged = server.log_lines[log_start:]
    failures += [line for line in logged if "Traceback" in line or " ERROR " in line]
    assert not failures, f"{path} ({walked} requests):\n" + "\n".join(failures)


def test_the_walk_reaches_nested_and_well_known_fields() -> None:
    """The walk itself: a CheckMany's checks, their policies and periods are reached, and a
    Duration's parts are named by the field that holds it."""
    request = ratelimit.CheckManyRequest(
        checks=[ratelimit.CheckRequest(key="k", policy=_policy(a)) for a in ALGORITHMS[:2]]
    )
    leaves = {leaf.path: leaf for leaf in numeric_leaves(request, request.DESCRIPTOR)}
    assert "checks[1].policy.limit" in leaves
    assert leaves["checks[0].policy.period.seconds"].names == {
        "checks[0].policy.period",
        "checks[0].policy.period.seconds",
    }
    changed = leaves["checks[1].cost"].set(request, 2**32 - 1)
    assert isinstance(changed, ratelimit.CheckManyRequest)
    assert changed.checks[1].cost == 2**32 - 1 and request.checks[1].cost == 0
    top = leaderboard.TopRequest(board="b", limit=1)
    assert {leaf.path for leaf in numeric_leaves(top, top.DESCRIPTOR)} == {
        "limit",
        "offset",
        "order",
        "period",
        "period_offset",
    }
