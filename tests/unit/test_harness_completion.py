"""The local pod runner's pieces for pods that run to completion (TEST HARNESS, pure):
kwok's pod-complete stage leaving the runner's pods alone, and the status the runner
reports from exit codes. They run for real in tests/cluster/test_chart_hooks_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from gpushift_testing.binaries import binary_paths
from gpushift_testing.kwok_stages import RUN_LOCALLY_LABEL, harness_stages
from gpushift_testing.pod_completion import completed_status

POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
       "spec": {"restartPolicy": "Never",
                "containers": [{"name": "a", "image": "img-a"}, {"name": "b", "image": "img-b"}]}}


def stages_file() -> Path:
    path = binary_paths()["kwok-stages"]
    if not path.is_file():
        pytest.fail(f"{path} missing: run hack/build-controlplane.sh kwok", pytrace=False)
    return path


def test_pod_complete_leaves_out_the_runners_pods_and_nothing_else_changes(tmp_path):
    defaults = stages_file()
    out = harness_stages(defaults, tmp_path / "stages.yaml")
    before = [d for d in yaml.safe_load_all(defaults.read_text()) if d]
    after = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert [d["metadata"]["name"] for d in after] == [d["metadata"]["name"] for d in before]
    for old, new in zip(before, after, strict=True):
        if new["metadata"]["name"] != "pod-complete":
            assert new == old
            continue
        added = new["spec"]["selector"]["matchExpressions"][len(
            old["spec"]["selector"]["matchExpressions"]):]
        assert added == [{"key": f'.metadata.labels["{RUN_LOCALLY_LABEL}"]',
                          "operator": "DoesNotExist"}]
        assert new["spec"]["next"] == old["spec"]["next"]


def test_stages_without_pod_complete_are_refused(tmp_path):
    source = tmp_path / "in.yaml"
    source.write_text("kind: Stage\nmetadata: {name: pod-ready}\n")
    with pytest.raises(ValueError, match="no Stage 'pod-complete'"):
        harness_stages(source, tmp_path / "out.yaml")


def test_every_exit_zero_is_succeeded():
    status = completed_status(POD, {"a": 0, "b": 0}, {"a": 0.0, "b": 0.0},
                              {"a": 1.0, "b": 2.0})
    assert status["phase"] == "Succeeded"
    assert [s["state"]["terminated"]["reason"] for s in status["containerStatuses"]] == [
        "Completed", "Completed"]
    assert status["containerStatuses"][1]["state"]["terminated"]["finishedAt"] == \
        "1970-01-01T00:00:02Z"


def test_one_non_zero_exit_is_failed_with_its_code():
    status = completed_status(POD, {"a": 0, "b": 3}, {}, {"a": 1.0, "b": 1.0})
    assert status["phase"] == "Failed"
    by_name = {s["name"]: s["state"]["terminated"] for s in status["containerStatuses"]}
    assert by_name["b"]["exitCode"] == 3 and by_name["b"]["reason"] == "Error"
    assert by_name["a"]["exitCode"] == 0
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "False", "ContainersReady": "False"}
