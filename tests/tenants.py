"""Tenants for tests: a name, a namespace and an API key (with its digest), written to an
auth file as a platform team would write one."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Tenant:
    name: str
    namespace: str
    token: str  # the API key the tenant's callers send
    digest: str  # what the auth file holds
    extra: Sequence[str] = field(default=())  # more lines of its [[tenant]] table
    more_keys: Sequence[str] = field(default=())  # digests of other keys (a rotation)


def write_auth_file(path: Path, tenants: Iterable[Tenant]) -> Path:
    """`path`, holding one [[tenant]] table per tenant."""
    tables = []
    for tenant in tenants:
        table = ["[[tenant]]", f'name = "{tenant.name}"', f'namespace = "{tenant.namespace}"']
        digests = [d for d in (tenant.digest, *tenant.more_keys) if d]  # none: a certificate
        if digests:
            table.append("keys = [" + ", ".join(f'"{d}"' for d in digests) + "]")
        tables.append("\n".join([*table, *tenant.extra]))
    path.write_text("\n\n".join(tables) + "\n")
    return path
