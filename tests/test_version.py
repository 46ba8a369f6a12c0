"""One version for every manifest: VERSION is the source, and each copy must agree with it.

The root pyproject.toml reads VERSION (setuptools' dynamic version); the manifests that
cannot read a file keep a literal copy, checked here, as is the newest released heading
of CHANGELOG.md. Releasing a version: change VERSION, run this test, and copy the number
into each file it names. Go's module takes its version from a git tag, not a file.
"""

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

import patterns_client
import patterns_server

ROOT = Path(__file__).resolve().parent.parent
# Semantic Versioning 2.0.0's own pattern, for MAJOR.MINOR.PATCH[-pre][+build].
SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-((0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(\+([0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*))?"
)
# A released heading of Keep a Changelog ("## [1.2.3] - 2026-11-28"): any but Unreleased.
RELEASED = re.compile(r"^## \[(?!unreleased\])(?P<version>[^\]]+)\]", re.MULTILINE | re.I)
POM = {"pom": "http://maven.apache.org/POM/4.0.0"}


def source_version() -> str:
    return (ROOT / "VERSION").read_text().strip()


def test_version_file_holds_one_semantic_version() -> None:
    text = (ROOT / "VERSION").read_text()
    version = text.strip()
    assert SEMVER.fullmatch(version), f"VERSION: {version!r} is not a semantic version"
    assert text == version + "\n", "VERSION: one line, the version and a newline"


def test_server_distribution_reads_the_version_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], (
        "pyproject.toml: no literal version; it is read from VERSION"
    )
    assert "version" in project["project"].get("dynamic", []), (
        "pyproject.toml: [project] dynamic must list version"
    )
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"file": "VERSION"}, (
        "pyproject.toml: [tool.setuptools.dynamic] version must be read from VERSION"
    )


def python_client() -> str:
    project = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())
    return str(project["project"]["version"])


def ts_package() -> str:
    return str(json.loads((ROOT / "clients/ts/package.json").read_text())["version"])


def ts_lock() -> str:
    return str(json.loads((ROOT / "clients/ts/package-lock.json").read_text())["version"])


def ts_lock_root_package() -> str:
    lock = json.loads((ROOT / "clients/ts/package-lock.json").read_text())
    return str(lock["packages"][""]["version"])


def java_pom() -> str:
    project = ET.parse(ROOT / "clients/java/pom.xml").getroot()
    version = project.find("pom:version", POM)  # the project's own, not a dependency's
    assert version is not None and version.text, "clients/java/pom.xml has no <version>"
    return version.text.strip()


def changelog() -> str:
    text = (ROOT / "CHANGELOG.md").read_text()
    released = RELEASED.search(text)  # the first is the newest
    assert released, "CHANGELOG.md has no released version heading (## [x.y.z] - date)"
    return released["version"]


def server_package() -> str:
    return patterns_server.__version__


def client_package() -> str:
    return patterns_client.__version__


COPIES: dict[str, Callable[[], str]] = {
    "clients/python/pyproject.toml [project] version": python_client,
    'clients/ts/package.json "version"': ts_package,
    'clients/ts/package-lock.json "version"': ts_lock,
    'clients/ts/package-lock.json packages[""].version': ts_lock_root_package,
    "clients/java/pom.xml <version>": java_pom,
    "CHANGELOG.md newest released heading": changelog,
    # What is installed in the virtualenv: `make` reinstalls when VERSION changes.
    "patterns_server.__version__ (installed)": server_package,
    "patterns_client.__version__ (installed)": client_package,
}


@pytest.mark.parametrize("where", COPIES)
def test_copy_agrees_with_version_file(where: str) -> None:
    found = COPIES[where]()
    expected = source_version()
    assert found == expected, f"{where} says {found!r}, VERSION says {expected!r}"
