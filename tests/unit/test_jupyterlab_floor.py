"""One JupyterLab floor everywhere it is declared: 4.2, where `INotebookCellExecutor`
(the cell executor that holds a GPU cell during a move) first exists. The Python
requirements (the repository's test extra, the server extension's build and runtime) and
the front end's `@jupyterlab/*` dependencies must agree on it, and the browser tests run
on the floor with its Galata."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
FLOOR = Version("4.2")


def _jupyterlab_requirements() -> list[tuple[str, Requirement]]:
    found = []
    for path in (REPO / "pyproject.toml", REPO / "server_ext" / "pyproject.toml"):
        doc = tomllib.loads(path.read_text())
        project = doc.get("project", {})
        lists = [doc.get("build-system", {}).get("requires", []),
                 project.get("dependencies", []),
                 *project.get("optional-dependencies", {}).values()]
        for items in lists:
            for text in items:
                requirement = Requirement(text)
                if requirement.name == "jupyterlab":
                    found.append((str(path.relative_to(REPO)), requirement))
    return found


def test_every_python_requirement_of_jupyterlab_starts_at_the_floor():
    found = _jupyterlab_requirements()
    assert len(found) >= 3, found  # the test extra, the build system, the extension
    for where, requirement in found:
        lows = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        assert lows == [FLOOR], f"{where}: {requirement} (the floor is >={FLOOR})"
        assert not requirement.specifier.contains("4.1.99"), where


def test_the_front_end_packages_start_at_the_same_release():
    package = json.loads((REPO / "server_ext" / "package.json").read_text())
    app_packages = {name: spec for name, spec in package["dependencies"].items()
                    if name.startswith("@jupyterlab/")}
    assert app_packages
    # @jupyterlab/coreutils and services are versioned 6.x / 7.x in the 4.2 release.
    release_minor = {"@jupyterlab/coreutils": "6.2", "@jupyterlab/services": "7.2"}
    for name, spec in app_packages.items():
        match = re.fullmatch(r"\^(\d+\.\d+)\.\d+", spec)
        assert match, f"{name}: {spec}"
        assert match.group(1) == release_minor.get(name, "4.2"), f"{name}: {spec}"


def test_the_lowest_jupyterlab_browser_tests_use_the_floors_galata():
    # server_ext/hack/test-lowest-jupyterlab.sh runs the browser tests on JupyterLab
    # FLOOR.* with this Galata: Galata 5.Y belongs to JupyterLab 4.Y.
    package = json.loads(
        (REPO / "server_ext" / "ui-tests" / "lowest-jupyterlab" / "package.json").read_text())
    galata = package["devDependencies"]["@jupyterlab/galata"]
    assert re.fullmatch(rf"~5\.{FLOOR.minor}\.\d+", galata), galata
