"""`gpushift-sidecar`: serve the loopback API, or probe it (the startup probe).

`probe` runs every second in every notebook pod until the sidecar is ready, so this
module imports the server's dependencies only when it serves. It keeps asking for up to
`--wait` seconds (the injected probe: 1 s of its 2 s timeout), so a pod's notebook
container starts as soon as the sidecar is ready, not up to a probe period later.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from gpushift_core import jsonlog
from gpushift_sidecar.env import EnvError, SidecarEnv

if TYPE_CHECKING:
    from gpushift_core.kube import KubeApi
    from gpushift_sidecar.service import MigrationRunner, Sidecar
    from gpushift_sidecar.startup_files import StartupFiles

log = logging.getLogger("gpushift.sidecar")

RunnerFactory = Callable[["Sidecar"], "MigrationRunner"]
_DEFAULT_PORT = 8765  # as gpushift_sidecar.env.DEFAULT_API_PORT, without importing it
_RUNTIME_CONFIG = "runtime-config.json"  # as gpushift_sidecar.runtime_config.FILE_NAME
_PROBE_RETRY_S = 0.05
_DEFAULT_CHECKPOINT_TIMEOUT = 60.0
_DEFAULT_RESTORE_TIMEOUT = 600.0
_DEFAULT_SAVE_TIMEOUT = 600.0


def main(argv: list[str] | None = None, runner_factory: RunnerFactory | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpushift-sidecar", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="write runtime-config.json and serve the API")
    serve.add_argument("--host", default="127.0.0.1",
                       help="loopback address to listen on; any other is refused")
    serve.add_argument("--port", type=int, default=None,
                       help="port (default: $GPUSHIFT_API_PORT, else 8765)")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--kubeconfig", default=None,
                       help="kubeconfig file for the Kubernetes API (tests, local runs); "
                            "default: the pod's ServiceAccount (in-cluster), else "
                            "$KUBECONFIG")
    serve.add_argument("--checkpoint-timeout", type=float, default=None,
                       help="seconds a migration waits for its kishu checkpoint to be "
                            "complete (default: $GPUSHIFT_CHECKPOINT_TIMEOUT, else 60)")
    serve.add_argument("--save-timeout", type=float, default=None,
                       help="seconds a move waits in `checkpointing` for the notebook "
                            "side to save every notebook and name the checkpoints before "
                            "it fails, nothing changed (default: $GPUSHIFT_SAVE_TIMEOUT, "
                            "else 600)")
    serve.add_argument("--restore-timeout", type=float, default=None,
                       help="seconds a migration waits in `restoring` for the notebook "
                            "side's restore report before it ends failed, the checkpoint "
                            "kept (default: $GPUSHIFT_RESTORE_TIMEOUT, else 600)")
    serve.add_argument("--idle-tick", type=float, default=1.0,
                       help="seconds between ticks of the idle timer on a GPU pod "
                            "(default 1)")
    serve.add_argument("--idle-annotations-interval", type=float, default=30.0,
                       help="seconds between reads of the Notebook's idle annotations "
                            "(timeout override, pin; default 30)")
    serve.add_argument("--activity-interval", type=float, default=60.0,
                       help="seconds between writes of a GPU pod's GPU work to its "
                            "Notebook (the busy GPU-hours; written only when it changed; "
                            "default 60)")
    probe = sub.add_parser("probe", help="exit 0 when GET /healthz answers 200, else 1")
    probe.add_argument("--port", type=int, default=None,
                       help="port (default: $GPUSHIFT_API_PORT, else 8765)")
    probe.add_argument("--timeout", type=float, default=1.0,
                       help="seconds to wait for one answer")
    probe.add_argument("--wait", type=float, default=0.0,
                       help="seconds to keep asking (every 50 ms) while the sidecar is not "
                            "ready yet, so the probe passes as soon as it is instead of at "
                            "the kubelet's next period (default 0: ask once)")
    args = parser.parse_args(argv)
    if args.command == "probe":
        runtime_dir = os.environ.get("GPUSHIFT_RUNTIME_DIR", "").strip()
        return run_probe(args.port or _port_from_environ(), args.timeout, args.wait,
                         Path(runtime_dir) if runtime_dir else None)
    return run_serve(args, runner_factory)


def entry() -> NoReturn:
    """The `gpushift-sidecar` command: `main`, then out at once. When a pod is replaced
    its new pod waits for this process to end, and Python's own finalization (tearing
    down ~1,000 modules, the Kubernetes client's pydantic models among them) took
    0.14 s after the sidecar had stopped. Everything is closed by then: `run_serve`'s
    event loop has ended (its worker threads joined) and the state is on disk; the log
    is flushed here."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run_probe(port: int, timeout: float, wait: float = 0.0,
              runtime_dir: Path | None = None) -> int:
    """0 once `runtime_dir` holds runtime-config.json (the sidecar writes it first
    thing, before its server's imports) or GET /healthz answers 200, within `wait`
    seconds (looked at every 50 ms); else 1 with the last reason on stderr (the kubelet
    puts it in the probe's event): /healthz says why the files are not written."""
    deadline = time.monotonic() + wait
    while True:
        if runtime_dir is not None and (runtime_dir / _RUNTIME_CONFIG).is_file():
            return 0
        left = deadline - time.monotonic()
        ready, why = _ask_healthz(port, timeout if left <= 0 else min(timeout, left))
        if ready:
            return 0
        if time.monotonic() + _PROBE_RETRY_S >= deadline:
            print(f"gpushift-sidecar probe: {why}", file=sys.stderr)
            return 1
        time.sleep(_PROBE_RETRY_S)


def _ask_healthz(port: int, timeout: float) -> tuple[bool, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        body = response.read(2048).decode("utf-8", "replace")
    except OSError as exc:
        return False, f"no answer on 127.0.0.1:{port}: {exc}"
    finally:
        connection.close()
    return response.status == 200, f"{response.status} {body}"


def _port_from_environ() -> int:
    text = os.environ.get("GPUSHIFT_API_PORT", "").strip()
    return int(text) if text.isdigit() else _DEFAULT_PORT


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it could resolve to anything
        return False


def run_serve(args: argparse.Namespace, runner_factory: RunnerFactory | None) -> int:
    # aiohttp, uvloop and prometheus_client take ~0.2 s of CPU to import; the probe,
    # run every second under the sidecar's small CPU limit, must not pay for them.
    import uvloop  # noqa: PLC0415

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
    except Exception as exc:  # config.ConfigException, a broken file, a missing token
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
    from aiohttp import web  # noqa: PLC0415 - see run_serve

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


if __name__ == "__main__":
    entry()
