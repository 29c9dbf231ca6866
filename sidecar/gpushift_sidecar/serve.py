"""`gpushift-sidecar serve`: write runtime-config.json, then serve the loopback API and
run the sidecar's loops until SIGTERM.

The server's modules (uvloop, aiohttp, the Kubernetes client, the sidecar's service) are
imported inside the functions, after `run_serve` wrote runtime-config.json: the
notebook container starts on that file (the startup probe) while they load."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from gpushift_core import jsonlog
from gpushift_sidecar.env import EnvError, SidecarEnv

if TYPE_CHECKING:
    from gpushift_core.kube import KubeApi
    from gpushift_sidecar.service import MigrationRunner, Sidecar
    from gpushift_sidecar.startup_files import StartupFiles

log = logging.getLogger("gpushift.sidecar")

RunnerFactory = Callable[["Sidecar"], "MigrationRunner"]
_DEFAULT_CHECKPOINT_TIMEOUT = 60.0
_DEFAULT_RESTORE_TIMEOUT = 600.0
_DEFAULT_SAVE_TIMEOUT = 600.0


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it could resolve to anything
        return False


def run_serve(args: argparse.Namespace, runner_factory: RunnerFactory | None) -> int:
    jsonlog.setup(args.log_level)
    if not is_loopback(args.host):
        # The API moves the user's notebook; only processes inside the pod may ask.
        message = (f"--host {args.host!r} is not a loopback address: the sidecar "
                   "listens on loopback only (e.g. 127.0.0.1)")
        log.error(message)
        print(f"gpushift-sidecar: {message}", file=sys.stderr)
        return 2
    try:
        env = SidecarEnv.from_environ()
    except EnvError as exc:
        log.error("invalid environment", extra={"variable": exc.variable, "why": str(exc)})
        print(f"gpushift-sidecar: invalid environment: {exc}", file=sys.stderr)
        return 2
    try:
        checkpoint_timeout = _seconds(args.checkpoint_timeout, "GPUSHIFT_CHECKPOINT_TIMEOUT",
                                      _DEFAULT_CHECKPOINT_TIMEOUT, "checkpoint timeout")
        restore_timeout = _seconds(args.restore_timeout, "GPUSHIFT_RESTORE_TIMEOUT",
                                   _DEFAULT_RESTORE_TIMEOUT, "restore timeout")
        save_timeout = _seconds(args.save_timeout, "GPUSHIFT_SAVE_TIMEOUT",
                                _DEFAULT_SAVE_TIMEOUT, "save timeout")
    except ValueError as exc:
        print(f"gpushift-sidecar: {exc}", file=sys.stderr)
        return 2
    for flag, value in (("--idle-tick", args.idle_tick),
                        ("--idle-annotations-interval", args.idle_annotations_interval),
                        ("--activity-interval", args.activity_interval)):
        if not 0.01 <= value <= 3600:
            print(f"gpushift-sidecar: {flag} {value:g}s is not between 0.01 and 3600",
                  file=sys.stderr)
            return 2
    port = args.port or env.api_port
    # runtime-config.json now, before the server's imports: the notebook container starts
    # on it (the startup probe) while they run.
    from gpushift_sidecar.startup_files import write_startup_files  # noqa: PLC0415

    startup = write_startup_files(env)
    import uvloop  # noqa: PLC0415 - after the files: 0.07 s of import

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve_forever(env, args.host, port, runner_factory,
                                            startup=startup,
                                            kubeconfig=args.kubeconfig,
                                            checkpoint_timeout=checkpoint_timeout,
                                            restore_timeout=restore_timeout,
                                            save_timeout=save_timeout,
                                            idle_tick=args.idle_tick,
                                            idle_annotations=args.idle_annotations_interval,
                                            activity_interval=args.activity_interval))
    finally:
        logging.shutdown()  # the log flushed: `cli.entry` leaves without finalization


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _seconds(flag: float | None, variable: str, default: float, what: str) -> float:
    """A timeout from its flag, else its environment variable, else the default."""
    if flag is None:
        text = os.environ.get(variable, "").strip()
        try:
            flag = float(text) if text else default
        except ValueError:
            raise ValueError(f"{variable}: {text!r} is not a number of seconds") from None
    if not 0 <= flag <= 3600:
        raise ValueError(f"{what} {flag:g}s is not between 0 and 3600")
    return flag


def connect_kube(env: SidecarEnv, kubeconfig: str | None) -> tuple[KubeApi | None, str]:
    """The API client (no request is made yet), or None and why there is none: the API
    stays up without it, and a migration fails at the patch with that reason."""
    from gpushift_core.kube import KubeApi  # noqa: PLC0415

    try:
        return KubeApi.connect(kubeconfig, component="gpushift-sidecar", instance=env.pod_name,
                               host=env.node_name), ""
    except Exception as exc:  # ConfigError (no pod, a broken kubeconfig), an unreadable CA
        problem = f"no Kubernetes API configuration: {exc}"
        log.warning("no Kubernetes API client; migrations will fail at the patch",
                  extra={"why": problem})
        return None, problem


async def serve_forever(env: SidecarEnv, host: str, port: int,
                        runner_factory: RunnerFactory | None, *,
                        kubeconfig: str | None = None,
                        checkpoint_timeout: float = _DEFAULT_CHECKPOINT_TIMEOUT,
                        restore_timeout: float = _DEFAULT_RESTORE_TIMEOUT,
                        save_timeout: float = _DEFAULT_SAVE_TIMEOUT,
                        idle_tick: float = 1.0, idle_annotations: float = 30.0,
                        activity_interval: float = 60.0,
                        startup: StartupFiles | None = None) -> int:
    """`startup`: what `write_startup_files` made as the process started (None: made
    and written here)."""
    from aiohttp import web  # noqa: PLC0415 - see the module's docstring

    from gpushift_sidecar.api import make_app  # noqa: PLC0415
    from gpushift_sidecar.gpu_busy import GpuActivityPublisher  # noqa: PLC0415
    from gpushift_sidecar.idle_loop import IdleLoopConfig  # noqa: PLC0415
    from gpushift_sidecar.runner import RunnerConfig, StepRunner  # noqa: PLC0415
    from gpushift_sidecar.service import Sidecar  # noqa: PLC0415
    from gpushift_sidecar.startup_files import write_startup_files  # noqa: PLC0415

    kube, problem = connect_kube(env, kubeconfig)
    startup = startup or write_startup_files(env)
    steps = StepRunner(env, startup.tracker, kube, kube_problem=problem,
                       config=RunnerConfig(checkpoint_timeout=checkpoint_timeout,
                                           restore_timeout=restore_timeout,
                                           save_timeout=save_timeout))
    sidecar = Sidecar.create(env, steps, kube=kube, quotas=kube,
                             capacity=kube,
                             idle_config=IdleLoopConfig(tick_seconds=idle_tick,
                                                        annotations_seconds=idle_annotations),
                             startup=startup)
    steps.verify = sidecar.watcher.verify  # one checkpoint watcher: API, idle move, runner
    if runner_factory is not None:
        sidecar.runner = runner_factory(sidecar)
    # Before listening: a ready answer to the first probe, or the reason in the log.
    sidecar.files.write_now()
    app_runner = web.AppRunner(make_app(sidecar), access_log=None, handle_signals=False)
    await app_runner.setup()
    try:
        await web.TCPSite(app_runner, host, port).start()
    except OSError as exc:
        log.error("cannot listen", extra={"host": host, "port": port, "why": exc.strerror})
        await app_runner.cleanup()
        return 1
    log.info("sidecar serving", extra={"host": host, "port": port,
                                       "notebook": env.notebook_name,
                                       "namespace": env.pod_namespace})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    writer = asyncio.create_task(sidecar.files.run())
    # On a CPU pod it only reads the Notebook's server type (moves are refused for one
    # kept off), then returns.
    idle = asyncio.create_task(sidecar.idle.run())
    # A GPU pod tells the cluster side how long it did GPU work (busy GPU-hours).
    activity = (None if kube is None or env.gpu is None else GpuActivityPublisher(
        env, kube, sidecar.idle.gpu_busy, steps.report.pod_uid,
        interval=activity_interval).start())
    try:
        try:
            await sidecar.resume()
        except Exception:  # the API still serves the state; the runner's bug is logged
            log.exception("the migration runner could not resume")
        await stop.wait()
    finally:
        await _cancel(idle)  # no idle move starts once the pod is stopping
        await steps.stop()  # a patch in flight is persisted first
        if activity is not None:  # then the pod's last word on its GPU work (bounded)
            await activity.stop()
        await _cancel(writer)
        await app_runner.cleanup()  # stop accepting; requests in flight finish
        await sidecar.close()
        if kube is not None:
            kube.close()
        log.info("sidecar stopped")
    return 0
