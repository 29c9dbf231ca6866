"""A real Prometheus server on a backfilled TSDB, for `gpushift-report`'s tests.

The series are written as OpenMetrics text, turned into TSDB blocks by
`promtool tsdb create-blocks-from openmetrics`, and served by Prometheus (both built by
hack/build-controlplane.sh from Prometheus's Go module) on 127.0.0.1 and a free port,
with no scrape jobs: what the queries see is exactly what the test wrote.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from gpushift_testing.binaries import BUILD_SCRIPT, binary_paths
from gpushift_testing.common import LOCALHOST, ControlPlaneError, free_port

__all__ = ["CounterSeries", "backfilled_prometheus", "openmetrics"]

CounterSeries = tuple[str, Mapping[str, str], Sequence[tuple[float, float]]]
"""(metric name with _total, labels, [(epoch seconds, value), ...] in time order)."""


def openmetrics(series: Sequence[CounterSeries]) -> str:
    """The series as OpenMetrics text: one family per metric, each series' samples
    together and in time order (what promtool's backfill needs)."""
    lines: list[str] = []
    families: dict[str, list[CounterSeries]] = {}
    for s in series:
        families.setdefault(s[0], []).append(s)
    for name, members in families.items():
        lines.append(f"# TYPE {name.removesuffix('_total')} counter")
        for _, labels, samples in members:
            inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines += [f"{name}{{{inner}}} {value!r} {stamp:.3f}" for stamp, value in samples]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _tool(name: str) -> Path:
    path = binary_paths()[name]
    if not path.is_file():
        raise ControlPlaneError(f"{name} not found at {path}: build it with "
                                f"`{BUILD_SCRIPT} {name}`")
    return path


@contextmanager
def backfilled_prometheus(series: Sequence[CounterSeries], workdir: Path,
                          timeout: float = 60.0) -> Iterator[str]:
    """Prometheus serving `series`; yields its base URL, stops it on exit."""
    data = workdir / "data"
    data.mkdir(parents=True)
    source = workdir / "series.om"
    source.write_text(openmetrics(series))
    filled = subprocess.run([str(_tool("promtool")), "tsdb", "create-blocks-from",
                             "openmetrics", str(source), str(data)],
                            capture_output=True, text=True, timeout=300, check=False)
    if filled.returncode != 0:
        raise ControlPlaneError(f"promtool backfill failed: {filled.stderr[-2000:]}")
    config = workdir / "prometheus.yml"
    config.write_text("global: {}\n")  # no scrape jobs: only the backfilled series
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [str(_tool("prometheus")), f"--config.file={config}",
         f"--storage.tsdb.path={data}", f"--web.listen-address={LOCALHOST}:{port}",
         # Retention counts back from the newest block, not from now; keep every block.
         "--storage.tsdb.retention.time=100y"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{LOCALHOST}:{port}"
    try:
        _wait_ready(url, proc, timeout, workdir / "prometheus.log")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ControlPlaneError(f"prometheus exited ({proc.returncode}): "
                                    f"{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ControlPlaneError(f"prometheus not ready in {timeout}s: {log.read_text()[-2000:]}")
