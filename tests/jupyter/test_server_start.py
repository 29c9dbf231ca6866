"""The server start hook (`gpushift_jupyter_server_start.pth` → `server_start`): a
Jupyter server process starts without building jsonschema's IRI grammar, IRI checks
still work, and no other process is touched. Run through the .pth file the package
installed into this environment, in real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gpushift_jupyter import server_start

PROBE = """
import sys
import jupyter_server.serverapp  # what a server imports first: jsonschema with it
built = "rfc3987_syntax.syntax_helpers" in sys.modules
stand_in = getattr(sys.modules.get("rfc3987_syntax"), "__gpushift_stand_in__", False)
import jsonschema
checker = jsonschema.FormatChecker()
assert checker.conforms("http://example.com/\\u00fc", "iri")
assert not checker.conforms("::no iri", "iri")
import rfc3987_syntax
assert not getattr(rfc3987_syntax, "__gpushift_stand_in__", False), "the stand-in stayed"
print(f"built={built} stand_in={stand_in}")
"""


def probe(tmp_path: Path, program: str, **env: str) -> str:
    """Run PROBE as a program named `program`, as `jupyter lab` runs `jupyter-lab`."""
    script = tmp_path / program
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_package_installs_the_start_hook() -> None:
    installed = Path(sysconfig.get_paths()["purelib"]) / "gpushift_jupyter_server_start.pth"
    source = Path(__file__).parents[2] / "server_ext" / "gpushift_jupyter_server_start.pth"
    assert installed.read_text() == source.read_text()


@pytest.mark.parametrize("program", sorted(server_start.SERVER_COMMANDS))
def test_a_jupyter_server_starts_without_building_the_iri_grammar(
        tmp_path: Path, program: str) -> None:
    assert probe(tmp_path, program) == "built=False stand_in=True"


@pytest.mark.parametrize("program", ["jupyter", "jupyter-kernel", "python-script",
                                     "ipykernel_launcher.py"])
def test_other_programs_are_left_alone(tmp_path: Path, program: str) -> None:
    assert probe(tmp_path, program) == "built=True stand_in=False"


def test_the_hook_can_be_turned_off(tmp_path: Path) -> None:
    assert probe(tmp_path, "jupyter-lab", GPUSHIFT_DEFER_IRI_GRAMMAR="0") == \
        "built=True stand_in=False"


def test_run_decides_by_the_program_name_and_never_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert not server_start.is_jupyter_server([])
    assert not server_start.is_jupyter_server(["-c"])
    assert server_start.is_jupyter_server(["/opt/conda/bin/jupyter-lab", "--ip=0.0.0.0"])

    def broken() -> bool:
        raise ImportError("a broken environment")

    monkeypatch.setattr(server_start.iri_grammar, "defer", broken)
    assert server_start.run(["jupyter-lab"]) is False
