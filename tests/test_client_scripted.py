"""The blocking client against a scripted channel (grpcio-testing): faults that are hard
to stage against a live server at an exact moment. The test plays the server: it takes
each call the client makes and answers it, message by message, then with a status.

(grpc_testing drives only the blocking API; it cannot stand in for grpc.aio channels or
servicers, grpc/grpc#24942, which is why every other test uses real sockets.)"""

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import grpc
import grpc_testing
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from patterns.events.v1 import events_pb2
from patterns.session.v1 import session_pb2

from patterns_client import Client, DeadlineExceeded, Event, Gap, PermissionDenied, Unavailable
from tests.waiting import eventually

EVENTS = events_pb2.DESCRIPTOR.services_by_name["Events"]
SESSIONS = session_pb2.DESCRIPTOR.services_by_name["Sessions"]
SUBSCRIBE = EVENTS.methods_by_name["Subscribe"]
GET_SESSION = SESSIONS.methods_by_name["Get"]


@pytest.fixture
def channel() -> Any:
    return grpc_testing.channel([EVENTS, SESSIONS], grpc_testing.strict_real_time())


@pytest.fixture
def client(channel: Any) -> Iterator[Client]:
    client = Client.over(channel, timeout=timedelta(seconds=3))
    yield client


def status_details(code: int, message: str, *details: Any) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a google.rpc.Status with `details`, as the server sends."""
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    return (("grpc-status-details-bin", status.SerializeToString()),)


def event(payload: bytes) -> events_pb2.SubscribeResponse:
    return events_pb2.SubscribeResponse(event=events_pb2.Event(channel="c", payload=payload))


SUBSCRIBED = events_pb2.SubscribeResponse(subscribed=events_pb2.Subscribed(channels=["c"]))


def in_a_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """Starts `call` in a thread of its own, for the test to play the server meanwhile; the
    thread, and the list that receives what `call` raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except Exception as error:
            raised.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_a_stream_cut_after_its_third_message_resumes_with_a_gap(
    client: Client, channel: Any
) -> None:
    items: list[Any] = []
    subscription = client.events.subscribe(channels=["c"])
    reader = threading.Thread(target=lambda: items.extend(subscription), daemon=True)
    reader.start()

    _, request, first = channel.take_unary_stream(SUBSCRIBE)
    assert list(request.channels) == ["c"]
    first.send_response(SUBSCRIBED)
    first.send_response(event(b"1"))
    first.send_response(event(b"2"))
    eventually(lambda: len(items) == 2)  # a scripted stream drops what is unread at its end
    retry = error_details_pb2.RetryInfo(retry_delay=Duration(nanos=200_000_000))
    first.terminate(
        status_details(code_pb2.UNAVAILABLE, "redis down", retry),
        grpc.StatusCode.UNAVAILABLE,
        "redis down",
    )

    _, _, second = channel.take_unary_stream(SUBSCRIBE)  # the client subscribes again
    second.send_response(SUBSCRIBED)
    second.send_response(event(b"3"))
    eventually(lambda: len(items) == 4)
    subscription.close()
    reader.join(10)
    assert not reader.is_alive()

    first_event, second_event, gap, third_event = items
    assert [e.payload for e in (first_event, second_event, third_event)] == [b"1", b"2", b"3"]
    assert all(isinstance(e, Event) for e in (first_event, second_event, third_event))
    assert isinstance(gap, Gap) and isinstance(gap.error, Unavailable)
    assert gap.error.retry_after == timedelta(milliseconds=200)


def test_a_refusal_that_retrying_cannot_cure_ends_the_subscription(
    client: Client, channel: Any
) -> None:
    subscription = client.events.subscribe(channels=["c"])
    reader, failures = in_a_thread(lambda: list(subscription))
    _, _, rpc = channel.take_unary_stream(SUBSCRIBE)
    rpc.terminate((), grpc.StatusCode.PERMISSION_DENIED, "not yours")
    reader.join(10)
    (failure,) = failures
    assert isinstance(failure, PermissionDenied) and failure.message == "not yours"


def test_retry_info_becomes_retry_after(client: Client, channel: Any) -> None:
    caller, outcome = in_a_thread(lambda: client.sessions.get("some-id"))
    _, _, rpc = channel.take_unary_unary(GET_SESSION)
    retry = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=7, nanos=250_000_000))
    info = error_details_pb2.ErrorInfo(reason="REDIS_TIMEOUT", domain="patterns-server")
    rpc.terminate(
        None,
        status_details(code_pb2.UNAVAILABLE, "Redis did not answer", retry, info),
        grpc.StatusCode.UNAVAILABLE,
        "Redis did not answer",
    )
    caller.join(10)
    (error,) = outcome
    assert isinstance(error, Unavailable)
    assert error.retry_after == timedelta(seconds=7, milliseconds=250)
    assert error.reason == "REDIS_TIMEOUT" and error.message == "Redis did not answer"


def test_a_deadline_hit_mid_call_is_deadline_exceeded(client: Client, channel: Any) -> None:
    caller, outcome = in_a_thread(lambda: client.sessions.get("some-id", touch=True))
    _, request, rpc = channel.take_unary_unary(GET_SESSION)
    assert request.touch
    rpc.terminate(None, (), grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    caller.join(10)
    (error,) = outcome
    assert isinstance(error, DeadlineExceeded) and error.reason == ""
