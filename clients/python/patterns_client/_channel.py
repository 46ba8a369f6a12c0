"""How a client reaches the server: TLS (the system's roots, a private CA, a client
certificate for mutual TLS) and the API key that goes with every call."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import TypeAlias

import grpc

from patterns_client._calls import Metadata

__all__ = ["TLS"]

PathLike: TypeAlias = str | os.PathLike[str]


@dataclass(frozen=True)
class TLS:
    """TLS from PEM files. `ca`: the CA that signed the server's certificate (None: the
    system's roots); `cert` and `key`: a client certificate and its private key, for
    mutual TLS. The files are read when the client is made (make a new client to use
    renewed ones)."""

    ca: PathLike | None = None
    cert: PathLike | None = None
    key: PathLike | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("TLS: cert and key go together (a certificate and its private key)")

    def credentials(self) -> grpc.ChannelCredentials:
        """The files, read now, as gRPC channel credentials."""
        ca, key, cert = (_read(path) for path in (self.ca, self.key, self.cert))
        # gRPC's order: root certificates, private key, certificate chain.
        return grpc.ssl_channel_credentials(ca, key, cert)


def _read(path: PathLike | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


Security: TypeAlias = bool | TLS | grpc.ChannelCredentials


def channel_credentials(
    tls: Security, credentials: grpc.ChannelCredentials | None
) -> grpc.ChannelCredentials | None:
    """The credentials of a secure channel for `tls`, or None for a plaintext one.
    `credentials` is the older name of `tls=<grpc.ChannelCredentials>`, still taken."""
    if credentials is not None:
        if tls is not False:
            raise TypeError("pass tls=, not both tls= and credentials=")
        # stacklevel 3: the line that made the client, not the client's __init__.
        warnings.warn("credentials= is deprecated: pass tls=", DeprecationWarning, stacklevel=3)
        return credentials
    if tls is True:
        return grpc.ssl_channel_credentials()  # the system's roots
    if tls is False:
        return None
    if isinstance(tls, TLS):
        return tls.credentials()
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    raise TypeError(f"tls must be a bool, a TLS or a grpc.ChannelCredentials, not {type(tls)}")


def with_api_key(metadata: Metadata, api_key: str | None) -> tuple[tuple[str, str | bytes], ...]:
    """`metadata`, and `authorization: Bearer <api_key>` when there is a key.

    The key is metadata of each call rather than gRPC call credentials: gRPC sends call
    credentials only over TLS, and a platform may terminate TLS in a sidecar, the client
    speaking plaintext to it. One way for every channel, unary calls and streams alike.
    No message here names the key: a message may end up in a log."""
    metadata = tuple(metadata)
    if api_key is None:
        return metadata
    key = api_key.strip()  # a key read from a file often ends with a newline
    if not key:
        raise ValueError("api_key is empty")
    if not (key.isascii() and key.isprintable()):
        raise ValueError("api_key must be printable ASCII: it is sent as a header")
    if any(name.lower() == "authorization" for name, _ in metadata):
        raise ValueError("pass the API key as api_key or as authorization metadata, not both")
    return (*metadata, ("authorization", f"Bearer {key}"))


def describe(name: str, api_key: str | None, *arguments: str) -> str:
    """A client's repr, `name(arguments..., api_key=<hidden>)`: whether it has a key,
    never the key."""
    key = "<hidden>" if api_key is not None else "None"
    return f"{name}({', '.join([*arguments, f'api_key={key}'])})"
