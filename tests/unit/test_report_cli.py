"""`gpushift-report`'s console script on input it cannot use: one line on stderr, a
non-zero exit status, no traceback (the Prometheus and cluster paths have their own
tests: test_report_prometheus.py, tests/cluster/test_report_cluster.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("gpushift-report")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize(("config_text", "message"), [
    ("idle: [", "not valid YAML"),
    ("idle: {timeout_secs: 5}\n", "unknown key(s) timeout_secs"),
])
def test_a_bad_config_file_is_one_line(tmp_path: Path, config_text: str,
                                       message: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    proc = run("--from-cluster", "--config", str(config))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_a_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    proc = run("--from-cluster", "--kubeconfig", str(tmp_path / "nowhere"))
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith("gpushift-report: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_a_not_http_url_is_one_line() -> None:
    proc = run("--prometheus", "file:///etc/passwd")
    assert proc.returncode == 2
    assert proc.stderr == "gpushift-report: --prometheus 'file:///etc/passwd': not an " \
                          "http(s) URL\n"


def test_one_source_is_required() -> None:
    assert run().returncode == 2
    both = run("--prometheus", "http://127.0.0.1:9", "--from-cluster")
    assert both.returncode == 2 and "not allowed with" in both.stderr
