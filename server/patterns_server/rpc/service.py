"""What a service is to the server: a servicer of one service of the contract, and the
lifecycle of its own background work.

Each `<pattern>/service.py` has `build(runtime) -> Service`; `app.SERVICES` lists them.
The host adds every method of each service to the gRPC server through `guard`, starts
the services in order before serving, and closes them in reverse order at shutdown,
before Redis closes.
"""

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from patterns_server.core.settings import Settings
from patterns_server.storage import RedisBackend


@dataclass(frozen=True)
class Runtime:
    """What the host lends every service: the process's Redis, and the settings."""

    redis: RedisBackend
    settings: Settings


class Service:
    """The servicer of the contract's service `descriptor`: an object with a method per
    RPC, a coroutine for a unary one and an async generator for a server stream. Start
    and close do nothing; a service with background work of its own overrides them."""

    def __init__(self, servicer: object, descriptor: ServiceDescriptor) -> None:
        self.servicer = servicer
        self.descriptor = descriptor

    @property
    def name(self) -> str:
        """The full name clients call (`patterns.ratelimit.v1.RateLimiter`)."""
        return str(self.descriptor.full_name)

    async def start(self) -> None:
        """Start background work, before the server serves."""

    async def close(self) -> None:
        """Stop background work, after the server stopped serving, before Redis closes."""

    def reload(self) -> None:
        """SIGHUP: read again what the service reads from files (its configuration)."""
