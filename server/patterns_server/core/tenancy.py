"""Whose call this is: the caller's namespace, for the key builder to put in every key and
channel, without any pattern taking it as an argument.

The host sets it for each call (`runtime/guard.py`, from the tenant the call authenticated
as); every call runs in its own asyncio task, whose context holds its own value, so the
namespace of one call never leaks into another's. Without an auth file every caller is
`default`.
"""

from contextvars import ContextVar

DEFAULT_NAMESPACE = "default"

_namespace: ContextVar[str] = ContextVar("namespace", default=DEFAULT_NAMESPACE)


def current_namespace() -> str:
    """The namespace of the call being served (`default` outside any call)."""
    return _namespace.get()


def enter_namespace(namespace: str) -> None:
    """From now on, in this task (and the tasks it starts), keys are of `namespace`."""
    _namespace.set(namespace)
