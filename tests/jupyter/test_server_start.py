"""The server start hook (`gpushift_jupyter_server_start.pth` → `server_start`): a
Jupyter server process starts without building jsonschema's IRI grammar or importing its
other optional format checkers, the format checks still work, JupyterLab's yarn
configuration comes from a command started early, and no other process is touched. Run
through the .pth file the package installed into this environment, in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gpushift_jupyter import server_start, yarn_config_prefetch

PROBE = """
import importlib.util, sys
import jupyter_server.serverapp  # what a server imports first: jsonschema with it
built = "rfc3987_syntax.syntax_helpers" in sys.modules
stand_in = getattr(sys.modules.get("rfc3987_syntax"), "__gpushift_stand_in__", False)
optional = [name for name in ("rfc3986_validator", "rfc3339_validator", "fqdn", "webcolors",
                              "uri_template") if importlib.util.find_spec(name)]
assert len(optional) == 5, optional  # jupyter_server's dependencies install them all
deferred = [name for name in optional
            if getattr(sys.modules.get(name), "__gpushift_stand_in__", False)]
assert deferred in ([], optional), deferred
import jsonschema
checker = jsonschema.FormatChecker()
for value, format, conforms in [
        ("http://example.com/\\u00fc", "iri", True), ("::no iri", "iri", False),
        ("http://example.com/a", "uri", True), ("no uri", "uri", False),
        ("#/a", "uri-reference", True), ("\\\\x", "uri-reference", False),
        ("2024-01-01T00:00:00Z", "date-time", True), ("yesterday", "date-time", False),
        ("example.com", "hostname", True), ("-bad-.com", "hostname", False),
        ("red", "color", True), ("no-such-colour", "color", False),
        ("http://x/{id}", "uri-template", True), ("http://x/{id", "uri-template", False)]:
    assert checker.conforms(value, format) is conforms, (value, format)
import rfc3987_syntax, webcolors
assert not getattr(rfc3987_syntax, "__gpushift_stand_in__", False), "the stand-in stayed"
assert not getattr(webcolors, "__gpushift_stand_in__", False), "the stand-in stayed"
print(f"built={built} stand_in={stand_in} others={'deferred' if deferred else 'imported'}")
"""


def probe(tmp_path: Path, program: str, source: str = PROBE, **env: str) -> str:
    """Run `source` as a program named `program`, as `jupyter lab` runs `jupyter-lab`."""
    script = tmp_path / program
    script.write_text(source)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_package_installs_the_start_hook() -> None:
    installed = Path(sysconfig.get_paths()["purelib"]) / "gpushift_jupyter_server_start.pth"
    source = Path(__file__).parents[2] / "server_ext" / "gpushift_jupyter_server_start.pth"
    assert installed.read_text() == source.read_text()


@pytest.mark.parametrize("program", sorted(server_start.SERVER_COMMANDS))
def test_a_jupyter_server_starts_without_the_iri_grammar_or_other_format_checkers(
        tmp_path: Path, program: str) -> None:
    assert probe(tmp_path, program) == "built=False stand_in=True others=deferred"


@pytest.mark.parametrize("program", ["jupyter", "jupyter-kernel", "python-script",
                                     "ipykernel_launcher.py"])
def test_other_programs_are_left_alone(tmp_path: Path, program: str) -> None:
    assert probe(tmp_path, program) == "built=True stand_in=False others=imported"


def test_the_jupyter_launcher_does_not_even_import_the_hook(tmp_path: Path) -> None:
    """`jupyter lab` is `jupyter`, which execs `jupyter-lab`: its 30 ms of the hook's
    imports would only delay the server's start."""
    source = "import sys; print('gpushift_jupyter.server_start' in sys.modules)"
    assert probe(tmp_path, "jupyter", source) == "False"
    assert probe(tmp_path, "jupyter-lab", source) == "True"


def test_the_hook_can_be_turned_off(tmp_path: Path) -> None:
    assert probe(tmp_path, "jupyter-lab", GPUSHIFT_DEFER_IRI_GRAMMAR="0") == \
        "built=True stand_in=False others=imported"


def test_run_decides_by_the_program_name_and_never_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert not server_start.is_jupyter_server([])
    assert not server_start.is_jupyter_server(["-c"])
    assert server_start.is_jupyter_server(["/opt/conda/bin/jupyter-lab", "--ip=0.0.0.0"])

    def broken() -> bool:
        raise ImportError("a broken environment")

    monkeypatch.setattr(server_start.format_checkers, "defer", broken)
    monkeypatch.setattr(server_start.yarn_config_prefetch, "start", broken)
    monkeypatch.setattr(server_start.warm_kernels, "start_for_arriving_move", broken)
    assert server_start.run(["jupyter-lab"]) is False


YARN_PROBE = """
import logging, subprocess, sys
from gpushift_jupyter import yarn_config_prefetch as prefetch
early = prefetch.prefetch
given = []
if early is not None:  # record what JupyterLab is given from the early command
    output = early.output
    early.output = lambda: given.append(output()) or given[-1]
import jupyterlab.commands as commands
log = logging.getLogger("probe")
first = commands._yarn_config(log)
ran = []  # JupyterLab's own command, as a later call runs it
check_output = subprocess.check_output
subprocess.check_output = lambda args, **kw: ran.append((args, kw.get("cwd"))) or \
    check_output(args, **kw)
again = commands._yarn_config(log)
subprocess.check_output = check_output
assert first == again, (first, again)
[(command, cwd)] = ran
if early is not None:
    assert (command, cwd) == (early.command, early.cwd), (command, cwd, early.command)
    assert given == [check_output(command, stderr=subprocess.PIPE, cwd=cwd)], given
    assert given[0], "yarn printed nothing"
import jupyterlab.labapp  # JupyterLab's own call at import works as before
print(f"started={early is not None} used={bool(given)}")
"""


needs_node = pytest.mark.skipif(yarn_config_prefetch.yarn_command() is None,
                                reason="no Node.js: JupyterLab runs no yarn command")


# A later start, for a yarn program noted as writing what JupyterLab cannot read:
# JupyterLab is given no output, and its configuration is what its own command gives.
YARN_NOTED_PROBE = """
import logging, subprocess
from gpushift_jupyter import yarn_config_prefetch as prefetch
early = prefetch.prefetch
ran = []
check_output = subprocess.check_output
subprocess.check_output = lambda args, **kw: ran.append(args) or check_output(args, **kw)
import jupyterlab.commands as commands
log = logging.getLogger("probe")
first = commands._yarn_config(log)
assert not ran, ran  # no yarn command ran for it
again = commands._yarn_config(log)  # JupyterLab's own command
assert len(ran) == 1 and first == again == {"yarn config": {}, "npm config": {}}, again
import jupyterlab.labapp
print(f"started={early.process is not None} used={early.used}")
"""


def yarn_env(tmp_path: Path) -> dict[str, str]:
    """A cache folder of the test's own: what earlier starts noted is not seen."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache")}


@needs_node
def test_a_jupyter_server_gets_jupyterlabs_yarn_config_from_the_early_command(
        tmp_path: Path) -> None:
    """The same configuration as JupyterLab's own call, from the command the start hook
    started before JupyterLab was imported."""
    assert probe(tmp_path, "jupyter-lab", YARN_PROBE, **yarn_env(tmp_path)) == \
        "started=True used=True"


@needs_node
def test_a_yarn_whose_output_jupyterlab_cannot_read_runs_once(tmp_path: Path) -> None:
    """JupyterLab 4's yarn (3+) writes settings JupyterLab's parser does not read: after
    the first start has seen that, later starts run no Node.js and JupyterLab gets the
    same (empty) configuration; another program (a changed yarn.js) runs again."""
    found = yarn_config_prefetch.yarn_command()
    assert found is not None
    command, cwd = found
    output = subprocess.run(command, cwd=cwd, capture_output=True, check=True).stdout
    if yarn_config_prefetch.readable_by_jupyterlab(output):
        pytest.skip("this yarn writes yarn 1's output, which JupyterLab reads")
    env = yarn_env(tmp_path)
    assert probe(tmp_path, "jupyter-lab", YARN_PROBE, **env) == "started=True used=True"
    noted = json.loads((tmp_path / "cache" / "gpushift" / "yarn-config-unreadable.json")
                       .read_text())
    assert noted == {"programs": [yarn_config_prefetch.program_key(command)]}
    assert probe(tmp_path, "jupyter-lab", YARN_NOTED_PROBE, **env) == \
        "started=False used=True"
    # The noted key no longer names this program: it runs (and is noted again).
    (tmp_path / "cache" / "gpushift" / "yarn-config-unreadable.json").write_text(
        json.dumps({"programs": ["/usr/bin/node:1:1 /elsewhere/yarn.js:1:1"]}))
    assert probe(tmp_path, "jupyter-lab", YARN_PROBE, **env) == "started=True used=True"


def test_what_jupyterlab_reads_of_yarns_output() -> None:
    """JupyterLab's `_yarn_config` reads yarn 1's info/inspect lines; yarn 2+ writes a
    line per setting, typed, which it skips: only that shape counts as unreadable."""
    yarn1 = (b'{"type":"info","data":"yarn config"}\n'
             b'{"type":"inspect","data":{"registry":"https://example.invalid/"}}\n')
    yarn3 = (b'{"key":"cacheFolder","type":"ABSOLUTE_PATH","default":"./.yarn/cache"}\n'
             b'{"key":"npmRegistryServer","effective":"x","type":"STRING"}\n')
    assert yarn_config_prefetch.readable_by_jupyterlab(yarn1)
    assert not yarn_config_prefetch.readable_by_jupyterlab(yarn3)
    for other in (b"", b"not json\n", b'{"key":"cacheFolder"}\n', b"[1]\n",
                  yarn3 + b'{"type":"info","data":"yarn config"}\n'):
        assert yarn_config_prefetch.readable_by_jupyterlab(other), other


def test_a_program_is_known_by_its_files(tmp_path: Path) -> None:
    node, yarn = tmp_path / "node", tmp_path / "yarn.js"
    node.write_text("n")
    yarn.write_text("y")
    command = [str(node), str(yarn), "config", "--json"]
    key = yarn_config_prefetch.program_key(command)
    assert key is not None and str(yarn) in key
    yarn.write_text("yarn 4")
    assert yarn_config_prefetch.program_key(command) not in (None, key)
    yarn.unlink()
    assert yarn_config_prefetch.program_key(command) is None


def test_noted_programs_are_the_newest_few(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert yarn_config_prefetch.noted_unreadable() == []
    noted = tmp_path / "gpushift" / "yarn-config-unreadable.json"
    noted.parent.mkdir()
    for broken in ("not json", "[]", '{"programs": "x"}'):
        noted.write_text(broken)
        assert yarn_config_prefetch.noted_unreadable() == []
    for i in range(yarn_config_prefetch.MAX_NOTED + 4):
        yarn_config_prefetch.note_unreadable(f"program {i}")
    yarn_config_prefetch.note_unreadable("program 5")  # again: now the newest
    kept = yarn_config_prefetch.noted_unreadable()
    assert len(kept) == yarn_config_prefetch.MAX_NOTED
    assert kept[-1] == "program 5" and kept.count("program 5") == 1
    assert "program 0" not in kept
    # A folder where the file goes: nothing noted, no error, no half-written file left.
    noted.unlink()
    noted.mkdir()
    yarn_config_prefetch.note_unreadable("program y")
    assert sorted(p.name for p in noted.parent.iterdir()) == [noted.name]
    # A cache folder that cannot be made (a file is in its way): nothing noted, no error.
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    yarn_config_prefetch.note_unreadable("program x")
    assert yarn_config_prefetch.noted_unreadable() == []


@needs_node
def test_the_early_yarn_command_is_only_for_servers_and_can_be_turned_off(
        tmp_path: Path) -> None:
    env = yarn_env(tmp_path)
    assert probe(tmp_path, "python-script", YARN_PROBE, **env) == \
        "started=False used=False"
    assert probe(tmp_path, "jupyter-lab", YARN_PROBE, GPUSHIFT_PREFETCH_YARN_CONFIG="0",
                 **env) == "started=False used=False"


def test_only_the_prefetched_command_gets_its_output(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another command (or folder) runs for real; a command that failed fails as
    `check_output` would, with its output and error."""
    early = yarn_config_prefetch.Prefetch(
        [sys.executable, "-c", "print('early')"], str(tmp_path))
    monkeypatch.setattr(yarn_config_prefetch, "prefetch", early)
    shim = yarn_config_prefetch._Subprocess()
    other = [sys.executable, "-c", "print('other')"]
    assert shim.check_output(other, cwd=str(tmp_path)) == b"other\n"
    assert shim.check_output(early.command, cwd=str(tmp_path.parent)) == b"early\n"
    assert not early.used  # a different folder: that was a run of its own
    assert shim.check_output(early.command, cwd=str(tmp_path)) == b"early\n"
    assert early.used
    assert shim.PIPE is subprocess.PIPE
    failing = yarn_config_prefetch.Prefetch(
        [sys.executable, "-c", "import sys; print('out'); sys.exit('err')"], str(tmp_path))
    monkeypatch.setattr(yarn_config_prefetch, "prefetch", failing)
    with pytest.raises(subprocess.CalledProcessError) as caught:
        shim.check_output(failing.command, cwd=str(tmp_path))
    assert (caught.value.returncode, caught.value.output, caught.value.stderr) == (
        1, b"out\n", b"err\n")


STAND_IN_PROBE = """
import importlib.util, sys
from gpushift_jupyter import format_checkers
deferred = format_checkers.defer()
assert deferred == list(format_checkers.DEFERRED), deferred  # all installed here
webcolors = sys.modules["webcolors"]
assert webcolors.__gpushift_stand_in__
# What other importers ask of a module in sys.modules answers as the real module would.
assert importlib.util.find_spec("webcolors").origin == webcolors.__file__
assert not hasattr(webcolors, "no_such_name")  # (this one read imported the real one)
assert "webcolors" in sys.modules and not hasattr(sys.modules["webcolors"], "__gpushift_stand_in__")
import rfc3987_syntax.syntax_helpers  # a submodule of a package still in its stand-in
assert sys.modules["rfc3987_syntax"].__gpushift_stand_in__
from rfc3987_syntax import is_valid_syntax
assert is_valid_syntax("iri", "http://example.com/")  # the first use: the real module
assert not hasattr(sys.modules["rfc3987_syntax"], "__gpushift_stand_in__")
format_checkers.release()
left = [name for name in format_checkers.DEFERRED
        if getattr(sys.modules.get(name), "__gpushift_stand_in__", False)]
again = format_checkers.defer()  # the real ones imported above stay
assert "webcolors" not in again and "rfc3987_syntax" not in again, again
format_checkers.release()
print("left", left, len(again))
"""


def test_a_stand_in_answers_for_its_module_until_its_first_use(tmp_path: Path) -> None:
    assert probe(tmp_path, "python-script", STAND_IN_PROBE) == "left [] 4"
