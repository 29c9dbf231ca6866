"""`gpushift-webhook`: serve the admission webhook (and, with --guard, the migration
guard), check a configuration file, or run one of the Helm chart's hooks
(`hook_commands`: uninstall-cleanup, probe-injection)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from gpushift_certs.issue import service_dns_names
from gpushift_certs.reloading import ReloadingCertificate
from gpushift_certs.rotation import RotationPolicy
from gpushift_core import jsonlog
from gpushift_core.kube import KubeApi, Retry
from gpushift_webhook import (
    capacity_publisher,
    guard_loop,
    hook_commands,
    notebook_watch,
    self_managed,
)
from gpushift_webhook.cert_objects import CertificateObjects
from gpushift_webhook.config import ConfigError, WebhookConfig, load_config
from gpushift_webhook.enablement import EnablementMode
from gpushift_webhook.gpu_hours import GpuHours
from gpushift_webhook.gpu_hours_metrics import GpuHoursCollector
from gpushift_webhook.lease import LeaseSettings
from gpushift_webhook.metrics import WebhookMetrics
from gpushift_webhook.server import DEFAULT_MAX_BODY_BYTES, make_app, record_certificate
from gpushift_webhook.server_types import ServerTypeCache
from gpushift_webhook.supervisor import LoopHealth, LoopSettings, Supervisor

log = logging.getLogger("gpushift.webhook")

# The webhook Deployment's background loops (guard, Lease, certificates) try each call
# once, with timeouts: a loop retries on its next pass, and a slow apiserver must not
# stall a pass or a Lease renewal for long.
PASS_RETRY = Retry(deadline_seconds=0, connect_timeout_seconds=5, read_timeout_seconds=15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpushift-webhook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve POST /mutate over HTTPS")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    serve.add_argument("--port", type=int, default=8443, help="HTTPS port")
    serve.add_argument("--cert-dir", required=True,
                       help="directory holding tls.crt and tls.key (reloaded when they change)")
    serve.add_argument("--config", help="webhook config YAML (the chart's ConfigMap)")
    serve.add_argument("--namespace", default=os.environ.get("GPUSHIFT_NAMESPACE", ""),
                       help="the webhook's own namespace, never injected "
                            "(default: $GPUSHIFT_NAMESPACE)")
    serve.add_argument("--reload-interval", type=float, default=1.0,
                       help="seconds between checks of the certificate files")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                       help="larger request bodies are refused with 400")
    serve.add_argument("--log-level", default="INFO")
    _add_self_managed_arguments(serve)
    _add_guard_arguments(serve)
    capacity_publisher.add_arguments(serve)

    check = sub.add_parser("check-config", help="validate a config file and print it")
    check.add_argument("--config", required=True)
    hook_commands.add_parsers(sub)

    args = parser.parse_args(argv)
    jsonlog.setup(getattr(args, "log_level", "INFO"))
    if args.command in hook_commands.COMMANDS:
        return hook_commands.run(parser, args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"gpushift-webhook: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"configuration OK: {len(config.profiles)} GPU profile(s), "
              f"{len(config.image_map)} image pair(s)")
        return 0
    _check_deadlines(parser, args)
    if args.self_managed_certs and not args.namespace:
        parser.error("--self-managed-certs needs --namespace (or $GPUSHIFT_NAMESPACE)")
    if args.guard:
        if not args.namespace:
            parser.error("--guard needs --namespace (or $GPUSHIFT_NAMESPACE): its Lease is "
                         "kept there")
        if args.guard_interval <= 0:
            parser.error("--guard-interval must be positive")
        try:
            args.guard_lease = _lease_settings(args)
        except ValueError as exc:
            parser.error(f"guard lease: {exc}")
    if args.capacity:
        try:
            args.capacity_settings = capacity_publisher.settings_from(
                args, config.capacity_configmap)
        except ValueError as exc:
            parser.error(f"capacity: {exc}")
    if args.namespace and args.namespace not in config.excluded_namespaces:
        config = replace(config, excluded_namespaces=[*config.excluded_namespaces,
                                                      args.namespace])
    # uvloop: the same asyncio API with a faster event loop (libuv); it roughly halves
    # the server's own per-request overhead on TLS keep-alive connections.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_forever(config, args))
    return 0


async def serve_forever(config: WebhookConfig, args: argparse.Namespace) -> None:
    metrics = WebhookMetrics()
    loops = Supervisor(metrics)
    cert = ReloadingCertificate(args.cert_dir,
                                on_change=lambda info: record_certificate(metrics, info))
    if not cert.reload():
        log.warning("starting without a valid certificate; /readyz fails until one "
                    "appears", extra={"cert_dir": args.cert_dir, "why": cert.last_error})
    server_types = ServerTypeCache()
    app = make_app(config, cert, metrics, args.max_body_bytes, server_types=server_types,
                   loops=loops)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    # Keep-alive matters: the API server reuses connections, and a new TLS handshake
    # per review costs more than the review.
    site = web.TCPSite(runner, args.host, args.port, ssl_context=cert.server_context(),
                       backlog=1024)
    await site.start()
    log.info("webhook serving", extra={"host": args.host, "port": args.port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(cert.watch(args.reload_interval))]
    api = None
    if args.self_managed_certs or getattr(args, "guard", False):
        # Notebooks are listed from the API server's watch cache, in pages: the guard
        # and the server types list every interval, and neither needs a read from etcd
        # (the guard reads a Notebook again before it writes).
        api = KubeApi.connect(args.kubeconfig, component="gpushift-guard",
                              instance=getattr(args, "guard_identity", ""), retry=PASS_RETRY,
                              list_from_cache=True)
    if args.self_managed_certs:
        settings = replace(_self_managed_settings(args), load_files=cert.reload)
        assert api is not None
        certs_api = CertificateObjects(api)
        tasks.append(loops.start(
            LoopSettings("certificates", args.cert_deadline),
            lambda health: self_managed.run(certs_api, settings, on_pass=health.passed)))
    if getattr(args, "guard", False):
        assert api is not None
        # One watch of the Notebooks per replica; the guard and the server types read
        # its store instead of listing every interval.
        # The same watch keeps the GPU-hours (gpu_hours), served on /metrics.
        account = GpuHours(config.gpu_resources, config.profiles)
        metrics.registry.register(GpuHoursCollector(account))
        store = notebook_watch.NotebookStore(observer=account)
        watched = notebook_watch.WatchedApi(api, store)
        following = notebook_watch.WatchSettings(
            watch_timeout_seconds=args.notebooks_watch_seconds,
            poll_seconds=args.guard_interval)
        source = api
        tasks.append(loops.start(
            LoopSettings("notebooks", args.notebooks_deadline),
            lambda health: notebook_watch.follow(source, store, following,
                                                 on_pass=health.passed)))
        leader_loops: list[guard_loop.LeaderLoop] = []
        if getattr(args, "capacity", False):
            capacity_api = api
            leader_loops.append(lambda is_leader: capacity_publisher.start(
                capacity_api, config.profiles, args.capacity_settings, loops, is_leader))
        tasks.append(asyncio.create_task(guard_loop.run(
            watched, config, guard_loop.GuardLoopSettings(
                lease=args.guard_lease, interval_seconds=args.guard_interval,
                enablement=EnablementMode(args.enablement_mode),
                guard_deadline_seconds=args.guard_deadline,
                lease_deadline_seconds=args.lease_deadline), metrics, loops,
            leader_loops=leader_loops)))
        # Every replica answers reviews, so every replica keeps the Notebooks' server
        # types (the guard's RBAC lists Notebooks; without --guard every pod is injected
        # and the sidecar decides).
        tasks.append(loops.start(
            LoopSettings("server_types", args.server_types_deadline),
            lambda health: server_types.run(_PassOnList(watched, health), args.guard_interval)))
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Graceful: stop accepting, let requests in flight finish.
        await runner.cleanup()
        log.info("webhook stopped")


def _check_deadlines(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag in ("cert_deadline", "guard_deadline", "lease_deadline",
                 "notebooks_deadline", "notebooks_watch_seconds", "server_types_deadline",
                 "capacity_interval", "capacity_refresh", "capacity_deadline"):
        if getattr(args, flag, 1.0) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")


class _PassOnList:
    """The Notebook lister of the server-type cache, telling its supervisor of each list
    that succeeded (`ServerTypeCache.run` keeps the last list on errors)."""

    def __init__(self, api: KubeApi, health: LoopHealth) -> None:
        self.api = api
        self.health = health

    async def list_notebooks(self) -> list[dict[str, Any]]:
        listed = await self.api.list_notebooks()
        self.health.passed()
        return listed


def _add_self_managed_arguments(serve: argparse.ArgumentParser) -> None:
    managed = serve.add_argument_group(
        "self-managed certificates",
        "keep the CA and serving certificate in a Secret, rotate them, write them into "
        "--cert-dir and publish the CA as the webhook configuration's caBundle")
    managed.add_argument("--self-managed-certs", action="store_true",
                         help="turn the self-managed mode on")
    managed.add_argument("--secret-name", default="gpushift-webhook-tls",
                         help="Secret in --namespace holding the certificates")
    managed.add_argument("--webhook-configuration", default="gpushift",
                         help="MutatingWebhookConfiguration whose caBundle is kept current")
    managed.add_argument("--service-name", default="gpushift-webhook",
                         help="Service of the webhook: its DNS names go into the certificate")
    managed.add_argument("--ip-san", action="append", default=[],
                         help="IP address SAN (repeat), for a webhook reached by address")
    managed.add_argument("--cert-interval", type=float, default=60.0,
                         help="seconds between certificate reconciles")
    managed.add_argument("--serving-cert-validity", type=float, default=365 * 86400.0,
                         help="seconds a new serving certificate is valid (renewed at 2/3)")
    managed.add_argument("--ca-validity", type=float, default=5 * 365 * 86400.0,
                         help="seconds a new CA is valid (replaced at 2/3)")
    managed.add_argument("--ca-propagation-delay", type=float, default=60.0,
                         help="seconds a next CA is published before it signs")
    managed.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                         help="kubeconfig outside the cluster (default: in-cluster)")
    managed.add_argument("--cert-deadline", type=float, default=600.0,
                         help="seconds without a completed certificate reconcile after "
                              "which /healthz fails")


def _add_guard_arguments(serve: argparse.ArgumentParser) -> None:
    guarding = serve.add_argument_group(
        "migration guard",
        "roll back a migration whose new pod is not Ready within the config's "
        "guard.ready_timeout_seconds (previous profile restored, stuck pod deleted); "
        "with several replicas, the one holding a Lease in --namespace acts")
    guarding.add_argument("--guard", action="store_true", help="run the migration guard")
    guarding.add_argument("--guard-lease-name", default="gpushift-guard",
                          help="Lease in --namespace for the guard's leader election")
    guarding.add_argument("--guard-interval", type=float, default=5.0,
                          help="seconds between looks at the Notebooks")
    guarding.add_argument("--guard-lease-duration", type=float, default=15.0,
                          help="seconds after which a Lease not renewed is taken over")
    guarding.add_argument("--guard-renew-interval", type=float, default=5.0,
                          help="seconds between reads and renewals of the Lease")
    guarding.add_argument("--guard-deadline", type=float, default=300.0,
                          help="seconds without a completed guard pass after which "
                               "/healthz fails")
    guarding.add_argument("--lease-deadline", type=float, default=300.0,
                          help="seconds without reaching the API server from the Lease "
                               "loop after which /healthz fails")
    guarding.add_argument("--notebooks-deadline", type=float, default=300.0,
                          help="seconds without a list or watch event of the Notebooks "
                               "(a watch ends every 60 s) after which /healthz fails")
    guarding.add_argument("--notebooks-watch-seconds", type=float, default=60.0,
                          help="the API server ends each watch of the Notebooks after "
                               "this long; the next resumes where it ended")
    guarding.add_argument("--server-types-deadline", type=float, default=300.0,
                          help="seconds without a completed list of the Notebooks' server "
                               "types after which /healthz fails")
    guarding.add_argument("--enablement-mode", default=EnablementMode.OPT_IN.value,
                          choices=[m.value for m in EnablementMode],
                          help="the namespaces the guard acts in, as the chart's "
                               "enablement.mode: opt-in (labelled gpushift.io/enabled=true) "
                               "or cluster-wide (all but gpushift.io/enabled=false); never "
                               "kube-system, --namespace or excluded_namespaces")
    guarding.add_argument("--guard-identity",
                          default=f"{socket.gethostname()}_{os.getpid()}",
                          help="holderIdentity in the Lease (default: hostname_pid; in a "
                               "pod the hostname is the pod's name)")


def _lease_settings(args: argparse.Namespace) -> LeaseSettings:
    return LeaseSettings(namespace=args.namespace, name=args.guard_lease_name,
                         identity=args.guard_identity,
                         duration_seconds=args.guard_lease_duration,
                         renew_seconds=args.guard_renew_interval)


def _self_managed_settings(args: argparse.Namespace) -> self_managed.SelfManagedSettings:
    return self_managed.SelfManagedSettings(
        namespace=args.namespace,
        secret_name=args.secret_name,
        webhook_configuration=args.webhook_configuration,
        cert_dir=Path(args.cert_dir),
        policy=RotationPolicy(
            dns_names=service_dns_names(args.service_name, args.namespace),
            ips=args.ip_san,
            serving_validity=dt.timedelta(seconds=args.serving_cert_validity),
            ca_validity=dt.timedelta(seconds=args.ca_validity),
            propagation_delay=dt.timedelta(seconds=args.ca_propagation_delay),
        ),
        interval_seconds=args.cert_interval,
    )


if __name__ == "__main__":
    sys.exit(main())
