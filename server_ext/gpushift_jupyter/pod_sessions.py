"""What runs in the pod, as a move sees it: the notebooks whose kernels it saves (every
Python kernel of a notebook session) and what it stops without saving — consoles and
other kernels without a notebook, notebooks of other languages, terminals. The user is
told the second list before confirming a move; the first is checkpointed, every one of
them, before the sidecar patches anything. Asked for (`GET /pod?variables=1`), also
the variables of those notebooks a checkpoint would not bring back.

Also the new pod's side: the kernel a notebook's state goes into — its browser's session
when one is open, else a session opened here for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpushift_jupyter.errors import ApiError
from gpushift_jupyter.kernel_state import KernelStateError, preview
from gpushift_jupyter.kernels import KernelInUse, KernelRegistry

KERNEL_START_TIMEOUT = 120.0
PREVIEW_BUDGET_S = 5.0
"""How long each kernel may spend pickling its variables for `unsaved` (they are
looked at in parallel, one kernel each; whatever is left is named `unchecked`)."""
IN_USE_WAIT_S = 2.0
"""How long a kernel that kishu is working in (attaching, a checkpoint) is waited for:
an attach takes a moment; a checkpoint is not waited for."""
BUSY_SETTLE_S = 1.0
"""How long a kernel that reads busy, with none of gpushift's work in it, is given to
read idle before it counts as running a cell. Its status comes on another channel than
the replies, so right after gpushift's own work in it (the previous look at its
variables, a checkpoint) it can still read busy for a moment: without this, the idle
warning's look every 5 s said "a cell is running" now and then with none running."""


@dataclass(frozen=True)
class SavedKernel:
    kernel_id: str
    notebook: Path


@dataclass(frozen=True)
class PodSessions:
    saved: list[SavedKernel] = field(default_factory=list)
    """The notebooks' Python kernels: a move checkpoints each of them."""
    will_stop: list[dict[str, str]] = field(default_factory=list)
    """What a move stops without saving: `{"kind", "name", "why"}` with kind one of
    console, kernel, notebook, terminal."""
    unsaved: list[dict[str, str]] | None = None
    """Variables a checkpoint now would not bring back, `{"notebook", "name", "why"}`
    (None: not asked, `with_variables`)."""
    unchecked: list[dict[str, str]] | None = None
    """Notebooks whose variables could not be looked at now, `{"notebook", "why"}`."""

    def to_json(self, registry: KernelRegistry) -> dict[str, Any]:
        document: dict[str, Any] = {
            "notebooks": [registry.relative(k.notebook) for k in self.saved],
            "will_stop": list(self.will_stop)}
        if self.unsaved is not None:
            document["unsaved"] = list(self.unsaved)
            document["unchecked"] = list(self.unchecked or [])
        return document


def is_python(spec: Any) -> bool:
    """A kernel spec kishu can work in (pure)."""
    return str(getattr(spec, "language", "") or "").lower() == "python"


async def pod_sessions(registry: KernelRegistry,
                       terminals: Callable[[], Any] = lambda: None) -> PodSessions:
    """Every kernel and terminal of this server, sorted into saved and stopped.
    `terminals()` is jupyter_server's terminal manager, when terminals are enabled."""
    sessions = await registry.session_manager.list_sessions()
    by_kernel: dict[str, dict[str, Any]] = {}
    for session in sessions:
        kernel_id = (session.get("kernel") or {}).get("id")
        if kernel_id:
            by_kernel[str(kernel_id)] = session
    saved: list[SavedKernel] = []
    will_stop: list[dict[str, str]] = []
    for kernel_id in sorted(registry.kernel_manager.list_kernel_ids()):
        session = by_kernel.get(kernel_id)
        kind = str(session.get("type") or "notebook") if session else "kernel"
        name = str(session.get("path") or session.get("name") or kernel_id) if session \
            else kernel_id
        if kind != "notebook":
            will_stop.append({"kind": "console" if kind == "console" else "kernel",
                              "name": name, "why": "it has no notebook to save it with"})
            continue
        if not is_python(_spec_of(registry, kernel_id)):
            will_stop.append({"kind": "notebook", "name": name,
                              "why": "its kernel is not Python: its variables cannot be "
                                     "saved"})
            continue
        try:
            notebook = registry.resolve(name)
        except ApiError as exc:
            will_stop.append({"kind": "notebook", "name": name, "why": exc.detail})
            continue
        saved.append(SavedKernel(kernel_id, notebook))
    manager = terminals()
    if manager is not None:
        for model in await _maybe_await(manager.list()) or []:
            will_stop.append({"kind": "terminal", "name": str(model.get("name")),
                              "why": "terminals end with the pod"})
    return PodSessions(saved, will_stop)


async def with_variables(registry: KernelRegistry, sessions: PodSessions) -> PodSessions:
    """`sessions` with the variables each notebook's kernel would lose in a move,
    looked at in every kernel at once. A kernel running a cell is not waited for, one
    kishu works in (attach, checkpoint) only `IN_USE_WAIT_S`: they are named in
    `unchecked`."""
    found = await asyncio.gather(*(_unsaved_in(registry, k) for k in sessions.saved))
    return dataclasses.replace(
        sessions, unsaved=[item for unsaved, _ in found for item in unsaved],
        unchecked=[item for _, unchecked in found for item in unchecked])


async def _unsaved_in(registry: KernelRegistry, kernel: SavedKernel
                      ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    notebook = registry.relative(kernel.notebook)
    facts = registry.facts(kernel.kernel_id)
    if await _running_a_cell(registry.kernel_manager.get_kernel(kernel.kernel_id), facts.busy):
        return [], [{"notebook": notebook,
                     "why": "a cell is running: its variables are known once it is saved"}]
    try:
        async with registry.kernel(kernel.kernel_id, wait=IN_USE_WAIT_S) as client:
            seen = await preview(client, budget_s=PREVIEW_BUDGET_S,
                                 timeout=PREVIEW_BUDGET_S + 10)
    except KernelInUse:
        return [], [{"notebook": notebook, "why": "it is being saved now"}]
    except KernelStateError as exc:
        return [], [{"notebook": notebook, "why": str(exc)}]
    unsaved = [{"notebook": notebook, "name": name, "why": why} for name, why in seen.unsaved]
    unchecked = [] if seen.checked_all else [
        {"notebook": notebook, "why": f"not every variable was looked at within "
                                      f"{PREVIEW_BUDGET_S:g} s"}]
    return unsaved, unchecked


async def _running_a_cell(kernel: Any, ours: asyncio.Lock) -> bool:
    """The kernel runs the user's cell: it reads busy while none of gpushift's work is
    in it (`ours` free), and still does after `BUSY_SETTLE_S`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_SETTLE_S
    while getattr(kernel, "execution_state", None) == "busy" and not ours.locked():
        if loop.time() >= deadline:
            return True
        await asyncio.sleep(0.05)
    return False


def _spec_of(registry: KernelRegistry, kernel_id: str) -> Any:
    manager = registry.kernel_manager
    try:
        name = manager.get_kernel(kernel_id).kernel_name
        return manager.kernel_spec_manager.get_kernel_spec(name)
    except Exception:  # a spec removed since the kernel started: not known to be Python
        return None


def kernel_name_of(notebook: Path, available: set[str]) -> str | None:
    """The kernel the notebook names in its metadata when it is installed here, else
    None (the server's default). A notebook that cannot be read names none (pure but
    for the read)."""
    try:
        metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return None
    name = (metadata.get("kernelspec") or {}).get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name in available else None


async def notebook_kernel(registry: KernelRegistry, notebook: Path) -> str:
    """The kernel of the notebook's session: a browser's, or one opened here."""
    relative = registry.relative(notebook)
    manager = registry.session_manager
    for session in await manager.list_sessions():
        kernel = session.get("kernel") or {}
        if session.get("path") == relative and kernel.get("id"):
            return str(kernel["id"])
    specs = registry.kernel_manager.kernel_spec_manager
    available = set((await _maybe_await(specs.get_all_specs())).keys())
    model = await manager.create_session(
        path=relative, name=notebook.name, type="notebook",
        kernel_name=kernel_name_of(notebook, available))
    kernel_id = str(model["kernel"]["id"])
    await registry.wait_ready(kernel_id, KERNEL_START_TIMEOUT)
    # A browser that opened the notebook at the same moment has a session of its own
    # (jupyter_server checks for one and creates it in separate steps): its kernel is
    # the one the user works in, so the state goes there and ours is closed — the page
    # never has to switch kernels. A browser that joined this kernel (its own session
    # around it) keeps it: closing our session would stop the kernel under the page.
    for session in await manager.list_sessions():
        other = (session.get("kernel") or {}).get("id")
        if (session.get("path") == relative and session.get("id") != model["id"] and other
                and other != kernel_id):
            await manager.delete_session(model["id"])
            return str(other)
    return kernel_id


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value
