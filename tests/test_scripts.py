"""Every Lua script opens with the one header template (what it does, KEYS, ARGV, reply,
clock), says truly whether it reads the clock, and reads it only through clock.lua."""

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import patterns_server
from patterns_server.storage import LuaScript
from patterns_server.storage.scripts import LIBRARY

CLOCK_FUNCTIONS = re.compile(r"\b(now_ms|now_us|expire_no_sooner|lease_grant|lease_extend)\b")


def all_scripts() -> list[LuaScript]:
    """The scripts the server defines (module-level LuaScript constants)."""
    found: dict[str, LuaScript] = {}
    for module in pkgutil.walk_packages(patterns_server.__path__, "patterns_server."):
        if module.name.endswith("__main__"):  # importing it would start a server
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if isinstance(value, LuaScript):
                found[value.sha] = value
    return list(found.values())


def header(body: Path) -> list[str]:
    """The comment lines a script file opens with."""
    lines = body.read_text().splitlines()
    code = next(index for index, line in enumerate(lines) if not line.startswith("--"))
    return lines[:code]


def test_every_lua_file_is_a_script_or_part_of_one() -> None:
    """No dead Lua: each file is a script's body or functions some script includes."""
    scripts = all_scripts()
    bodies = {script.body for script in scripts}
    for file in Path(patterns_server.__file__).parent.rglob("*.lua"):
        used = file in bodies or any(file.read_text() in s.source for s in scripts)
        assert used, f"{file} is in no script"
    assert len(bodies) == len(scripts) > 20


@pytest.mark.parametrize("script", all_scripts(), ids=lambda script: script.body.name)
def test_each_script_opens_with_the_header_template(script: LuaScript) -> None:
    lines = header(script.body)
    labels = [line[3:].split(" ", 1)[0].split("[", 1)[0] for line in lines]
    assert lines and not lines[0][3:].startswith(("KEYS", "ARGV")), "what it does comes first"
    for label in ("KEYS", "Reply", "Clock"):
        assert label in labels, f"{script.body}: no '-- {label}' line"
    assert labels.index("KEYS") < labels.index("Reply") < labels.index("Clock")
    assert "ARGV" in "\n".join(lines), f"{script.body}: its ARGV are not described"


@pytest.mark.parametrize("script", all_scripts(), ids=lambda script: script.body.name)
def test_a_script_says_truly_whether_it_reads_the_clock(script: LuaScript) -> None:
    clock = next(line for line in header(script.body) if line.startswith("-- Clock"))
    body = "\n".join(
        line for line in script.body.read_text().splitlines() if not line.startswith("--")
    )
    if clock.split()[2] == "none":
        assert not CLOCK_FUNCTIONS.search(body), f"{script.body} reads the clock"
    else:
        assert (LIBRARY / "clock.lua").read_text() in script.source, "loaded without clock"


@pytest.mark.parametrize("script", all_scripts(), ids=lambda script: script.body.name)
def test_only_clock_lua_calls_time(script: LuaScript) -> None:
    without_clock = script.source.replace((LIBRARY / "clock.lua").read_text(), "")
    assert "'TIME'" not in without_clock and '"TIME"' not in without_clock
