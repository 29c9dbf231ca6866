"""Baseline for the webhook benchmark: an aiohttp HTTPS server that answers every
POST /mutate with the same allow-response, without reading the review beyond its bytes."""

from __future__ import annotations

import argparse
import ssl

import uvloop
from aiohttp import web

ALLOW = (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",'
         b'"response":{"uid":"baseline","allowed":true}}')


async def mutate(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ALLOW, content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", required=True)
    args = parser.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{args.cert_dir}/tls.crt", f"{args.cert_dir}/tls.key")
    app = web.Application(client_max_size=3 * 1024 * 1024)
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    # The same event loop as gpushift-webhook, so the comparison is of the handlers.
    web.run_app(app, host="127.0.0.1", port=args.port, ssl_context=ctx, access_log=None,
                print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
