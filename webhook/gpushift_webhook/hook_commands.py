"""The `gpushift-webhook` subcommands that the Helm chart's hook pods run:
`uninstall-cleanup` (pre-delete hook, see `uninstall_cleanup`) and `probe-injection`
(`helm test`, see `injection_probe`). Both print what they did, one line per step, for
`kubectl logs` / `helm test --logs`, and answer an API refusal with its Status and the
exit status 1 (an unreachable API after a minute of retries too) -- never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from gpushift_core.kube import KubeApi, KubeError, Retry
from gpushift_webhook import injection_probe
from gpushift_webhook.uninstall_cleanup import CleanupTargets, cleanup

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("uninstall-cleanup", "probe-injection")
# A hook pod may start before the API is reachable from it (a CNI, an Istio proxy):
# keep trying for a while, then fail with the reason.
HOOK_RETRY = Retry(deadline_seconds=60)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clean = sub.add_parser(
        "uninstall-cleanup", help="delete the webhook configuration and the self-managed "
        "TLS Secret (the chart's pre-delete hook); absent objects are fine")
    clean.add_argument("--webhook-configuration", required=True,
                       help="MutatingWebhookConfiguration to delete")
    clean.add_argument("--secret-name", default="",
                       help="TLS Secret in --namespace to delete (empty: none)")
    probe = sub.add_parser(
        "probe-injection", help="dry-run create a notebook pod and check that the webhook "
        "injected the sidecar (the chart's helm test); exit 1 when it did not")
    probe.add_argument("--sidecar-name", default="gpushift-sidecar",
                       help="container name of the injected sidecar (config.sidecar.name)")
    probe.add_argument("--image", default="gpushift/injection-probe:never-pulled",
                       help="image of the probe pod's container (a dry run pulls nothing)")
    for parser in (clean, probe):
        parser.add_argument("--namespace", default=os.environ.get("GPUSHIFT_NAMESPACE", ""),
                            help="cleanup: the release namespace; probe: a namespace where "
                                 "injection is enabled (default: $GPUSHIFT_NAMESPACE)")
        parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"),
                            help="kubeconfig outside the cluster (default: in-cluster)")


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not args.namespace:
        parser.error(f"{args.command} needs --namespace (or $GPUSHIFT_NAMESPACE)")
    try:
        api = KubeApi.connect(args.kubeconfig, component=f"gpushift-{args.command}",
                              retry=HOOK_RETRY)
    except Exception as exc:  # a bad kubeconfig: say so, no traceback
        print(f"gpushift-webhook {args.command}: cannot configure the Kubernetes client: "
              f"{exc}", file=sys.stderr)
        return 1
    try:
        if args.command == "uninstall-cleanup":
            return asyncio.run(_cleanup(api, args))
        return asyncio.run(_probe(api, args))
    except KubeError as exc:
        print(f"gpushift-webhook {args.command}: the API call failed: {exc}", file=sys.stderr)
        return 1
    finally:
        api.close()


async def _cleanup(api: KubeApi, args: argparse.Namespace) -> int:
    targets = CleanupTargets(args.webhook_configuration, args.namespace,
                             args.secret_name or None)
    for line in await cleanup(api, targets):
        print(line, flush=True)
    return 0


async def _probe(api: KubeApi, args: argparse.Namespace) -> int:
    pod = await injection_probe.dry_run_create(api, args.namespace,
                                               injection_probe.probe_pod(args.image))
    problem = injection_probe.verdict(pod, args.namespace, args.sidecar_name)
    if problem is not None:
        print(f"FAIL: {problem}", file=sys.stderr, flush=True)
        return 1
    print(f"OK: the webhook injected {args.sidecar_name} into a notebook pod in namespace "
          f"{args.namespace} (server-side dry run, nothing created)", flush=True)
    return 0
