"""Property-based tests over generated pod specs and fuzzed requests (hypothesis)."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubeflow_pods import admission_review, notebook_pod

from gpushift_core.patches import apply
from gpushift_webhook.config import WebhookConfig
from gpushift_webhook.injection import Outcome, plan_injection
from gpushift_webhook.review import BadRequest, review

CONFIG = WebhookConfig()
names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
label_keys = st.one_of(names, st.builds(lambda a, b: f"{a}.io/{b}", names, names))
small_dicts = st.dictionaries(label_keys, names, max_size=4)


@st.composite
def pods(draw):
    """Kubeflow-shaped notebook pods with random optional parts removed or added."""
    name = draw(names)
    pod = notebook_pod(name, gpu=draw(st.integers(0, 4)), workspace=draw(st.booleans()),
                       istio=draw(st.booleans()))
    meta, spec = pod["metadata"], pod["spec"]
    meta["labels"].update(draw(small_dicts))
    annotations = draw(st.one_of(st.none(), small_dicts))
    if annotations is None:
        meta.pop("annotations")
    else:
        meta["annotations"] = {k: v for k, v in annotations.items()
                               if not k.startswith("gpushift.io/")}
    container = spec["containers"][0]
    for key in draw(st.sets(st.sampled_from(["env", "volumeMounts", "resources"]))):
        container.pop(key)
    if draw(st.booleans()) and not any(m.get("mountPath") == "/home/jovyan"
                                       for m in container.get("volumeMounts", [])):
        spec.pop("volumes")
    extra = draw(st.lists(st.builds(lambda n: {"name": f"x-{n}", "image": "busybox"}, names),
                          max_size=3, unique_by=lambda c: c["name"]))
    spec["containers"] += extra
    if draw(st.booleans()):
        spec["nodeSelector"] = draw(small_dicts)
    return pod


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_patch_applies_is_idempotent_and_keeps_unrelated_fields(pod):
    original = copy.deepcopy(pod)
    decision = plan_injection(pod, "user-ns", CONFIG)
    assert pod == original, "planning must not modify its input"
    assert decision.outcome is Outcome.INJECTED
    result = apply(pod, decision.operations)
    # Idempotent: a second pass over the result adds nothing.
    again = plan_injection(result, "user-ns", CONFIG)
    assert again.outcome is Outcome.ALREADY_INJECTED and again.operations == []
    # Unrelated fields are untouched.
    for key in set(pod["spec"]) - {"initContainers", "volumes", "containers"}:
        assert result["spec"][key] == pod["spec"][key]
    assert result["metadata"]["labels"] == pod["metadata"]["labels"]
    for key, value in (pod["metadata"].get("annotations") or {}).items():
        assert result["metadata"]["annotations"][key] == value
    assert result["spec"]["containers"][1:] == pod["spec"]["containers"][1:]
    for key in ("image", "resources", "ports", "name"):
        assert result["spec"]["containers"][0].get(key) == pod["spec"]["containers"][0].get(key)
    old_volumes = pod["spec"].get("volumes", [])
    assert result["spec"]["volumes"][: len(old_volumes)] == old_volumes
    old_init = pod["spec"].get("initContainers", [])
    assert result["spec"]["initContainers"][: len(old_init)] == old_init
    assert result["spec"]["initContainers"][-1]["name"] == "gpushift-sidecar"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400)
@given(json_values)
def test_arbitrary_json_is_a_bad_request_never_a_crash(body):
    try:
        review(body, CONFIG)
    except BadRequest:
        pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_pod_objects_are_always_admitted(data):
    """A review that is well-formed but carries garbage inside the pod is admitted."""
    body = admission_review(notebook_pod())
    obj = body["request"]["object"]
    target = data.draw(st.sampled_from([obj, obj["metadata"], obj["spec"],
                                        obj["spec"]["containers"][0]]))
    key = data.draw(st.sampled_from(sorted(k for k in target if target is not obj or k != "kind")))
    target[key] = data.draw(json_values)
    answer, decision = review(body, CONFIG)
    assert answer["response"]["allowed"] is True
    assert decision.outcome not in (Outcome.BAD_REQUEST, Outcome.ERROR), decision.reason
    if decision.operations:
        apply(body["request"]["object"], decision.operations)
