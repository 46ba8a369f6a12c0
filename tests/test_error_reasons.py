"""The contract lists every error reason the server returns, and none that it does not.

`patterns.errors.v1.ErrorReason` lists the google.rpc.ErrorInfo reasons clients switch on.
The server makes a reason in one of two ways: it constructs a `PatternError` (with a
reason, or without: its class's `default_reason`), which `runtime.guard` turns into a
status; or it builds an ErrorInfo (or a CheckError, an `rpc.errors.Failure`) itself, as
`failure_of` does for INTERNAL. The scan below
reads the server's source for both, so a reason added anywhere in the server and not to the
contract fails here, before a client meets it; and a listed reason that nothing makes any
more fails too, as a stale entry.

A reason the scan cannot read (a variable, an expression) fails unless `FORWARDED` says
why it is safe: a place that passes on a reason made elsewhere, where the scan reads it.
A function that passes one of its parameters on as a reason is followed: its callers'
arguments are read instead. What the scan cannot see at all is a PatternError class
reached other than by a module's name for it (`cls(...)`, `type(error)(...)`): the server
has none.

At run time, `tests/rpc.py`'s `details()` checks every ErrorInfo a test reads against the
same list; the last test here proves that it refuses an unlisted reason.
"""

import ast
import asyncio
import importlib
import inspect
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import ErrorInfo
from grpc_health.v1 import health_pb2, health_pb2_grpc
from patterns.errors.v1 import errors_pb2
from patterns.ratelimit.v1.ratelimit_pb2 import CheckError

import patterns_server
from devtools.processes import PatternsServer
from patterns_server.core.errors import (
    Aborted,
    InvalidArgument,
    NotFound,
    PatternError,
    Unavailable,
)
from patterns_server.core.settings import Settings
from patterns_server.rpc.errors import Failure
from patterns_server.rpc.service import Service
from patterns_server.runtime.auth import Access
from patterns_server.runtime.calls import Calls
from patterns_server.runtime.guard import Gate
from patterns_server.runtime.serving import add_service
from tests.rpc import LISTED_REASONS, details, grpcurl

SERVER = Path(patterns_server.__file__).parent

# Where a reason is not a literal because it is passed on, and why that is safe: (module,
# function, expression) -> why.
FORWARDED = {
    ("patterns_server.core.errors", "PatternError.__init__", "self.reason"): (
        "the reason given, or the class's default_reason: the scan reads both where each "
        "error is constructed"
    ),
    ("patterns_server.core.errors", "InvalidArgument.under", "self.reason"): (
        "the same error nested under a parent field keeps the reason it was made with"
    ),
    ("patterns_server.rpc.errors", "failure_of", "error.reason"): (
        "a status tells the reason of the PatternError it answers, made elsewhere"
    ),
    ("patterns_server.runtime.guard", "status_for", "failure.reason"): (
        "the guard sends the reason failure_of read, scanned there"
    ),
    ("patterns_server.ratelimit.service", "_check_error", "failure.reason"): (
        "a CheckStream answers a check's error with the reason failure_of read, scanned there"
    ),
}


@dataclass
class Scan:
    """What the scan found: each reason with the places that make it, and the places whose
    reason it could not read, as (module, function, expression, place)."""

    made: dict[str, list[str]] = field(default_factory=dict)
    unread: list[tuple[str, str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    """One module to scan: its name, where it is, its syntax tree, and what its names
    stand for (its globals)."""

    module: str
    place: str
    tree: ast.Module
    namespace: Mapping[str, Any]


class _Reader(ast.NodeVisitor):
    """Reads one module's reasons into `scan`. `builders` are the functions known to pass a
    parameter on as a reason (function -> parameter); `found` collects this module's."""

    def __init__(self, source: Source, builders: Mapping[Any, str], scan: Scan) -> None:
        self.source = source
        self.builders = builders
        self.scan = scan
        self.found: dict[Any, str] = {}
        self.scopes: list[ast.AST] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._within(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._within(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._within(node)

    def _within(self, node: ast.AST) -> None:
        self.scopes.append(node)
        self.generic_visit(node)
        self.scopes.pop()

    def visit_Call(self, node: ast.Call) -> None:
        callee = self._resolved(node.func)
        if callee in (ErrorInfo, CheckError):  # a message: keyword arguments only
            given = {k.arg: k.value for k in node.keywords}
            self._read(given.get("reason", ast.Constant("")), node)  # no reason is ""
        elif callee is Failure:
            self._read(self._argument(callee, "reason", node), node)
        elif isinstance(callee, type) and issubclass(callee, PatternError):
            reason = self._argument(callee, "reason", node)
            if reason is None or (isinstance(reason, ast.Constant) and not reason.value):
                # `reason or default_reason` (PatternError itself has none: "")
                reason = ast.Constant(getattr(callee, "default_reason", ""))
            self._read(reason, node)
        elif inspect.isfunction(callee) and callee in self.builders:
            reason = self._argument(callee, self.builders[callee], node)
            self._read(reason if reason is not None else ast.Constant(""), node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._assigned(target, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assigned(node.target, node)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._assigned(node.target, node)
        self.generic_visit(node)

    def _assigned(self, target: ast.expr, node: ast.stmt) -> None:
        """Setting an error's `reason` after it is made bypasses every constructor the scan
        reads: only PatternError's own __init__ may (see FORWARDED)."""
        if isinstance(target, ast.Attribute) and target.attr == "reason":
            self._unread(target, node)

    def _read(self, reason: ast.expr | None, node: ast.AST) -> None:
        if isinstance(reason, ast.Constant) and isinstance(reason.value, str):
            self.scan.made.setdefault(reason.value, []).append(self._place(node))
            return
        function = self._function()
        if (
            isinstance(reason, ast.Name)
            and function is not None
            and len(self.scopes) == 1  # a module's function: its callers can be found
            and reason.id in _parameters(function)
        ):
            self.found[self.source.namespace[function.name]] = reason.id
            return
        self._unread(reason if reason is not None else node, node)

    def _unread(self, expression: ast.AST, node: ast.AST) -> None:
        self.scan.unread.append(
            (self.source.module, self._scope_name(), ast.unparse(expression), self._place(node))
        )

    def _argument(self, callee: Any, name: str, node: ast.Call) -> ast.expr | None:
        """The expression `node` passes as `callee`'s parameter `name` (None if it passes
        none): bound as Python would bind the call."""
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            return ast.Name("*unpacked*")  # unreadable: reported as such
        try:
            bound = inspect.signature(callee).bind(
                *node.args, **{k.arg: k.value for k in node.keywords if k.arg is not None}
            )
        except TypeError:
            return ast.Name("*not-a-valid-call*")
        value = bound.arguments.get(name)
        return value if isinstance(value, ast.expr) else None

    def _resolved(self, expression: ast.expr) -> Any:
        """What a name (or dotted name) of the module stands for; None otherwise."""
        if isinstance(expression, ast.Name):
            return self.source.namespace.get(expression.id)
        if isinstance(expression, ast.Attribute):
            owner = self._resolved(expression.value)
            return getattr(owner, expression.attr, None) if owner is not None else None
        return None

    def _function(self) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        for scope in reversed(self.scopes):
            if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                return scope
        return None

    def _scope_name(self) -> str:
        return ".".join(getattr(scope, "name", "?") for scope in self.scopes) or "<module>"

    def _place(self, node: ast.AST) -> str:
        return f"{self.source.place}:{getattr(node, 'lineno', '?')}"


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    arguments = function.args
    return {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}


def scanned(sources: list[Source]) -> Scan:
    """The reasons `sources` make. Functions that pass a parameter on as a reason are
    found first (over and over, for a function that passes one to another), then read
    through their callers."""
    builders: dict[Any, str] = {}
    while True:
        scan, found = Scan(), dict[Any, str]()
        for source in sources:
            reader = _Reader(source, builders, scan)
            reader.visit(source.tree)
            found.update(reader.found)
        if found == builders:
            return scan
        builders = found


def server_sources() -> list[Source]:
    """Every module of the server, with its globals."""
    sources = []
    for path in sorted(SERVER.rglob("*.py")):
        parts = path.relative_to(SERVER.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(), str(path))
        if parts[-1] == "__main__":  # importing it would start a server: its imports only
            namespace = dict(_imported(tree))
        else:
            namespace = vars(importlib.import_module(module))
        sources.append(Source(module, str(path.relative_to(SERVER.parent)), tree, namespace))
    return sources


def _imported(tree: ast.Module) -> Iterator[tuple[str, Any]]:
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported = importlib.import_module(node.module)
            for alias in node.names:
                yield alias.asname or alias.name, getattr(imported, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.asname or alias.name, importlib.import_module(alias.name)


@pytest.fixture(scope="module")
def server_scan() -> Scan:
    return scanned(server_sources())


def test_the_contract_lists_reasons_without_a_prefix() -> None:
    # The value names are the reasons on the wire: only the zero value has the prefix.
    names = errors_pb2.ErrorReason.keys()
    assert errors_pb2.ErrorReason.Name(0) == "ERROR_REASON_UNSPECIFIED"
    assert [n for n in names if n.startswith("ERROR_REASON_")] == ["ERROR_REASON_UNSPECIFIED"]


def test_every_reason_the_server_makes_is_in_the_contract(server_scan: Scan) -> None:
    unlisted = {
        reason: places
        for reason, places in server_scan.made.items()
        if reason not in LISTED_REASONS
    }
    assert not unlisted, (
        f"reasons the server makes that patterns.errors.v1.ErrorReason does not list: "
        f"{unlisted} (add them to protos/patterns/errors/v1/errors.proto, and `make protos`)"
    )


def test_every_reason_in_the_contract_is_made_somewhere(server_scan: Scan) -> None:
    # A value cannot leave the contract (clients may still switch on it): one the server no
    # longer makes stays, marked deprecated.
    values = errors_pb2.ErrorReason.DESCRIPTOR.values_by_name
    current = {r for r in LISTED_REASONS if not values[r].GetOptions().deprecated}
    stale = current - server_scan.made.keys()
    assert not stale, (
        f"ErrorReason lists reasons that nothing in the server makes: {stale} (mark them "
        "[deprecated = true] in protos/patterns/errors/v1/errors.proto)"
    )


def test_every_reason_is_read_or_known_to_be_passed_on(server_scan: Scan) -> None:
    unread = [u for u in server_scan.unread if u[:3] not in FORWARDED]
    assert not unread, (
        f"reasons the scan cannot read (module, function, expression, place): {unread}; "
        "give a literal, or add the place to FORWARDED with why it is safe"
    )
    seen = {u[:3] for u in server_scan.unread}
    assert not FORWARDED.keys() - seen, "FORWARDED names places that no longer exist"


SAMPLE = """
def invalid(field, why):
    raise InvalidArgument(field, why, "SAMPLE_POSITIONAL")

def lost():
    return Aborted("gone", reason="SAMPLE_KEYWORD")

def missing():
    return NotFound("nothing here")

def computed(code):
    raise Unavailable("down", code.upper())

def shut(reason):
    raise Unavailable("going", reason)

def info(code):
    return ErrorInfo(reason=code, domain="patterns-server")

def callers():
    shut("SAMPLE_PASSED_ON")
    info("SAMPLE_BUILT")

def late(error):
    error.reason = "SAMPLE_SET_LATER"
"""


def test_the_scan_sees_each_way_a_reason_is_given() -> None:
    # The scan itself, on a module that gives reasons in every way it knows (and two it
    # must refuse): were it blind to one, the tests above could not fail for it.
    namespace: dict[str, Any] = {
        "InvalidArgument": InvalidArgument,
        "Aborted": Aborted,
        "NotFound": NotFound,
        "Unavailable": Unavailable,
        "ErrorInfo": ErrorInfo,
    }
    tree = ast.parse(SAMPLE)
    exec(compile(tree, "<sample>", "exec"), namespace)
    scan = scanned([Source("sample", "sample.py", tree, namespace)])
    assert sorted(scan.made) == [
        "NOT_FOUND",  # NotFound's default_reason
        "SAMPLE_BUILT",
        "SAMPLE_KEYWORD",
        "SAMPLE_PASSED_ON",
        "SAMPLE_POSITIONAL",
    ]
    assert [(u[1], u[2]) for u in scan.unread] == [
        ("computed", "code.upper()"),
        ("late", "error.reason"),
    ]


class RefusingServicer:
    """grpc.health.v1.Health whose Check fails, through the server's own guard, with the
    reason its request names."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        raise Unavailable("refused", request.service)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse()

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        yield health_pb2.HealthCheckResponse()


async def refused_with(reason: str) -> grpc.aio.AioRpcError:
    server = grpc.aio.server()
    health = health_pb2.DESCRIPTOR.services_by_name["Health"]
    add_service(
        server, Service(RefusingServicer(), health), Gate(Calls.for_settings(Settings()), Access())
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Check(health_pb2.HealthCheckRequest(service=reason), timeout=10)
            return caught.value
    finally:
        await server.stop(None)


def test_details_refuses_a_reason_the_contract_does_not_list() -> None:
    # Every suite reads errors through details(): it must fail on an unlisted reason, and
    # pass a listed one.
    listed = asyncio.run(refused_with("REDIS_UNAVAILABLE"))
    assert details(listed)["ErrorInfo"].reason == "REDIS_UNAVAILABLE"
    unlisted = asyncio.run(refused_with("NOT_IN_THE_CONTRACT"))
    with pytest.raises(AssertionError, match="NOT_IN_THE_CONTRACT"):
        details(unlisted)


def test_reflection_describes_the_reasons_with_their_comments(
    grpcurl_path: str, server: PatternsServer
) -> None:
    """A client reading the contract from a running server finds the reasons too."""
    described = grpcurl(grpcurl_path, server, "describe", "patterns.errors.v1.ErrorReason")
    for reason in LISTED_REASONS:
        assert f"  {reason} = " in described
    assert "// Status UNAVAILABLE" in described  # the comments came along
