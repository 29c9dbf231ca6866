"""Randomly mutated AdmissionReviews, sent over HTTPS to the real webhook server.

Whatever the body holds, the answer is never a 5xx: a review `review()` refuses gets a
4xx JSON `{"error", "detail"}`; one it accepts gets 200 with exactly `review()`'s answer.
The mutations are seeded, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import Webhook, issue_certs, start_webhook, stop
from kubeflow_pods import admission_review, notebook_pod

from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.review import review

SEED = 20240611
CASES = 3000
CONCURRENCY = 8
CONFIG = WebhookConfig()  # what `gpushift-webhook serve` runs with, without --config

# The fields the webhook reads; most mutations hit one of them, the rest hit any field.
FOCUS = ("request", "uid", "object", "metadata", "name", "generateName", "namespace", "kind",
         "group", "operation", "labels", "annotations", "notebook-name", "spec", "containers",
         "initContainers", "volumes", "volumeMounts", "mountPath", "persistentVolumeClaim",
         "resources", "limits", "nvidia.com/gpu", "env", "apiVersion")
STRINGS = ("", "x", "Pod", "CREATE", "my-notebook", "gpushift-sidecar", "false", "/home/jovyan",
           "nvidia.com/gpu", "é\u2028\x00", "1")
NUMBERS = (0, 1, -1, 7, 2**31, 2**63 - 1, -(2**63), 2**64, 0.0, -0.0, 0.5, 1e300, -1e-300)


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    tmp = tmp_path_factory.mktemp("fuzz")
    issue_certs(tmp / "certs")
    server = start_webhook(tmp, tmp / "certs")
    yield server
    stop(server)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any type: str, int, float, bool, null, or a small list or object."""
    kind = rng.randrange(7 if depth < 2 else 5)
    if kind == 0:
        return rng.choice(STRINGS)
    if kind in (1, 2):
        return rng.choice(NUMBERS)
    if kind == 3:
        return rng.random() < 0.5
    if kind == 4:
        return None
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FOCUS): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in `node` a value sits, the root `()` included."""
    yield prefix
    if isinstance(node, dict | list):
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            yield from paths(child, (*prefix, key))


def mutated_review(rng: random.Random) -> Any:
    """A valid notebook-pod review with 1 to 3 values replaced (or keys dropped) at random."""
    body: Any = admission_review(notebook_pod(gpu=rng.choice((0, 0, 1, 2)),
                                              workspace=rng.random() < 0.8,
                                              istio=rng.random() < 0.3))
    body["request"]["uid"] = str(uuid.UUID(int=rng.getrandbits(128)))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        every = list(paths(body))
        focused = [p for p in every if p and p[-1] in FOCUS]
        path = rng.choice(focused if focused and rng.random() < 0.7 else every)
        if not path:
            body = random_value(rng)
            continue
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.15:
            del parent[path[-1]]
        else:
            parent[path[-1]] = random_value(rng)
    return body


async def post(session: aiohttp.ClientSession, hook: Webhook, body: Any,
               context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    async with session.post(hook.url + "/mutate", data=json.dumps(body).encode(),
                            ssl=context or hook.client_ssl(),
                            headers={"Content-Type": "application/json"}) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


def problem(body: Any, status: int, answer: Any) -> str | None:
    """What is wrong with the server's answer to `body`, or None."""
    if 400 <= status < 500:
        if not (isinstance(answer, dict) and isinstance(answer.get("error"), str)
                and answer["error"] and isinstance(answer.get("detail"), str)):
            return f"{status} without a JSON error and detail: {answer!r:.200}"
        return None
    if status != 200:
        return f"{status}: {answer!r:.200}"
    # The body as the server parsed it (orjson reads an integer past 64 bits as a float).
    expected, _ = review(orjson.loads(json.dumps(body)), CONFIG)
    if answer != expected:
        return f"200 with {answer!r:.200}, but review() answers {expected!r:.200}"
    response = answer["response"]
    if response["uid"] != body["request"]["uid"] or response["allowed"] is not True:
        return f"200 with the wrong uid or not allowed: {response!r:.200}"
    if "patch" in response:
        ops = json.loads(base64.b64decode(response["patch"]))
        if response.get("patchType") != "JSONPatch" or not isinstance(ops, list):
            return f"200 with a malformed patch: {response!r:.200}"
    return None


def admission_lines(hook: Webhook, since: int,
                    expected: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """The admission log lines from character `since` of the server's log on, by uid,
    after checking that nothing failed meanwhile (the server is shared by the module).
    Waits (up to 10 s) for the lines of the `expected` uids: the server writes the lines
    of one pass of its event loop together at the pass's end, just after the answers."""
    deadline = time.monotonic() + 10
    while True:
        # Whole lines only; split at "\n" only: splitlines() also splits at the U+2028 a
        # fuzzed string may hold.
        lines = [json.loads(line) for line in hook.logs()[since:].split("\n")[:-1]
                 if line.startswith("{")]
        admissions = {line["uid"]: line for line in lines if line["msg"] == "admission"}
        if set(expected) <= admissions.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    failed = [line for line in lines if "exception" in line]
    # "injection failed" is a bug of ours too: the pod is admitted, but without gpushift.
    assert not failed, f"{len(failed)} errors logged, the first: {failed[0]}"
    for line in admissions.values():
        assert all(isinstance(line[k], str) for k in ("uid", "namespace", "pod")), line
    return admissions


async def test_randomly_mutated_reviews_never_get_a_server_error(hook: Webhook) -> None:
    since = len(hook.logs())
    rng = random.Random(SEED)
    bodies = [mutated_review(rng) for _ in range(CASES)]
    results: list[tuple[int, Any]] = [(0, None)] * CASES
    queue = iter(range(CASES))

    context = hook.client_ssl()

    async def client(session: aiohttp.ClientSession) -> None:
        for i in queue:  # the clients share one iterator: each case is sent once
            results[i] = await post(session, hook, bodies[i], context)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))

    statuses = Counter(status for status, _ in results)
    problems = [f"case {i}: {p}" for i, ((status, answer), body)
                in enumerate(zip(results, bodies, strict=True))
                if (p := problem(body, status, answer))]
    assert not problems, f"{len(problems)} bad answers, statuses {dict(statuses)}:\n" + \
        "\n".join(problems[:20])
    # The mix reached both sides: refused reviews and admitted ones.
    assert statuses[200] > CASES // 10 and sum(n for s, n in statuses.items() if s >= 400)
    admitted = {answer["response"]["uid"] for status, answer in results if status == 200}
    assert admitted <= admission_lines(hook, since, admitted).keys()


def set_at(body: dict[str, Any], path: str, value: Any) -> None:
    """Set the value at a dotted path of the review (list indices as numbers)."""
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    node: Any = body
    for key in parents:
        node = node[key]
    node[last] = value


# The shapes that once failed: the log line re-read the raw body unchecked (a 500), a dict
# where a volume or mount name belongs went into a set (an "internal error" warning), a
# dict namespace was taken as its repr. A pod with garbage inside is still admitted
# (Kubernetes validates it after us); a malformed review gets 400.
@pytest.mark.parametrize(("path", "value", "status"), [
    ("request.object.metadata", "my-notebook-0", 200),
    ("request.object.metadata", 3, 200),
    ("request.object.metadata", 1.5, 200),
    ("request.object.metadata", True, 200),
    ("request.object.metadata", ["name"], 200),
    ("request.object.metadata.name", {"a": 1}, 200),
    ("request.object.metadata.name", None, 200),
    ("request.object.metadata.generateName", {"a": 1}, 200),
    ("request.object.metadata.labels", "notebook-name", 200),
    ("request.object.metadata.labels.notebook-name", {"a": 1}, 200),
    ("request.object.spec.volumes.0.name", {"a": 1}, 200),
    ("request.object.spec.containers.0.volumeMounts.0.name", {"a": 1}, 200),
    ("request.object.spec.containers.0.name", {"a": 1}, 200),
    ("request.namespace", {"a": 1}, 400),
    ("request.namespace", ["kubeflow"], 400),
    ("request.namespace", 7, 400),
    ("request.uid", {"a": 1}, 400),
    ("request.kind", "Pod", 400),
    ("request.object", "pod", 400),
    ("request", "review", 400),
])
async def test_known_malformed_shapes(hook: Webhook, path: str, value: Any,
                                      status: int) -> None:
    since = len(hook.logs())
    body = admission_review(notebook_pod(gpu=1))
    set_at(body, path, value)
    async with aiohttp.ClientSession() as session:
        got, answer = await post(session, hook, body)
    assert got == status, answer
    assert problem(body, got, answer) is None
    if got == 200:
        assert "internal error" not in json.dumps(answer)
        uid = body["request"]["uid"]
        assert uid in admission_lines(hook, since, [uid])


async def test_a_valid_review_gets_exactly_the_answer_of_review(hook: Webhook) -> None:
    since = len(hook.logs())
    body = admission_review(notebook_pod(gpu=1))
    async with aiohttp.ClientSession() as session:
        status, answer = await post(session, hook, body)
    assert status == 200
    assert answer == review(body, CONFIG)[0]
    assert answer["response"]["patchType"] == "JSONPatch"
    uid = body["request"]["uid"]
    line = admission_lines(hook, since, [uid])[uid]
    assert (line["namespace"], line["pod"], line["notebook"], line["outcome"]) == (
        "kubeflow-user-example-com", "my-notebook-0", "my-notebook", "injected")
