import datetime as dt
import json
import os
import stat

import pytest
from sidecar_environ import environ_factory

from gpushift_sidecar import __version__
from gpushift_sidecar.env import SidecarEnv
from gpushift_sidecar.runtime_config import (
    FILE_NAME,
    RuntimeFiles,
    build_runtime_config,
    write_atomically,
)
from gpushift_sidecar.token import TOKEN_FILE, ApiToken


@pytest.fixture
def environ(tmp_path):
    return environ_factory(tmp_path)


NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_cpu_pod_document_keeps_the_seed_keys(environ, tmp_path):
    doc = build_runtime_config(SidecarEnv.from_environ(environ()), migration=None,
                               last_checkpoint=None, updated_at=NOW)
    # The seed's keys, with the seed's types, for older front ends.
    assert doc["usingGPU"] is False
    assert doc["PodName"] == "my-notebook-0" and doc["PodNamespace"] == "kubeflow-user"
    assert doc == {
        "usingGPU": False, "PodName": "my-notebook-0", "PodNamespace": "kubeflow-user",
        "notebook": "my-notebook", "gpu": None, "node": "node-a", "profile": None,
        "migration": None, "lastCheckpoint": None, "sidecarVersion": __version__,
        "updatedAt": "2025-03-01T12:00:00.000000Z", "profiles": ["nvidia-1", "nvidia-2"],
        "idleBounds": {"timeout_seconds": 180, "min_seconds": 60, "max_seconds": 3600,
                       "warning_seconds": 30},
        "checkpoints": {"keep": 5, "min_free_mib": 256, "background_interval_seconds": 60,
                        "background_max_state_mib": 4096},
        "workspace": str(tmp_path / "ws"),
    }


@pytest.mark.parametrize(("gpu", "profile"), [
    (("nvidia.com/gpu", 1), "nvidia-1"),
    (("nvidia.com/gpu", 2), "nvidia-2"),
    (("nvidia.com/gpu", 4), None),  # GPUs the admin has no profile for
    (("amd.com/gpu", 1), None),
])
def test_gpu_pod_document_names_the_matching_profile(environ, gpu, profile):
    doc = build_runtime_config(SidecarEnv.from_environ(environ(gpu=gpu)), migration=None,
                               last_checkpoint=None, updated_at=NOW)
    assert doc["usingGPU"] is True
    assert doc["gpu"] == {"resource": gpu[0], "count": gpu[1]}
    assert doc["profile"] == profile


def test_atomic_write_sets_the_mode_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    write_atomically(target, b"new", mode=0o640)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["f.json"]


def test_files_written_token_first_then_rewritten_on_change(environ):
    env = SidecarEnv.from_environ(environ())
    writes = []
    files = RuntimeFiles(env, ApiToken.load_or_create(env.runtime_dir), on_write=writes.append)
    assert not files.ready and files.problem
    assert files.write_now() and files.ready and files.problem is None
    token_path = env.runtime_dir / TOKEN_FILE
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    on_disk = json.loads((env.runtime_dir / FILE_NAME).read_text())
    assert on_disk == files.document()
    summary = {"id": "m1", "phase": "requested"}
    files.update(migration=summary, last_checkpoint=None)
    assert json.loads((env.runtime_dir / FILE_NAME).read_text())["migration"] == summary
    files.update(migration=summary, last_checkpoint=None)  # unchanged: not rewritten
    assert writes == [True, True]


def test_unwritable_runtime_dir_is_reported_and_retried(environ, tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the runtime dir's parent should be")
    env = SidecarEnv.from_environ(environ(GPUSHIFT_RUNTIME_DIR=str(blocker / "run")))
    writes = []
    files = RuntimeFiles(env, ApiToken.load_or_create(env.runtime_dir), on_write=writes.append)
    assert not files.write_now() and not files.write_now()
    assert not files.ready
    assert files.problem.startswith(f"cannot write {blocker / 'run'}")
    assert "Not a directory" in files.problem or "File exists" in files.problem
    assert caplog.text.count("runtime files not written") == 1  # once per reason
    blocker.unlink()
    assert files.write_now() and files.ready and files.problem is None
    assert (blocker / "run" / FILE_NAME).exists()
    assert writes == [False, False, True]


def test_token_reused_only_from_a_private_file(tmp_path):
    first = ApiToken.load_or_create(tmp_path)
    first.write(tmp_path)
    text = (tmp_path / TOKEN_FILE).read_text().strip()
    assert len(text) == 43
    assert first.matches(text) and not first.matches(text[:-1] + "x")
    assert not first.matches("") and not first.matches("é" * 43)
    assert ApiToken.load_or_create(tmp_path).matches(text)  # a restarted sidecar
    os.chmod(tmp_path / TOKEN_FILE, 0o644)  # someone else could have read it
    assert not ApiToken.load_or_create(tmp_path).matches(text)
    assert "hidden" in repr(first) and text not in repr(first)
