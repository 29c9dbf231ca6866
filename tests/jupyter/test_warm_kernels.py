"""Warm kernels for an arriving move (`warm_kernels`, `warm_provisioner`): a real Jupyter
server started on a pod a move arrives at warms a kernel process by its start hook, and
its first kernel starts in it: the same kernel as a cold one (folder, sys.path,
environment), interrupted, restarted and shut down by jupyter_client as usual. A kernel
the warm process would not be exactly (another environment) starts cold."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from gpushift_testing.kernels import isolated_kernelspec
from gpushift_testing.processes import proc_stat
from jupyter_client import AsyncKernelClient

from gpushift_jupyter import warm_kernels

TOKEN = "warm-kernel-test-token"
PROBE = ("import json, os, sys\n"
         "from ipykernel.kernelapp import IPKernelApp\n"
         # The nice value of each of the kernel's threads (Linux: per thread).
         "nice = sorted({os.getpriority(os.PRIO_PROCESS, int(t))"
         " for t in os.listdir('/proc/self/task')})\n"
         "print(json.dumps({'pid': os.getpid(), 'cwd': os.getcwd(), 'path': sys.path,"
         " 'env': dict(os.environ), 'preloaded': 'pandas' in sys.modules, 'nice': nice,"
         " 'parent': IPKernelApp.instance().parent_handle}))")
# The `migration` of the sidecar's runtime-config.json (`Migration.summary`): a move of
# two notebooks arriving.
ARRIVING = {"id": "m1", "phase": "restoring", "target": "gpu", "reason": "manual",
            "profile": None, "error": None, "active": True,
            "updatedAt": "2026-12-06T06:00:00.000000Z", "notebooks": 2}


# --------------------------------------------------------------------------- decisions

def test_a_move_arriving_at_this_pod_warms_one_kernel_per_notebook() -> None:
    assert warm_kernels.arriving_notebooks({"migration": ARRIVING}) == 2
    assert warm_kernels.arriving_notebooks(
        {"migration": {**ARRIVING, "phase": "recreating", "notebooks": 1}}) == 1
    assert warm_kernels.arriving_notebooks(
        {"migration": {**ARRIVING, "notebooks": 9}}) == warm_kernels.MAX_WARM
    older_sidecar = {k: v for k, v in ARRIVING.items() if k != "notebooks"}
    assert warm_kernels.arriving_notebooks({"migration": older_sidecar}) == 1
    for phase in ("requested", "checkpointing", "patching", "done", "failed", "rolled_back"):
        assert warm_kernels.arriving_notebooks({"migration": {**ARRIVING, "phase": phase}}) == 0
    assert warm_kernels.arriving_notebooks({"migration": None}) == 0
    for broken in (0, -1, "2", True, None):
        assert warm_kernels.arriving_notebooks(
            {"migration": {**ARRIVING, "notebooks": broken}}) == 0
    assert warm_kernels.arriving_notebooks(
        {"migration": ARRIVING, "optimizerOff": "off for this server type"}) == 0


def test_only_the_very_kernel_a_warm_process_would_be_starts_in_it() -> None:
    exe = "/opt/conda/bin/python3.11"
    env = {"PATH": "/opt/conda/bin", "HOME": "/home/jovyan"}
    cmd = [exe, "-m", "ipykernel_launcher", "-f", "/run/kernel-1.json"]
    per_kernel = {**env, "JPY_PARENT_PID": "7", "JPY_SESSION_NAME": "a.ipynb"}
    assert warm_kernels.cold_reason(cmd, per_kernel, {"cwd": "/home/jovyan"}, env, exe) is None
    assert warm_kernels.cold_reason(cmd, None, {}, env, exe) is None
    assert "differs in CUDA_VISIBLE_DEVICES" in str(warm_kernels.cold_reason(
        cmd, {**env, "CUDA_VISIBLE_DEVICES": "0"}, {}, env, exe))
    assert "differs in HOME" in str(warm_kernels.cold_reason(
        cmd, {"PATH": env["PATH"]}, {}, env, exe))
    assert "ipykernel_launcher" in str(warm_kernels.cold_reason(
        ["/usr/bin/python3", *cmd[1:]], env, {}, env, exe))
    assert "ipykernel_launcher" in str(warm_kernels.cold_reason(
        ["R", "--slave", "-e", "IRkernel::main()"], env, {}, env, exe))
    assert "stdout" in str(warm_kernels.cold_reason(cmd, env, {"stdout": 1}, env, exe))
    assert "independent" in str(warm_kernels.cold_reason(
        cmd, env, {"independent": True}, env, exe))


def test_an_unused_warm_process_ends_by_itself_or_with_its_input() -> None:
    assert warm_kernels.start(1, seconds=1) == 1
    [timed] = warm_kernels._pool
    assert timed.process.wait(timeout=60) == 0  # nothing within its second: it ended
    assert warm_kernels.claim([sys.executable, "-m", "ipykernel_launcher"], {}) == (
        None, "no warm kernel waiting")
    assert warm_kernels.start(1) == 1
    [waiting] = warm_kernels._pool
    warm_kernels.discard_all()  # its input closes
    assert waiting.process.wait(timeout=60) == 0
    assert not warm_kernels._pool


def test_the_start_hook_warms_only_for_an_arriving_move(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    base = {"GPUSHIFT_RUNTIME_DIR": str(runtime), "PATH": os.environ.get("PATH", "")}
    assert warm_kernels.start_for_arriving_move(base) == 0  # no runtime-config.json
    (runtime / "runtime-config.json").write_text(json.dumps({"migration": None}))
    assert warm_kernels.start_for_arriving_move(base) == 0
    (runtime / "runtime-config.json").write_text("{broken")
    assert warm_kernels.start_for_arriving_move(base) == 0
    (runtime / "runtime-config.json").write_text(json.dumps({"migration": ARRIVING}))
    assert warm_kernels.start_for_arriving_move({**base, "GPUSHIFT_WARM_KERNELS": "0"}) == 0
    assert warm_kernels.start_for_arriving_move({"PATH": base["PATH"]}) == 0  # not injected
    try:
        assert warm_kernels.start_for_arriving_move(base) == 2
    finally:
        warm_kernels.discard_all()


# ------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "work"
        self.root.mkdir()
        runtime = tmp_path / "gpushift-runtime"
        runtime.mkdir()
        (runtime / "runtime-config.json").write_text(json.dumps(
            {"usingGPU": False, "PodName": "nb-0", "PodNamespace": "ns", "migration": ARRIVING}))
        kernelspec = isolated_kernelspec(tmp_path, "other-env", "with an env of its own")
        spec_file = tmp_path / "jupyter" / "kernels" / "other-env" / "kernel.json"
        spec = json.loads(spec_file.read_text())
        spec_file.write_text(json.dumps({**spec, "env": {"GPUSHIFT_TEST_OWN": "1"}}))
        self.runtime_dir = Path(kernelspec["JUPYTER_RUNTIME_DIR"])
        self.port = free_port()
        self.log_path = tmp_path / "server.log"
        env = dict(os.environ, **kernelspec, GPUSHIFT_RUNTIME_DIR=str(runtime),
                   HOME=str(tmp_path / "home"))
        # The program's name starts the hook, as `jupyter server` runs `jupyter-server`.
        program = Path(sys.executable).parent / "jupyter-server"
        self.process = subprocess.Popen(
            [str(program), f"--port={self.port}", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
             "--allow-root",
             "--ServerApp.open_browser=False", "--GpushiftExtension.restore_interval=0",
             "--GpushiftExtension.activity_interval=0",
             "--GpushiftExtension.idle_watch_interval=0",
             f"--GpushiftExtension.sidecar_url=http://127.0.0.1:{free_port()}"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log_path.open("wb"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        # urllib, not tornado's blocking client: that one makes an event loop of its own
        # in this process, which later tests' in-process servers stumbled over.
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/{path}", method=method,
            headers={"Authorization": f"token {TOKEN}"},
            data=None if method in ("GET", "DELETE") else json.dumps(body or {}).encode())
        with urllib.request.urlopen(request, timeout=120) as answer:
            data = answer.read()
        return json.loads(data) if data else None

    def wait_up(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                self.api("GET", "status")
                return
            except OSError:  # refused until it listens (urllib's errors are OSErrors)
                time.sleep(0.2)
        raise AssertionError(f"the server did not answer: {self.log()}")

    def warm_pids(self) -> list[int]:
        """The server's children running the warm program."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                ppid = int(proc_stat(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.process.pid and warm_kernels.MAIN_MODULE.encode() in cmdline:
                pids.append(int(entry.name))
        return sorted(pids)

    async def client(self, kernel_id: str) -> AsyncKernelClient:
        # Async, as the other tests' clients: jupyter_client's blocking client leaves an
        # event loop set in this process, on which later in-process servers hung.
        client = AsyncKernelClient()
        client.load_connection_file(str(self.runtime_dir / f"kernel-{kernel_id}.json"))
        client.start_channels()
        await self.ready(client)
        return client

    async def ready(self, client: AsyncKernelClient) -> None:
        """`client.wait_for_ready` without its heartbeat check: a client not made by a
        KernelManager calls the kernel dead when one heartbeat takes over a second, which
        a busy 2-core CI machine saw ("Kernel died before replying to kernel_info").
        Ready is the reply to this very kernel_info request on shell and then its status
        on IOPub: only then is IOPub subscribed to the kernel now running. Any message
        will not do: after a restart, the old kernel's (the interrupted cell's error and
        status) still wait in the channel, and a cell sent before IOPub reconnects loses
        its output. The loop ends with the server process."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            request = client.kernel_info()
            if await _answered(client.get_shell_msg, request, 2) and \
                    await _answered(client.get_iopub_msg, request, 0.5):
                return
        raise AssertionError(f"the kernel did not answer kernel_info: {self.log()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def _answered(get: Any, request: str, timeout: float) -> bool:
    """Whether a message answering `request` comes within `timeout` seconds of each
    other message (older ones are passed over)."""
    while True:
        try:
            message = await get(timeout=timeout)
        except Empty:
            return False
        if message.get("parent_header", {}).get("msg_id") == request:
            return True


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    try:
        running.wait_up()
        yield running
    finally:
        running.stop()


async def probe(client: AsyncKernelClient) -> dict[str, Any]:
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = await client.execute_interactive(PROBE, timeout=60, output_hook=hook)
    assert reply["content"]["status"] == "ok", reply["content"]
    return dict(json.loads("".join(out)))


async def test_the_first_kernel_of_an_arriving_move_starts_in_the_warm_process(
        server: Server) -> None:
    warm = server.warm_pids()
    assert len(warm) == 2, server.log()  # two notebooks in the move

    # Another environment: a kernel of its own, the warm processes stay.
    other = server.api("POST", "kernels", {"name": "other-env"})
    assert "differs in GPUSHIFT_TEST_OWN" in server.log()
    other_client = await server.client(other["id"])
    assert (await probe(other_client))["pid"] not in warm
    other_client.stop_channels()
    assert server.warm_pids() == warm

    kernel = server.api("POST", "kernels", {"name": "python3"})
    client = await server.client(kernel["id"])
    seen = await probe(client)
    assert seen["pid"] in warm, server.log()
    assert re.search(rf"kernel started in a warm process \(pid {seen['pid']}\)", server.log())
    assert seen["preloaded"]  # what kishu imports came with it
    # The other one still waits (the kernel keeps the warm program's command line).
    assert len(set(server.warm_pids()) - {seen["pid"]}) == 1

    # Interrupted as any kernel: the signal reaches it.
    client.execute("import time; time.sleep(60)")
    await asyncio.sleep(1.0)
    server.api("POST", f"kernels/{kernel['id']}/interrupt")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = await client.get_shell_msg(timeout=30)
        if msg["msg_type"] == "execute_reply":
            break
    assert msg["content"]["status"] == "error"
    assert msg["content"]["ename"] == "KeyboardInterrupt"

    # Restarted: a process of its own (the other warm one is for another notebook's
    # restore; it is taken by the restart all the same: the same kernel either way).
    server.api("POST", f"kernels/{kernel['id']}/restart")
    await server.ready(client)
    again = await probe(client)
    assert again["pid"] != seen["pid"]
    cold = server.api("POST", "kernels", {"name": "python3"})
    cold_client = await server.client(cold["id"])
    cold_seen = await probe(cold_client)
    assert cold_seen["pid"] not in warm
    # The warm kernel is the kernel a cold start makes: same folder, path, environment.
    assert (seen["cwd"], seen["path"]) == (cold_seen["cwd"], cold_seen["path"])
    assert seen["env"] == cold_seen["env"]
    # It ends with the server as a cold kernel does (ipykernel's parent poller).
    assert seen["parent"] == cold_seen["parent"] == server.process.pid
    assert not cold_seen["preloaded"]
    # Its imports ran at a lower priority, in a thread of their own: none of the
    # kernel's threads kept it (numpy's OpenBLAS threads were started before).
    assert seen["nice"] == cold_seen["nice"] == [os.getpriority(os.PRIO_PROCESS, 0)], (
        seen["nice"], cold_seen["nice"])
    client.stop_channels()
    cold_client.stop_channels()

    # Shut down as any kernel: its process ends.
    server.api("DELETE", f"kernels/{kernel['id']}")
    deadline = time.monotonic() + 30
    while Path(f"/proc/{again['pid']}").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not Path(f"/proc/{again['pid']}/cmdline").exists() or not Path(
        f"/proc/{again['pid']}/cmdline").read_bytes()
