"""The Jupyter Server extension: `/<base_url>/api_extension` for gpushift's JupyterLab
plugins. Enabled by `jupyter_server_config.d/gpushift_jupyter.json` on install."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Float, Integer, Unicode, default

from gpushift_jupyter import warm_kernels
from gpushift_jupyter.background import BackgroundCheckpoints, BackgroundSettings
from gpushift_jupyter.checkpoint_files import CONTENTS_EVENTS, CheckpointFiles
from gpushift_jupyter.handlers import ROUTES
from gpushift_jupyter.kernels import KERNEL_ACTIONS, KernelRegistry
from gpushift_jupyter.move_restore import MoveRestorer
from gpushift_jupyter.moves import Mover
from gpushift_jupyter.resume import ResumeOffers
from gpushift_jupyter.server_restore import ServerRestorer
from gpushift_jupyter.services import Services
from gpushift_jupyter.session_creation import serialize_session_creation
from gpushift_jupyter.sidecar_client import SidecarClient
from gpushift_jupyter.storage import StorageKeeper
from gpushift_jupyter.warm_provisioner import use_when_warm

URL_PREFIX = "api_extension"


class GpushiftExtension(ExtensionApp):
    name = "gpushift_jupyter"
    load_other_extensions = True

    runtime_dir = Unicode(
        "", config=True,
        help="Folder of the sidecar's runtime-config.json and API token (the shared "
             "runtime volume). Default: $GPUSHIFT_RUNTIME_DIR, which gpushift's webhook "
             "sets in injected pods; empty: the pod was not injected (optimizer off).")
    sidecar_url = Unicode(
        "", config=True,
        help="Base URL of the pod's gpushift sidecar API (loopback). Default: "
             "$GPUSHIFT_SIDECAR_URL, set by the webhook.")
    sidecar_timeout = Float(
        10.0, config=True,
        help="Seconds to wait for the sidecar to answer one request.")
    idle_watch_interval = Float(
        1.0, config=True,
        help="How often (seconds) the sidecar's idle timer is read; when its warning "
             "starts, every kernel kishu is attached to is checkpointed, so the idle move "
             "restores the latest state even with no browser open. 0 turns it off.")
    restore_interval = Float(
        1.0, config=True,
        help="How often (seconds) the server looks for a move that arrived on this pod "
             "(the first look as soon as the server runs), to restore its state into the "
             "notebook's kernel by itself, with or without a browser open (a browser that "
             "opens the notebook later is told what came back). 0 turns it off: then the "
             "browser restores.")
    activity_interval = Float(
        5.0, config=True,
        help="How often (seconds) the kernels' activity (busy kernels, GPU cells "
             "running) and the GPU utilisation this container measures with NVML are "
             "reported to the sidecar's idle timer on a GPU pod; a change of the busy or "
             "GPU kernels is reported at once (looked for every 0.5 s). The sidecar lets an "
             "unconfirmed report expire after 30 s, so keep it well below that; 0 turns "
             "it off (then a long GPU cell stops holding the GPU 30 s after it started).")

    background_interval = Float(
        60.0, config=True,
        help="Background checkpoints: at most one per kernel every this many seconds, "
             "after the user ran a cell and the kernel has been idle for "
             "background_quiet seconds (the kernel forks; the user never waits on it). "
             "0 turns them off. The admin's checkpoints.background_interval_seconds "
             "(runtime-config.json) wins where the sidecar gives it.")
    background_quiet = Float(
        3.0, config=True,
        help="Seconds a kernel must have been idle before a background checkpoint.")
    background_max_state_mib = Integer(
        4096, config=True,
        help="Kernels whose variables take more than this (MiB, estimated) get no "
             "background checkpoints (each hashes the whole state); their state is saved "
             "on a move or on demand, and the status says so. The admin's "
             "checkpoints.background_max_state_mib wins where the sidecar gives it.")

    @default("runtime_dir")
    def _runtime_dir_default(self) -> str:
        return os.environ.get("GPUSHIFT_RUNTIME_DIR", "")

    @default("sidecar_url")
    def _sidecar_url_default(self) -> str:
        return os.environ.get("GPUSHIFT_SIDECAR_URL", "http://127.0.0.1:8089")

    def initialize_settings(self) -> None:
        runtime_dir = Path(self.runtime_dir) if self.runtime_dir else None
        sidecar = SidecarClient(self.sidecar_url, runtime_dir or Path("/nonexistent"),
                                self.sidecar_timeout)
        server = self.serverapp
        assert server is not None  # set before extensions initialise
        # A browser reconnecting as the server's restore opens the same notebook gets
        # that session, not a second kernel beside it.
        serialize_session_creation(server.session_manager)
        # A move arriving: the kernels of its restore start in the processes the start
        # hook warmed (warm_kernels).
        if use_when_warm(server.kernel_manager):
            self.log.info("gpushift: %d warm kernel process(es) for the arriving move",
                          warm_kernels.started_count)
        kernels = KernelRegistry(server.kernel_manager, server.session_manager,
                                 Path(server.root_dir))
        restorer = MoveRestorer(kernels, sidecar)
        services: Services  # made below; the lambdas read it later
        # The admin's checkpoint settings come with the runtime config; the checkpoints
        # a move still needs, from the sidecar's record of it.
        storage = StorageKeeper(lambda: services.runtime().document, restorer.current,
                                kernels.root_dir)
        restorer.storage = storage
        mover = Mover(kernels, sidecar,
                      terminals=lambda: server.web_app.settings.get("terminal_manager"),
                      storage=storage)
        background = BackgroundCheckpoints(
            kernels, storage, BackgroundSettings(self.background_interval,
                                                 self.background_quiet,
                                                 self.background_max_state_mib),
            Path(server.runtime_dir), lambda: services.runtime().document)
        mover.background = background
        files = CheckpointFiles(storage, kernels.root_dir)
        resume = ResumeOffers(kernels, storage, restorer,
                              lambda: services.runtime().optimizer_on)
        services = Services(runtime_dir, sidecar, kernels, mover, restorer, files, resume,
                            background)
        # Renames and moves of notebooks in JupyterLab: their checkpoints follow.
        if server.event_logger is not None:
            server.event_logger.add_listener(schema_id=CONTENTS_EVENTS,
                                             listener=files.on_contents_event)
            # A restarted kernel: its classifier's memory goes with its variables.
            server.event_logger.add_listener(schema_id=KERNEL_ACTIONS,
                                             listener=kernels.on_kernel_action)
        self.settings["gpushift_services"] = services
        loop = asyncio.get_event_loop()
        if warm_kernels.started_count:  # the warm processes not used by then end
            loop.call_later(warm_kernels.WARM_SECONDS + 10, warm_kernels.reap)
        self._tasks: list[asyncio.Task[None]] = []
        if self.activity_interval > 0:
            self._tasks.append(loop.create_task(
                services.report_activity_forever(self.activity_interval)))
        if self.restore_interval > 0 and runtime_dir is not None:
            server_restorer = ServerRestorer(services.restorer,
                                             lambda: services.runtime().optimizer_on, mover)
            self._tasks.append(loop.create_task(
                server_restorer.run_forever(self.restore_interval)))
        # Always looked at: the admin's setting (runtime-config.json) may turn them on.
        self._tasks.append(loop.create_task(background.run_forever()))
        if self.idle_watch_interval > 0 and runtime_dir is not None:
            self._tasks.append(loop.create_task(
                services.checkpoint_on_idle_warning_forever(self.idle_watch_interval)))
        self.log.info("gpushift: runtime dir %s, sidecar %s",
                      runtime_dir or "(none: not injected)", self.sidecar_url)

    def initialize_handlers(self) -> None:
        # jupyter_server puts the server's base_url in front of each pattern.
        self.handlers.extend((url_path_join(URL_PREFIX, path) if path else URL_PREFIX,
                              handler) for path, handler in ROUTES)

    async def stop_extension(self) -> None:
        for task in getattr(self, "_tasks", []):
            task.cancel()
        services: Services | None = self.settings.get("gpushift_services")
        if services is not None:
            await services.sidecar.close()


