"""The grpcurl sessions the docs record are replayed against a real server.

Every ```console block of README.md and docs/*.md that runs grpcurl is a session: lines
starting with `$ ` are commands (continued while a line ends with `\\` or a quote is
open), the lines after a command are what it printed (stdout and stderr, as a terminal
shows them), and other lines starting with `#` are comments. A comment of the form
`#   $ command`, followed by `#   ` lines, is a command typed in another terminal while
the command above it runs, and what that printed: it is run once the output shown above
it has appeared (a Publish while a Subscribe streams, say).

Each session runs, command by command through bash (so a loop in the docs is a loop
here), against a server of its own Redis, emptied before the session: the keys a session
names are new to it, as they are to a reader trying the commands for the first time.
`localhost:50051` is the test server's address. What a command printed must match what
the docs show, except what legitimately varies from run to run:

- a line `...` stands for any number of lines (the docs leave them out);
- a duration with a fraction of a second (`"59.950682s"`) is any duration: time passes
  between commands; whole ones (`"20s"`) are exact;
- a timestamp (`"2026-11-28T06:40:36.408643Z"`) is any timestamp;
- a call ended by grpcurl's `-max-time` says `context deadline exceeded` or, when the
  server noticed the deadline first, `Deadline Exceeded`;
- the value of an `"id"` or `"token"` field is random: it matches a value of the same
  length up to its first `.`, and exactly after it (a session id's user tag). A later
  command or output of the session that shows the documented value gets the value the
  server actually gave, and two different documented values must be two different values;
- a `"fencingToken"` comes from the Redis clock: it matches any number, and the same way
  a documented value stands for the value the server gave; the numbers a session shows
  must compare as the documented ones do (a later grant's is greater).

A recorded output that no longer matches fails, with what the command printed instead.
"""

import itertools
import os
import re
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devtools.processes import PatternsServer, RedisServer
from tests.conftest import redis_server_binary

ROOT = Path(__file__).parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED_ADDRESS = "localhost:50051"
FENCE = re.compile(r"^```(\S*)\s*$")
ANOTHER_TERMINAL = "#   "
COMMAND_TIMEOUT = 30.0


@dataclass
class Step:
    """A command and the output the docs show for it. `meanwhile[k]` is a step run in
    another terminal once the first `k` lines of this step's output have appeared."""

    command: str
    output: list[str] = field(default_factory=list)
    meanwhile: dict[int, "Step"] = field(default_factory=dict)


@dataclass
class Session:
    document: Path
    line: int
    steps: list[Step]

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def fenced_blocks(document: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(first line number, language, lines) of each fenced block of `document`."""
    lines = document.read_text().splitlines()
    start, language = 0, None
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if fence is None:
            continue
        if language is None:
            start, language = number, fence.group(1)
        else:
            yield start, language, lines[start : number - 1]
            language = None


def is_complete(command: str) -> bool:
    """Whether `command` is whole: no open quote, no trailing backslash."""
    try:
        shlex.split(command)
    except ValueError:
        return False
    return True


def parse(lines: list[str]) -> list[Step]:
    """The steps of a console block (see the module's docstring)."""
    steps: list[Step] = []
    other: Step | None = None  # a step of another terminal, while its lines go on
    rest = iter(lines)
    for line in rest:
        if line.startswith(f"{ANOTHER_TERMINAL}$ ") and steps:
            other = Step(read_command(line.removeprefix(f"{ANOTHER_TERMINAL}$ "), rest, True))
            steps[-1].meanwhile[len(steps[-1].output)] = other
        elif line.startswith(ANOTHER_TERMINAL) and other is not None:
            other.output.append(line.removeprefix(ANOTHER_TERMINAL))
        elif line.startswith("$ "):
            steps.append(Step(read_command(line.removeprefix("$ "), rest, False)))
            other = None
        elif line.startswith("#"):
            other = None
        elif line.strip() and steps:
            steps[-1].output.append(line)
            other = None
    return steps


def read_command(first: str, rest: Iterator[str], commented: bool) -> str:
    """A command from its first line on, with the lines that continue it (in another
    terminal's step, without their `#`)."""
    command = first
    while not is_complete(command):
        line = next(rest, None)
        if line is None:
            raise ValueError(f"the block ends inside the command {command!r}")
        command += "\n" + (line.removeprefix("#") if commented else line)
    return command


def documented_sessions() -> list[Session]:
    sessions = []
    for document in DOCUMENTS:
        for line, language, lines in fenced_blocks(document):
            steps = parse(lines) if language == "console" else []
            if any("grpcurl" in step.command for step in steps):
                sessions.append(Session(document, line, steps))
    return sessions


SESSIONS = documented_sessions()

# What varies between runs (see the module's docstring), as it appears in grpcurl's JSON.
TIMESTAMP = r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"'
DURATION = r'"-?\d+(?:\.\d+)?s"'
# Who notices a deadline first, grpcurl or the server, is a race: each words it its way.
DEADLINE_MESSAGE = "  Message: context deadline exceeded"
DEADLINE_MESSAGES = r"  Message: (?:context deadline exceeded|Deadline Exceeded)\n"
NUMBERS = ("fencingToken",)
VARYING = re.compile(
    r'(?P<name>"(?:id|token|fencingToken)": )"(?P<value>[^"]+)"'
    r'|(?P<timestamp>"\d{4}-\d\d-\d\dT[\d:.]+Z")'
    r'|(?P<duration>"-?\d+\.\d+s")'
)


class Names:
    """The ids and tokens a session met: documented value -> the value of this run."""

    def __init__(self) -> None:
        self.actual: dict[str, str] = {}
        self.numbers: set[str] = set()  # the documented values that are numbers

    def substituted(self, command: str) -> str:
        for documented in sorted(self.actual, key=len, reverse=True):
            command = command.replace(documented, self.actual[documented])
        return command

    def pattern(self, expected: list[str]) -> tuple[re.Pattern[str], dict[str, str]]:
        """A regex for the output `expected` shows, and the documented value each of its
        groups captures."""
        parts: list[str] = []
        groups: dict[str, str] = {}  # group name -> the documented value it captures
        for line in expected:
            if line.strip() == "...":
                parts.append(r"(?:[^\n]*\n)*?")
                continue
            if line.rstrip() == DEADLINE_MESSAGE:
                parts.append(DEADLINE_MESSAGES)
                continue
            end = 0
            for found in VARYING.finditer(line):
                parts.append(re.escape(line[end : found.start()]))
                end = found.end()
                if found.group("timestamp"):
                    parts.append(TIMESTAMP)
                elif found.group("duration"):
                    parts.append(DURATION)
                else:
                    number = found.group("name").strip('": ') in NUMBERS
                    parts.append(re.escape(found.group("name")) + '"')
                    parts.append(self._value(found.group("value"), groups, number))
                    parts.append('"')
            parts.append(re.escape(line[end:].rstrip()) + r"\n")
        return re.compile("".join(parts)), groups

    def _value(self, documented: str, groups: dict[str, str], number: bool = False) -> str:
        """The regex for an id or token (or, `number`, a number) the docs show as
        `documented`: the value this run gave it if a step before met it, else a new group
        (or a back-reference to the group of this output that captures it already)."""
        if documented in self.actual:
            return re.escape(self.actual[documented])
        for group, value in groups.items():
            if value == documented:
                return f"(?P={group})"
        group = f"v{len(groups)}"
        groups[group] = documented
        if number:
            self.numbers.add(documented)
            return rf"(?P<{group}>\d+)"
        random, dot, fixed = documented.partition(".")
        return f"(?P<{group}>[A-Za-z0-9_-]{{{len(random)}}}{re.escape(dot + fixed)})"

    def learn(self, found: re.Match[str], groups: dict[str, str]) -> None:
        for group, documented in groups.items():
            value = found.group(group)
            assert value not in self.actual.values(), (
                f"{documented} is documented as a new value, but the server gave {value} again"
            )
            self.actual[documented] = value
        numbers = [(int(d), int(a)) for d, a in self.actual.items() if d in self.numbers]
        for (doc_a, act_a), (doc_b, act_b) in itertools.combinations(numbers, 2):
            assert (doc_a < doc_b) == (act_a < act_b), (
                f"the docs show {doc_a} and {doc_b}, the server gave {act_a} and {act_b}"
            )


def printed(text: str) -> str:
    """Output as compared: trailing spaces and blank lines dropped."""
    lines = [line.rstrip() for line in text.splitlines()]
    return "".join(f"{line}\n" for line in lines if line)


class Replay:
    def __init__(self, server: PatternsServer, path: str) -> None:
        self.server = server
        self.env = dict(os.environ, PATH=path)
        self.names = Names()

    def run(self, step: Step) -> None:
        command = self.names.substituted(step.command)
        command = command.replace(DOCUMENTED_ADDRESS, self.server.address)
        process = subprocess.Popen(
            ["bash", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()))
        reader.start()
        try:
            for shown, other in sorted(step.meanwhile.items()):
                self._wait_for(lines, shown, command)
                self.run(other)
            try:
                process.wait(COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{command} did not end within {COMMAND_TIMEOUT} s")
        finally:
            process.kill()
            process.wait()
            reader.join()
        self.check(step, "".join(lines))

    def _wait_for(self, lines: list[str], count: int, command: str) -> None:
        """Until `command` has printed `count` lines (of the output compared)."""
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while len(printed("".join(lines)).splitlines()) < count:
            assert time.monotonic() < deadline, f"{command} printed only:\n{''.join(lines)}"
            time.sleep(0.01)

    def check(self, step: Step, output: str) -> None:
        pattern, groups = self.names.pattern(step.output)
        found = pattern.fullmatch(printed(output))
        shown = "\n".join(step.output)
        assert found, f"$ {step.command}\n\nprinted:\n{output}\nwhere the docs show:\n{shown}"
        self.names.learn(found, groups)


@pytest.fixture(scope="module")
def docs_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path_factory.mktemp("docs-redis"), redis_server_binary())
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def docs_server(docs_redis: RedisServer) -> Iterator[PatternsServer]:
    # docs/envoy.md's session asks Envoy's rate limit service, configured by the example.
    envoy_config = ROOT / "examples" / "envoy" / "ratelimit.yaml"
    server = PatternsServer(docs_redis.url, "--envoy-config", str(envoy_config)).start()
    yield server
    server.stop()


@pytest.mark.parametrize("session", SESSIONS, ids=[session.name for session in SESSIONS])
def test_recorded_session_replays(
    session: Session, docs_redis: RedisServer, docs_server: PatternsServer, grpcurl_path: str
) -> None:
    docs_redis.client().flushall()
    path = os.pathsep.join([str(Path(grpcurl_path).parent), os.environ.get("PATH", "")])
    replay = Replay(docs_server, path)
    for step in session.steps:
        replay.run(step)


def test_every_grpcurl_session_is_replayed() -> None:
    """A grpcurl command shown outside a replayed session (in a ```sh block, say) would
    go unchecked: the docs show commands only in console blocks."""
    replayed = {(session.document, session.line) for session in SESSIONS}
    for document in DOCUMENTS:
        for line, _, lines in fenced_blocks(document):
            commands = [text for text in lines if text.lstrip("# ").startswith("$ grpcurl")]
            assert not commands or (document, line) in replayed, f"{document}:{line}"
    assert any(session.document.name == "README.md" for session in SESSIONS)
    assert len({session.document for session in SESSIONS}) >= 8  # README and each service


def test_readme_links_resolve() -> None:
    """The README's links into the repository lead somewhere (MkDocs checks those of
    docs/, but the README is not one of its pages)."""
    readme = ROOT / "README.md"
    for target in re.findall(r"\]\(([^)]+)\)", readme.read_text()):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        linked = ROOT / path
        assert linked.exists(), f"README links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.MULTILINE)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"README links to {target}: no such heading"
