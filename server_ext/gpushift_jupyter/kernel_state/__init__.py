"""kishu checkpoint and restore of a notebook kernel's variables, for gpushift's moves
between a CPU pod and a GPU pod (the kishu driver of the server extension).

Use, with an `AsyncKernelClient` of a kernel the server manages::

    kernel = ClientKernel(client)
    saved = await checkpoint(kernel, notebook_path, workspace=home)   # verified complete
    ...                                                                # pod recreated
    outcome = await restore(ClientKernel(new_client), notebook_path, saved.commit_id,
                            workspace=home)

Decisions (kishu 0.3.4; the reasons are in `agent` and `snapshots`):
- kishu is attached without `init_kishu` and without its per-cell hooks: the user's
  .ipynb is never written (init_kishu stores metadata in it, a checkout rewrites its
  cells), the user's namespace object is kept, and cells run at full speed. A commit is
  made only by a checkpoint, through one recorded cell (kishu's automatic-commit path,
  after pre_run_cell); it stores only groups of variables that changed since the
  previous checkpoint.
- A restore loads the commit's variable groups itself, read-only and each on its own:
  nothing is re-run (so no cell's side effects on files repeat), open files are
  reported instead of reopened, tensors saved on a GPU come back on the CPU, and one
  group that fails is reported by name while the rest load.
- kishu's settings that matter (`agent_settings.PINNED_SETTINGS`) are pinned in each
  kernel, so kishu's own edits to its shared config.ini change nothing.
- A checkpoint writes the database in one SQLite transaction (`kishu_storage`): all or
  nothing, synced once; the group pickles are dill's bytes, made without copying arrays.
- The kishu database lives in the workspace's hidden folder
  (`<workspace>/.gpushift/checkpoints/<notebook path>.kishudb`, `database`), not beside
  the notebook; a checkpoint is verified read-only from the server's process (commit
  present, no -journal).
"""

from gpushift_jupyter.kernel_state.agent_settings import PINNED_SETTINGS
from gpushift_jupyter.kernel_state.config import kishu_environment, prepare_kishu_home
from gpushift_jupyter.kernel_state.database import database_path, legacy_database_path
from gpushift_jupyter.kernel_state.driver import (
    Checkpoint,
    KernelHistory,
    Preview,
    RestoreOutcome,
    attach,
    checkpoint,
    kernel_history,
    preview,
    restore,
)
from gpushift_jupyter.kernel_state.kernel_code import (
    ClientKernel,
    KernelCode,
    KernelStateError,
    RunResult,
)

__all__ = [
    "PINNED_SETTINGS",
    "Checkpoint",
    "ClientKernel",
    "KernelCode",
    "KernelHistory",
    "KernelStateError",
    "Preview",
    "RestoreOutcome",
    "RunResult",
    "attach",
    "checkpoint",
    "database_path",
    "kernel_history",
    "kishu_environment",
    "legacy_database_path",
    "prepare_kishu_home",
    "preview",
    "restore",
]
