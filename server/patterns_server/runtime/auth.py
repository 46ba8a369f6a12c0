"""Tenants: who is calling, which namespace their keys live in, what they may call, and
their share of the server's limits.

Tenants come from the auth file (`--auth-file`, TOML), one `[[tenant]]` table each:

    [[tenant]]
    name = "checkout"                  # for people and logs
    namespace = "checkout"             # in every key and channel: 1-64 of [a-z0-9_-]
    keys = ["<SHA-256 hex of a token>", ...]   # several, to rotate without downtime
    services = ["patterns.ratelimit.v1.RateLimiter"]   # optional: all when absent
    max_concurrent_rpcs = 200          # optional: its share of --max-concurrent-rpcs
    max_streams = 50                   # optional: its share of --max-streams
    client_cert_subject = "CN=checkout,O=Example"      # optional, with mTLS
    client_cert_san = "spiffe://example.org/checkout"  # optional, with mTLS

A caller sends `authorization: Bearer <token>`; the server keeps only SHA-256 digests of
tokens, so the file holds no secret. With mTLS (`--tls-client-ca`), a caller without a
token may be known by its certificate's subject or one of its subject alternative names.
Without an auth file every caller is the tenant `default`, in the namespace `default`.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from patterns_server.core.errors import PermissionDenied, Unauthenticated
from patterns_server.core.tenancy import DEFAULT_NAMESPACE

NAMESPACE = re.compile(r"[a-z0-9_-]{1,64}")
DIGEST = re.compile(r"[0-9a-f]{64}")
TOKEN_PREFIX = "pat_"
TOKEN_BYTES = 32  # 256 random bits
BEARER = "bearer "
BUCKET_CHARS = 4
FIELDS = {
    "name",
    "namespace",
    "keys",
    "services",
    "max_concurrent_rpcs",
    "max_streams",
    "client_cert_subject",
    "client_cert_san",
}


@dataclass(frozen=True)
class Tenant:
    name: str
    namespace: str
    services: frozenset[str] | None = None  # None: every service
    max_concurrent_rpcs: int | None = None
    max_streams: int | None = None


DEFAULT_TENANT = Tenant("default", DEFAULT_NAMESPACE)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credential:
    """Who a call authenticated as, and by what: a key's digest, or a certificate."""

    tenant: Tenant
    key_digest: str = ""
    certificate: str = ""


DEFAULT_CREDENTIAL = Credential(DEFAULT_TENANT)


class AuthFileError(ValueError):
    """The auth file cannot be used: the message names the file, the line and the field."""


class Tenants:
    """The tenants of one version of the auth file, and how a call is matched to one."""

    def __init__(
        self,
        by_digest: Mapping[str, Tenant],
        by_subject: Mapping[str, Tenant],
        by_san: Mapping[str, Tenant],
    ) -> None:
        self._by_digest = dict(by_digest)
        self._by_subject = dict(by_subject)
        self._by_san = dict(by_san)
        # Digests by their first BUCKET_CHARS hex digits: a call's digest is compared in
        # constant time with the few that share its bucket (what a timing probe could learn
        # is which 16-bit prefixes of SHA-256 digests exist: nothing that leads to a key).
        self._buckets: dict[str, list[str]] = {}
        for digest in self._by_digest:
            self._buckets.setdefault(digest[:BUCKET_CHARS], []).append(digest)

    @property
    def all(self) -> list[Tenant]:
        found = [*self._by_digest.values(), *self._by_subject.values(), *self._by_san.values()]
        return list(dict.fromkeys(found))

    def authenticate(
        self,
        metadata: Iterable[tuple[str, Any]],
        peer: Callable[[], Mapping[str, Sequence[bytes]]],
    ) -> Credential:
        """The credential of a call from its metadata and (asked only without a token)
        its TLS peer's properties: its bearer token when it sends one, else its client
        certificate."""
        token = _bearer_token(metadata)
        if token is not None:
            digest = digest_of(token)
            for stored in self._buckets.get(digest[:BUCKET_CHARS], ()):
                if hmac.compare_digest(stored, digest):
                    return Credential(self._by_digest[stored], key_digest=stored)
            raise Unauthenticated("the API key is not valid", "INVALID_API_KEY")
        properties = peer() if self._by_subject or self._by_san else {}
        for subject in properties.get("x509_subject", ()):
            tenant = self._by_subject.get(subject.decode(errors="replace"))
            if tenant is not None:
                return Credential(tenant, certificate=subject.decode(errors="replace"))
        for san in properties.get("x509_subject_alternative_name", ()):
            tenant = self._by_san.get(san.decode(errors="replace"))
            if tenant is not None:
                return Credential(tenant, certificate=san.decode(errors="replace"))
        raise Unauthenticated(
            "no credentials: send 'authorization: Bearer <API key>'", "MISSING_CREDENTIALS"
        )

    def still_valid(self, credential: Credential) -> bool:
        """Whether `credential` names the same tenant in this version of the file (a key
        or a certificate removed, or its tenant gone or moved, makes it invalid)."""
        if credential.key_digest:
            return self._by_digest.get(credential.key_digest) == credential.tenant
        return credential.tenant in (
            self._by_subject.get(credential.certificate),
            self._by_san.get(credential.certificate),
        )

    @staticmethod
    def allow(credential: Credential, service: str) -> None:
        """Raises PERMISSION_DENIED when the tenant may not call `service`."""
        services = credential.tenant.services
        if services is not None and service not in services:
            raise PermissionDenied(
                f"tenant {credential.tenant.name!r} may not call {service}", "SERVICE_NOT_ALLOWED"
            )


class Access:
    """Who may call now: everyone, as the tenant `default` (no auth file), or the tenants
    of the auth file's last good version (`tenants` is replaced as the file changes)."""

    def __init__(self, tenants: "Tenants | None" = None) -> None:
        self.tenants = tenants

    def credential(self, context: grpc.aio.ServicerContext, service: str) -> Credential:
        """The credential of the call of `context` to `service`; UNAUTHENTICATED or
        PERMISSION_DENIED when it may not make it."""
        credential = self.identify(context)
        Tenants.allow(credential, service)
        return credential

    def identify(self, context: grpc.aio.ServicerContext) -> Credential:
        """The credential of the call of `context`, whatever it calls."""
        tenants = self.tenants
        if tenants is None:
            return DEFAULT_CREDENTIAL
        return tenants.authenticate(context.invocation_metadata() or (), context.auth_context)


class AuthFile:
    """The auth file, read again when it changes (checked every `interval` seconds) and
    on `reload()` (SIGHUP). A version that cannot be used leaves the last good one in
    force, and the log says why (file, line, field); after a good one, `on_change` ends
    what the old tenants may no longer do (streams of revoked keys)."""

    def __init__(
        self,
        path: Path,
        known_services: Iterable[str],
        access: Access,
        on_change: Callable[[Tenants], None],
    ) -> None:
        self._path = path
        self._known_services = frozenset(known_services)
        self._access = access
        self._on_change = on_change
        self._seen = self._signature()

    def load(self) -> Tenants:
        """The tenants of the file as it is now, put in force; AuthFileError otherwise."""
        self._seen = self._signature()
        tenants = load_tenants(self._path, self._known_services)
        self._access.tenants = tenants
        return tenants

    def reload(self) -> bool:
        """Read the file again; whether its new version is in force."""
        try:
            tenants = self.load()
        except AuthFileError as error:
            logger.error("auth file not reloaded, the previous version stays in force: %s", error)
            return False
        logger.info("auth file reloaded: %d tenants", len(tenants.all))
        self._on_change(tenants)
        return True

    async def watch(self, interval: float) -> None:
        """Reload whenever the file's size, time or inode change (until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            if self._signature() != self._seen:
                self.reload()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self._path)
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size, status.st_ino)


def _bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The token of the call's `authorization: Bearer <token>` header; None without one."""
    for key, value in metadata:
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if text[: len(BEARER)].lower() != BEARER or not text[len(BEARER) :].strip():
                raise Unauthenticated(
                    "the authorization header must be 'Bearer <API key>'", "INVALID_API_KEY"
                )
            return text[len(BEARER) :].strip()
    return None


def new_token() -> tuple[str, str]:
    """A new random API key, and the SHA-256 digest the auth file holds for it."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    return token, digest_of(token)


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_tenants(path: Path, known_services: Iterable[str]) -> Tenants:
    """The tenants of the auth file at `path`; AuthFileError (file, line, field) when it
    cannot be read or breaks a rule."""
    try:
        text = path.read_text()
    except OSError as error:
        raise AuthFileError(f"{path}: cannot read it: {error.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AuthFileError(f"{path}: not valid TOML: {error}") from None
    return _Parser(path, text, frozenset(known_services)).tenants(document)


class _Parser:
    def __init__(self, path: Path, text: str, known_services: frozenset[str]) -> None:
        self._path = path
        self._lines = text.splitlines()
        self._known_services = known_services

    def tenants(self, document: dict[str, Any]) -> Tenants:
        extra = set(document) - {"tenant"}
        if extra:
            raise self._error(None, sorted(extra)[0], "unknown table or key (only [[tenant]])")
        entries = document.get("tenant", [])
        if not isinstance(entries, list) or not entries:
            raise self._error(None, "tenant", "the file must hold at least one [[tenant]]")
        by_digest: dict[str, Tenant] = {}
        by_subject: dict[str, Tenant] = {}
        by_san: dict[str, Tenant] = {}
        names: set[str] = set()
        namespaces: set[str] = set()
        for index, entry in enumerate(entries):
            tenant, keys, subject, san = self._tenant(index, entry)
            if tenant.name in names:
                raise self._error(index, "name", f"{tenant.name!r} names two tenants")
            if tenant.namespace in namespaces:
                raise self._error(index, "namespace", f"{tenant.namespace!r} is another's")
            names.add(tenant.name)
            namespaces.add(tenant.namespace)
            for digest in keys:
                if digest in by_digest:
                    raise self._error(index, "keys", f"{digest[:12]}... is another's key")
                by_digest[digest] = tenant
            for identity, table, field in (
                (subject, by_subject, "client_cert_subject"),
                (san, by_san, "client_cert_san"),
            ):
                if identity:
                    if identity in table:
                        raise self._error(index, field, f"{identity!r} is another tenant's")
                    table[identity] = tenant
        return Tenants(by_digest, by_subject, by_san)

    def _tenant(self, index: int, entry: Any) -> tuple[Tenant, list[str], str, str]:
        if not isinstance(entry, dict):
            raise self._error(index, "tenant", "must be a table")
        unknown = set(entry) - FIELDS
        if unknown:
            field = sorted(unknown)[0]
            raise self._error(index, field, f"unknown field (known: {', '.join(sorted(FIELDS))})")
        name = self._string(index, entry, "name", required=True)
        namespace = self._string(index, entry, "namespace", required=True)
        if not NAMESPACE.fullmatch(namespace):
            raise self._error(index, "namespace", "must be 1 to 64 of a-z, 0-9, '_' and '-'")
        keys = entry.get("keys", [])
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise self._error(index, "keys", "must be a list of strings")
        for key in keys:
            if not DIGEST.fullmatch(key):
                raise self._error(
                    index,
                    "keys",
                    "each must be the SHA-256 digest of a token, 64 lowercase hex digits "
                    "(patterns-server keys new makes both), never a token itself",
                )
        subject = self._string(index, entry, "client_cert_subject")
        san = self._string(index, entry, "client_cert_san")
        if not keys and not subject and not san:
            raise self._error(index, "keys", "a tenant needs a key or a client certificate")
        services = entry.get("services")
        if services is not None:
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                raise self._error(index, "services", "must be a list of full service names")
            for service in services:
                if service not in self._known_services:
                    known = ", ".join(sorted(self._known_services))
                    raise self._error(index, "services", f"{service!r} is not one of {known}")
        tenant = Tenant(
            name=name,
            namespace=namespace,
            services=None if services is None else frozenset(services),
            max_concurrent_rpcs=self._positive(index, entry, "max_concurrent_rpcs"),
            max_streams=self._positive(index, entry, "max_streams"),
        )
        return tenant, keys, subject, san

    def _string(self, index: int, entry: dict[str, Any], field: str, required: bool = False) -> str:
        value = entry.get(field, "")
        if not isinstance(value, str) or (required and not value):
            raise self._error(index, field, "must be a non-empty string")
        return value

    def _positive(self, index: int, entry: dict[str, Any], field: str) -> int | None:
        value = entry.get(field)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self._error(index, field, "must be a whole number, at least 1")
        return value

    def _error(self, index: int | None, field: str, problem: str) -> AuthFileError:
        line = self._line_of(index, field)
        where = f"line {line}, " if line else ""
        tenant = f"tenant #{index + 1}, " if index is not None else ""
        return AuthFileError(f"{self._path}: {where}{tenant}{field}: {problem}")

    def _line_of(self, index: int | None, field: str) -> int | None:
        """The line of `field` in the `index`th [[tenant]] (or of the table itself)."""
        tables = [n for n, line in enumerate(self._lines) if line.strip() == "[[tenant]]"]
        if index is None or index >= len(tables):
            return None
        end = tables[index + 1] if index + 1 < len(tables) else len(self._lines)
        for number in range(tables[index] + 1, end):
            if re.match(rf"\s*{re.escape(field)}\s*=", self._lines[number]):
                return number + 1
        return tables[index] + 1


def is_loopback(listen: str) -> bool:
    """Whether the host of `listen` ("host:port") is reachable only from this machine."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def warn_if_open(listen: str, port: int) -> None:
    """Without an auth file: a warning when `listen` reaches beyond this machine."""
    if not is_loopback(listen):
        logging.getLogger("patterns_server").warning(
            "no --auth-file, and %s is not a loopback address: anyone who reaches port %d "
            "can read and change every key; give each team an API key (docs/tenants.md)",
            listen.rsplit(":", 1)[0],
            port,
        )
