"""The notebook kernels the extension works with: their notebook paths, classifier
state, kishu attachment and GPU-cell activity, by kernel id.

Kernels belong to jupyter_server's kernel manager; this only keeps what gpushift
knows about them and forgets it when the kernel is gone. Notebook paths come from the
browser relative to the server's root (as the contents API has them) and are checked
against the kernel's session: a kernel is only ever attached to its own notebook.
"""

from __future__ import annotations

import asyncio
import queue
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpushift_jupyter.classifier import KernelClassifier
from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import ClientKernel

_MAX_PATH_CHARS = 4096
# A tab reports its GPU cell running just before the kernel gets it; until the kernel
# says "busy", the report stands for this long.
GPU_REPORT_GRACE_SECONDS = 10.0
# jupyter_server's events for kernel starts, restarts, interrupts and shutdowns.
KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"


async def _reply_on(channel: Any, msg_type: str | None, timeout: float) -> bool:
    """Whether a message (of `msg_type`, when given) comes on the channel within
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await channel.get_msg(timeout=left)
        except queue.Empty:
            return False
        if msg_type is None or msg.get("msg_type") == msg_type:
            return True
    return False


class KernelInUse(Exception):
    """Another kishu operation (a checkpoint, a restore) holds the kernel."""


@dataclass
class KernelFacts:
    classifier: KernelClassifier = field(
        default_factory=lambda: KernelClassifier(strict=False))
    """The live path: only statements that mention something GPU-related are parsed
    (a syntax error elsewhere in the cell goes unseen; running it will show it)."""
    notebook: Path | None = None
    """The notebook kishu is attached to in this kernel (None: not attached)."""
    gpu_cell_running: bool = False
    gpu_cell_reported_at: float = 0.0
    """When a tab last said its GPU cell was running."""
    gpu_cell_finished_at: float | None = None
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while kishu works in this kernel: two checkpoints (or a checkpoint and a
    restore) at once would interleave their commits."""


class KernelRegistry:
    def __init__(self, kernel_manager: Any, session_manager: Any, root_dir: Path) -> None:
        self.kernel_manager = kernel_manager
        self.session_manager = session_manager
        self.root_dir = root_dir.resolve()
        self._facts: dict[str, KernelFacts] = {}

    def facts(self, kernel_id: str) -> KernelFacts:
        """Known facts of a running kernel (404 for a kernel that is not running)."""
        self._forget_gone()
        if kernel_id not in self.kernel_manager:
            raise ApiError(404, "no_such_kernel", f"no kernel {kernel_id!r} is running")
        return self._facts.setdefault(kernel_id, KernelFacts())

    def classifier(self, kernel_id: str | None) -> KernelClassifier:
        """The kernel's stateful classifier; a throwaway one without a kernel."""
        if kernel_id is None:
            return KernelClassifier(strict=False)
        return self.facts(kernel_id).classifier

    async def on_kernel_action(self, logger: Any, schema_id: str,
                               data: Mapping[str, Any]) -> None:
        """jupyter_events listener: a kernel restarted under the same id has lost every
        variable, so its classifier forgets what earlier cells bound (`cp` no longer
        means CuPy until a cell imports it again). Never raises."""
        if data.get("action") != "restart" or data.get("status") != "success":
            return
        facts = self._facts.get(str(data.get("kernel_id")))
        if facts is not None:
            facts.classifier = KernelClassifier(strict=False)

    def attached(self) -> list[str]:
        """Running kernels kishu is attached to."""
        self._forget_gone()
        return [k for k, facts in self._facts.items() if facts.notebook is not None]

    def gpu_activity(self, kernel_id: str, running: bool) -> KernelFacts:
        facts = self.facts(kernel_id)
        if facts.gpu_cell_running and not running:
            facts.gpu_cell_finished_at = time.time()
        facts.gpu_cell_running = running
        if running:
            facts.gpu_cell_reported_at = time.time()
        return facts

    def activity_view(self, now: float) -> tuple[list[str], list[str]]:
        """(busy, GPU cell running): the kernels executing a cell now, by their own
        execution state (jupyter_server follows every kernel's status messages, with or
        without a browser), and those of them running a GPU cell. kishu's own work in a
        kernel is not the user's: a kernel gpushift is checkpointing does not count as
        busy. A GPU cell a tab reported but the kernel is no longer running (the tab
        closed before it could say the cell ended) ends here, after a short grace for
        the kernel to start it."""
        self._forget_gone()
        busy: list[str] = []
        for kernel_id in list(self.kernel_manager.list_kernel_ids()):
            kernel = self.kernel_manager.get_kernel(kernel_id)
            facts = self._facts.get(kernel_id)
            if getattr(kernel, "execution_state", None) == "busy" and not (
                    facts is not None and facts.busy.locked()):
                busy.append(kernel_id)
        gpu: list[str] = []
        for kernel_id, facts in self._facts.items():
            if not facts.gpu_cell_running:
                continue
            if kernel_id in busy or now - facts.gpu_cell_reported_at < GPU_REPORT_GRACE_SECONDS:
                gpu.append(kernel_id)
            else:
                facts.gpu_cell_running = False
                facts.gpu_cell_finished_at = now
        return busy, gpu

    async def notebook_path(self, kernel_id: str, path: str | None) -> Path:
        """The absolute path of the kernel's notebook: its session's, which `path` (from
        the browser, relative to the server root) must match when both are known."""
        session_path = await self._session_path(kernel_id)
        given = None if path is None else self.resolve(path)
        if session_path is not None and given is not None and session_path != given:
            raise ApiError(400, "wrong_notebook",
                           f"kernel {kernel_id} belongs to {self.relative(session_path)}, "
                           f"not {path}")
        found = session_path or given
        if found is None:
            raise ApiError(400, "invalid_field",
                           f"path: kernel {kernel_id} has no notebook session; name the "
                           "notebook (path relative to the server root)")
        return found

    def resolve(self, path: str) -> Path:
        """A notebook path relative to the server root → absolute, never outside it."""
        if not path or len(path) > _MAX_PATH_CHARS or "\x00" in path:
            raise ApiError(400, "invalid_field", "path: a notebook path relative to the "
                           "server root")
        absolute = (self.root_dir / path.lstrip("/")).resolve()
        if absolute != self.root_dir and self.root_dir not in absolute.parents:
            raise ApiError(400, "invalid_field", f"path: {path!r} is outside the server root")
        if absolute.suffix != ".ipynb":
            raise ApiError(400, "invalid_field", f"path: {path!r} is not a notebook (.ipynb)")
        return absolute

    def relative(self, absolute: Path) -> str:
        try:
            return absolute.relative_to(self.root_dir).as_posix()
        except ValueError:
            return str(absolute)

    @asynccontextmanager
    async def kernel(self, kernel_id: str, *,
                     wait: float | None = None) -> AsyncIterator[ClientKernel]:
        """A client of a running kernel for one kishu operation, which has the
        kernel to itself (others wait; for at most `wait` seconds when given, then
        KernelInUse)."""
        facts = self.facts(kernel_id)
        try:
            await asyncio.wait_for(facts.busy.acquire(), wait)
        except TimeoutError:
            raise KernelInUse(f"kernel {kernel_id} is busy with another kishu operation"
                              ) from None
        try:
            manager = self.kernel_manager.get_kernel(kernel_id)
            client = manager.client(session=own_session(manager.session))
            client.start_channels()
            try:
                yield ClientKernel(client)
            finally:
                client.stop_channels()
        finally:
            facts.busy.release()

    async def wait_ready(self, kernel_id: str, timeout: float) -> None:
        """Until the kernel answers (a kernel just started takes a moment): its reply to
        `kernel_info` on the shell channel, and a message on IOPub (so the channel is
        connected). jupyter_client's `wait_for_ready` then also waits for 0.2 s of
        silence on IOPub, a flush for later reads of the same client; this client is
        closed here, so that 0.2 s came on top of every new pod's restore for nothing."""
        async with self.kernel(kernel_id) as kernel:
            client = kernel.client
            deadline = time.monotonic() + timeout
            while True:
                client.kernel_info()
                if await _reply_on(client.shell_channel, "kernel_info_reply", 1.0) and \
                        await _reply_on(client.iopub_channel, None, 0.2):
                    return
                alive = await client.is_alive()
                if not alive or time.monotonic() > deadline:
                    why = f"no answer in {timeout:g} s" if alive else "it died"
                    raise ApiError(500, "kernel_not_ready",
                                   f"kernel {kernel_id} did not become ready: {why}")

    async def _session_path(self, kernel_id: str) -> Path | None:
        for session in await self.session_manager.list_sessions():
            kernel = session.get("kernel") or {}
            if kernel.get("id") == kernel_id and session.get("type", "notebook") == "notebook":
                return self.resolve(str(session.get("path") or ""))
        return None

    def _forget_gone(self) -> None:
        for kernel_id in [k for k in self._facts if k not in self.kernel_manager]:
            del self._facts[kernel_id]


def own_session(shared: Any) -> Any:
    """A copy of the kernel manager's jupyter_client Session with an id of its own.
    Every `manager.client()` gets the manager's id, which is also its shell socket's
    identity, and ipykernel hands an identity over to its latest connection
    (ROUTER_HANDOVER): a reply to another client of the same kernel (another server
    extension's, a test's) would come to ours, and that client would wait in vain —
    seen in CI as a cell that never answered while gpushift looked at its kernel."""
    own = shared.clone()
    own.session = str(uuid.uuid4())
    return own
