"""The bench's CPU sampler (`gpushift_testing.cpu_use`): real processes, real /proc."""

from __future__ import annotations

import subprocess
import sys
import time

from gpushift_testing.cpu_use import OTHER, OWN, CpuSampler, part_of

BUSY = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass"
MARK = "cpu-use-test-busy-child"
"""On the busy child's command line: its part, apart from whatever else runs here."""


def test_each_process_belongs_to_the_part_its_command_line_names() -> None:
    assert part_of("/venv/bin/python3 /venv/bin/jupyter-lab --no-browser", 10, 1) == \
        "JupyterLab"
    assert part_of("python3 -m gpushift_jupyter.warm_kernel_main 300.0", 10, 1) == "kernels"
    assert part_of("python -m ipykernel_launcher -f k.json", 10, 1) == "kernels"
    assert part_of("/venv/bin/python3 /venv/bin/gpushift-sidecar serve", 10, 1) == "sidecars"
    assert part_of("/bin/kube-apiserver-v1.36.3 --etcd-servers=x", 10, 1) == "control plane"
    assert part_of("/venv/bin/python bench/e2e_migration.py", 10, 10) == OWN
    assert part_of("/usr/bin/node yarn.js config --json", 10, 1) == OTHER


def test_the_cpu_a_process_used_in_a_window_counts_for_its_part() -> None:
    sampler = CpuSampler(period=0.05, parts=(("busy", (MARK,)),)).start()
    try:
        time.sleep(0.2)
        since = time.time()
        subprocess.run([sys.executable, "-c", BUSY.format(seconds=0.5), MARK], check=True)
        until = time.time()
        time.sleep(0.2)
    finally:
        sampler.stop()
    used = sampler.used(since, until)
    # The busy child ended in the window: counted up to its last sample (a period short
    # at most); this process only waited.
    assert 0.3 <= used.get("busy", 0.0) <= 0.7, used
    assert used["total"] == sum(v for k, v in used.items() if k != "total")
    assert used.get(OWN, 0.0) < 0.3, used
    # Before anything ran there is nothing to count.
    assert sampler.used(since - 100, since - 99) == {"total": 0.0}
