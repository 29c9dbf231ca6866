"""How much CPU the sidecar spends from its process's start to serving, against a bare
aiohttp server's start in the same run (the floor of any aiohttp + uvloop server).

Every move starts a new pod's sidecar beside JupyterLab's start on the same cores, and
the chart limits the sidecar to 250m of CPU: each 0.1 s of CPU here is about 0.4 s of a
throttled start. Runs alternate between the real `gpushift-sidecar serve` (the
webhook's env, a kubeconfig whose API server does not answer: what it does before its
first API call is what is timed) and the baseline; each is timed to the first 200 from
`/healthz`, and its CPU (user + system, from /proc) read at that moment. Prints each
run, the medians and their ratios, and how many modules the sidecar's serving path
loads.

    .venv/bin/python bench/sidecar_start.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "testing"))
from gpushift_testing.common import free_port  # noqa: E402
from gpushift_testing.pki import write_kubeconfig  # noqa: E402
from gpushift_testing.processes import cpu_seconds  # noqa: E402
from gpushift_testing.sidecar_process import SIDECAR, PodFacts, sidecar_env  # noqa: E402

from gpushift_webhook.config import WebhookConfig  # noqa: E402

BASELINE = """
import sys, uvloop
from aiohttp import web
app = web.Application()
app.router.add_get("/healthz", lambda _: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
            loop=uvloop.new_event_loop())
"""
# What `serve` imports to serve (serve.py imports them lazily, after its first files).
SERVING_MODULES = """
import sys
import gpushift_sidecar.serve, gpushift_sidecar.startup_files, uvloop
from gpushift_core.kube import KubeApi
from aiohttp import web
from gpushift_sidecar.api import make_app
from gpushift_sidecar.idle_loop import IdleLoopConfig
from gpushift_sidecar.runner import RunnerConfig, StepRunner
from gpushift_sidecar.service import Sidecar
print(len(sys.modules), "kubernetes" in sys.modules)
"""
def time_to_serve(argv: list[str], env: dict[str, str], port: int,
                  log: Path) -> tuple[float, float]:
    """(seconds to the first 200 from /healthz, CPU seconds used by then)."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = started + 60
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{argv[0]} exited {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                            timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started, cpu_seconds(process.pid)
            except OSError:
                time.sleep(0.005)
        raise SystemExit(f"{argv[0]} did not serve in 60 s:\n{log.read_text()}")
    finally:
        process.terminate()
        process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each")
    args = parser.parse_args()
    settings = WebhookConfig().sidecar_settings_json
    results: dict[str, list[tuple[float, float]]] = {"sidecar": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="gpushift-sidecar-start-") as folder:
        work = Path(folder)
        (work / "ca.crt").write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())
        kubeconfig = write_kubeconfig(work / "kubeconfig", "https://127.0.0.1:1",
                                      work / "ca.crt", "a-token")
        for run in range(args.runs):
            for name in ("sidecar", "baseline"):
                port = free_port()
                runtime, workspace = work / f"runtime-{name}-{run}", work / "workspace"
                runtime.mkdir()
                workspace.mkdir(exist_ok=True)
                if name == "sidecar":
                    argv = [str(SIDECAR), "serve", "--kubeconfig", str(kubeconfig)]
                    env = sidecar_env(PodFacts("nb-0", f"uid-{run}", "node-a", None), "ns",
                                      runtime, workspace, port, settings)
                else:
                    argv, env = [sys.executable, "-c", BASELINE, str(port)], dict(os.environ)
                wall, cpu = time_to_serve(argv, env, port, work / f"{name}-{run}.log")
                results[name].append((wall, cpu))
                print(f"run {run + 1} {name:9} serving after {wall:.3f} s, CPU {cpu:.2f} s",
                      flush=True)
    loaded = subprocess.run([sys.executable, "-c", SERVING_MODULES], capture_output=True,
                            text=True, check=True, timeout=60).stdout.split()
    print(f"\nthe sidecar's serving path loads {loaded[0]} modules "
          f"(kubernetes among them: {loaded[1]})")
    medians = {name: (statistics.median(wall for wall, _ in runs),
                      statistics.median(cpu for _, cpu in runs))
               for name, runs in results.items()}
    base_wall, base_cpu = medians["baseline"]
    for name, (wall, cpu) in medians.items():
        print(f"{name:9} p50: serving after {wall:.3f} s ({wall / base_wall:.2f}x), "
              f"CPU {cpu:.2f} s ({cpu / base_cpu:.2f}x)")
    beyond = medians["sidecar"][1] - base_cpu
    print(f"the sidecar's CPU beyond a bare aiohttp server: {beyond:.2f} s "
          f"(about {beyond / 0.25:.1f} s under the chart's 250m limit)")


if __name__ == "__main__":
    main()
