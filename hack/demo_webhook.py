"""The local demo of the webhook (until the full local demo of the whole move exists):
issue fresh certificates with gpushift-certs, start gpushift-webhook over HTTPS on
127.0.0.1, send it one real AdmissionReview of a Kubeflow notebook pod, and show what
it answered and what the pod looks like with the patch applied. Stops by itself."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from kubeflow_pods import admission_review, notebook_pod  # noqa: E402

from gpushift_core.patches import apply  # noqa: E402

BIN = Path(sys.executable).parent


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="gpushift-demo-") as tmp:
        certs = Path(tmp, "certs")
        out = subprocess.run([BIN / "gpushift-certs", "issue", "--out-dir", str(certs),
                              "--ip", "127.0.0.1", "--dns", "localhost"],
                             check=True, capture_output=True, text=True)
        print(f"1. certificates: {out.stdout.strip()}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = Path(tmp, "webhook.log")
        server = subprocess.Popen([BIN / "gpushift-webhook", "serve", "--host", "127.0.0.1",
                                   "--port", str(port), "--cert-dir", str(certs)],
                                  stdout=log.open("wb"), stderr=subprocess.STDOUT)
        try:
            return talk(port, certs, log)
        finally:
            server.terminate()
            server.wait(10)
            print("5. webhook stopped")


def talk(port: int, certs: Path, log: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    url = f"https://127.0.0.1:{port}"
    for _ in range(100):
        try:
            with urllib.request.urlopen(url + "/readyz", context=ctx, timeout=2) as r:
                print(f"2. webhook on {url}: /readyz -> {r.status} {r.read().decode()}")
                break
        except OSError:
            time.sleep(0.1)
    else:
        print(log.read_text())
        return 1
    pod = notebook_pod("demo", gpu=1)
    review = admission_review(pod)
    request = urllib.request.Request(url + "/mutate", data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=ctx, timeout=5) as r:
        answer = json.loads(r.read())
    response = answer["response"]
    ops = json.loads(base64.b64decode(response["patch"]))
    print(f"3. POST /mutate (pod {pod['metadata']['name']} of notebook 'demo', 1 GPU) -> "
          f"allowed={response['allowed']}, {len(ops)} JSON Patch operations:")
    for op in ops:
        value = op["value"]
        brief = value.get("name", "") if isinstance(value, dict) else value
        print(f"     {op['op']:<4} {op['path']:<40} {json.dumps(brief)[:60]}")
    patched = apply(pod, ops)
    sidecar = patched["spec"]["initContainers"][-1]
    env = {e["name"]: e.get("value", "(downward API)") for e in sidecar["env"]}
    print("4. the pod after the patch:")
    print(f"     native sidecar: {sidecar['name']} (restartPolicy={sidecar['restartPolicy']}, "
          f"startup probe: {' '.join(sidecar['startupProbe']['exec']['command'])})")
    print(f"     GPU facts: {env['GPUSHIFT_GPU_RESOURCE']} x {env['GPUSHIFT_GPU_COUNT']}; "
          f"workspace: {env['GPUSHIFT_WORKSPACE_DIR']}")
    print(f"     annotations: {patched['metadata']['annotations']}")
    line = next(json.loads(x) for x in log.read_text().splitlines() if '"admission"' in x)
    print(f"     webhook log: outcome={line['outcome']} in {line['duration_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
