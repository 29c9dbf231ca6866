"""Only what gpushift can see, and images that carry it: the server-type decision of
admission (and the webhook's cache of server types), the unmapped-image refusal of the
move planner and of the sidecar's move request, and the settings that steer both."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from kubeflow_pods import NAMESPACE, notebook_pod

from gpushift_core.admin_settings import (
    ConfigError,
    ImagePair,
    ServerTypeSettings,
    parse_admin_settings,
)
from gpushift_core.move_plan import PlanError, image_refusal, plan_move
from gpushift_core.patches import apply
from gpushift_webhook.config import WebhookConfig, parse_config
from gpushift_webhook.injection import Outcome, plan_injection
from gpushift_webhook.review import review
from gpushift_webhook.server_types import server_types

sys.path.insert(0, str(Path(__file__).resolve().parent / "sidecar"))
from sidecar_environ import make_environ
from test_move_plan import CPU, CUDA, IMAGE_MAP, NVIDIA, kubeflow_notebook

from gpushift_sidecar.api_requests import ApiError, parse_migration_request
from gpushift_sidecar.env import SidecarEnv

VSCODE, RSTUDIO = "group-one", "group-two"


def sidecar_env(decision_ops: list[dict[str, Any]], pod: dict[str, Any]) -> dict[str, str]:
    patched = apply(pod, decision_ops)
    (sidecar,) = patched["spec"]["initContainers"]
    return {e["name"]: e.get("value", "") for e in sidecar["env"]}


# -- admission: server types -------------------------------------------------------------


@pytest.mark.parametrize(("server_type", "outcome"), [
    (None, Outcome.INJECTED),        # not in the cache yet: injected, the sidecar decides
    ("", Outcome.INJECTED),          # a Notebook without the annotation is Jupyter
    ("jupyter", Outcome.INJECTED),
    (VSCODE, Outcome.SKIPPED),       # by default VSCode and RStudio get nothing
    (RSTUDIO, Outcome.SKIPPED),
])
def test_by_default_only_jupyter_servers_are_injected(server_type, outcome):
    decision = plan_injection(notebook_pod(), NAMESPACE, WebhookConfig(), server_type)
    assert decision.outcome is outcome, decision.reason
    if outcome is Outcome.SKIPPED:
        assert not decision.operations
        assert decision.reason == (f"server type {server_type!r} is in neither "
                                   "server_types.inject nor server_types.inert")


def test_an_admin_can_inject_vscode_and_rstudio_inert():
    config = WebhookConfig(server_types=ServerTypeSettings(inert=[VSCODE, RSTUDIO]))
    pod = notebook_pod()
    decision = plan_injection(pod, NAMESPACE, config, VSCODE)
    assert decision.outcome is Outcome.INJECTED
    assert decision.reason == "sidecar injected inert (server type 'group-one')"
    # The same sidecar: it learns the type from its Notebook and stays inert.
    assert decision.operations == plan_injection(pod, NAMESPACE, config, "jupyter").operations
    assert plan_injection(pod, NAMESPACE, config, "group-three").outcome is Outcome.SKIPPED


def test_review_looks_the_server_type_up_by_namespace_and_notebook():
    pod = notebook_pod("code")
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "namespace": NAMESPACE, "operation": "CREATE", "object": pod}}
    _, skipped = review(body, WebhookConfig(), {(NAMESPACE, "code"): VSCODE})
    assert skipped.outcome is Outcome.SKIPPED
    _, other_ns = review(body, WebhookConfig(), {("elsewhere", "code"): VSCODE})
    assert other_ns.outcome is Outcome.INJECTED
    _, no_cache = review(body, WebhookConfig())
    assert no_cache.outcome is Outcome.INJECTED


def test_the_cache_maps_each_notebook_to_its_server_type():
    listed = [
        {"metadata": {"namespace": "a", "name": "lab", "annotations": {
            "notebooks.kubeflow.org/server-type": "jupyter"}}},
        {"metadata": {"namespace": "a", "name": "code", "annotations": {
            "notebooks.kubeflow.org/server-type": VSCODE}}},
        {"metadata": {"namespace": "b", "name": "plain"}},
        {"metadata": {"name": "no-namespace"}},
    ]
    assert server_types(listed) == {("a", "lab"): "jupyter", ("a", "code"): VSCODE,
                                    ("b", "plain"): ""}


def test_the_sidecar_is_told_the_notebook_image_and_resources(tmp_path):
    pod = notebook_pod()
    decision = plan_injection(pod, NAMESPACE, WebhookConfig())
    env = sidecar_env(decision.operations, pod)
    assert env["GPUSHIFT_NOTEBOOK_IMAGE"] == pod["spec"]["containers"][0]["image"]
    sent = json.loads(env["GPUSHIFT_NOTEBOOK_RESOURCES"])
    assert sent == pod["spec"]["containers"][0].get("resources", {})
    given = env["GPUSHIFT_NOTEBOOK_RESOURCES"]
    read = SidecarEnv.from_environ(make_environ(tmp_path, GPUSHIFT_NOTEBOOK_RESOURCES=given))
    assert read.notebook_resources == sent
    unreadable = make_environ(tmp_path, GPUSHIFT_NOTEBOOK_RESOURCES="[not json")
    assert SidecarEnv.from_environ(unreadable).notebook_resources == {}


# -- the settings ---------------------------------------------------------------------------


def test_resources_orjson_cannot_write_reach_the_sidecar_sorted_all_the_same():
    """An int beyond 64 bits (a pod parsed by json may hold one; orjson refuses it): the
    same compact, sorted text, from json; the pod is injected, not an internal error."""
    pod = notebook_pod()
    resources = {"requests": {"memory": 2**70, "cpu": "500m"}, "limits": {"cpu": 1}}
    pod["spec"]["containers"][0]["resources"] = resources
    decision = plan_injection(pod, NAMESPACE, WebhookConfig())
    assert decision.outcome is Outcome.INJECTED, decision.reason
    text = sidecar_env(decision.operations, pod)["GPUSHIFT_NOTEBOOK_RESOURCES"]
    assert text == ('{"limits":{"cpu":1},"requests":{"cpu":"500m",'
                    '"memory":1180591620717411303424}}')
    assert json.loads(text) == resources
    answer, _ = review({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "request": {"uid": "u", "kind": {"kind": "Pod"}, "namespace": NAMESPACE,
                                    "object": pod}}, WebhookConfig())
    assert answer["response"]["patchType"] == "JSONPatch"


def test_settings_defaults_round_trip_to_the_sidecar():
    config = parse_config({"unmapped_image": "keep",
                           "server_types": {"inject": ["jupyter"], "inert": [VSCODE]}})
    settings = parse_admin_settings(config.sidecar_settings_json)
    assert settings.unmapped_image == "keep"
    assert settings.server_types == ServerTypeSettings(inject=["jupyter"], inert=[VSCODE])
    assert WebhookConfig().admin_settings().unmapped_image == "ask"


@pytest.mark.parametrize(("data", "message"), [
    ({"unmapped_image": "prompt"}, "unmapped_image: 'prompt' is not one of ask, refuse, keep"),
    ({"server_types": {"inject": ["jupyter"], "inert": ["jupyter"]}},
     "server_types: jupyter both in inject and inert"),
    ({"server_types": {"inert": [" "]}}, "server_types.inert: a server type must not be empty"),
    ({"server_types": {"injct": []}}, "server_types: unknown key(s) injct"),
])
def test_bad_settings_are_named(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(data)
    with pytest.raises(ConfigError):  # the sidecar refuses what the webhook refuses
        parse_admin_settings(json.dumps({**WebhookConfig().sidecar_settings(), **data}))


# -- images: the planner -----------------------------------------------------------------


def test_image_refusal_names_the_image_and_the_setting():
    assert image_refusal(CPU, IMAGE_MAP) is None
    assert image_refusal(CUDA, IMAGE_MAP) is None  # already a CUDA image of a pair
    refusal = image_refusal("my/own-image:1", IMAGE_MAP)
    assert refusal is not None
    assert "my/own-image:1" in refusal and "unmapped_image: refuse" in refusal
    asked = image_refusal("my/own-image:1", IMAGE_MAP, "ask")
    assert asked is not None and "Move anyway, keeping this image" in asked
    assert image_refusal(None, IMAGE_MAP) is None


def test_a_move_to_gpu_of_an_unmapped_image_is_refused_or_keeps_it():
    nb = kubeflow_notebook()
    nb["spec"]["template"]["spec"]["containers"][0]["image"] = "my/own-image:1"
    with pytest.raises(PlanError, match="my/own-image:1 has no CUDA image"):
        plan_move(nb, "gpu", NVIDIA, IMAGE_MAP, unmapped_image="refuse")
    with pytest.raises(PlanError, match="Move anyway"):  # "ask" is answered before planning
        plan_move(nb, "gpu", NVIDIA, IMAGE_MAP, unmapped_image="ask")
    kept = plan_move(nb, "gpu", NVIDIA, IMAGE_MAP, unmapped_image="keep")
    assert kept.changes and "image my/own-image:1 is not in the image map: kept" in kept.summary
    # A Notebook already as the move wants it is not refused: there is nothing to do.
    on_gpu = apply(nb, kept.operations)
    assert plan_move(on_gpu, "gpu", NVIDIA, IMAGE_MAP, unmapped_image="refuse").operations == []


def test_a_mapped_image_moves_under_refuse():
    plan = plan_move(kubeflow_notebook(), "gpu", NVIDIA, IMAGE_MAP, unmapped_image="refuse")
    assert f"image {CPU} -> {CUDA}" in plan.summary


# -- images: the sidecar's move request, before anything is checkpointed ------------------


def _env(tmp_path: Path, image: str, unmapped: str = "refuse") -> SidecarEnv:
    config = WebhookConfig(profiles=[NVIDIA], default_profile=NVIDIA.name,
                           image_map=[ImagePair(cpu=CPU, cuda=CUDA)], unmapped_image=unmapped)
    return SidecarEnv.from_environ(make_environ(
        tmp_path, GPUSHIFT_SETTINGS=config.sidecar_settings_json,
        GPUSHIFT_NOTEBOOK_IMAGE=image))


def test_a_move_request_for_an_unmapped_image_is_409_at_once(tmp_path):
    body = {"target": "gpu", "reason": "manual"}
    with pytest.raises(ApiError) as refused:
        parse_migration_request(body, _env(tmp_path, "my/own-image:1"))
    assert (refused.value.status, refused.value.error) == (409, "image_unmapped")
    assert "my/own-image:1" in refused.value.detail
    assert refused.value.extra == {"image": "my/own-image:1", "profile": NVIDIA.name,
                                   "setting": "unmapped_image", "keep_allowed": False}
    # "refuse" holds even when the request says keep_image.
    with pytest.raises(ApiError):
        parse_migration_request({**body, "keep_image": True},
                                _env(tmp_path, "my/own-image:1"))
    # "ask": refused with keep_allowed until the user says keep_image.
    with pytest.raises(ApiError) as asked:
        parse_migration_request(body, _env(tmp_path, "my/own-image:1", "ask"))
    assert asked.value.extra["keep_allowed"] is True
    assert "Move anyway" in asked.value.detail
    kept = parse_migration_request({**body, "keep_image": True},
                                   _env(tmp_path, "my/own-image:1", "ask"))
    assert kept.keep_image and kept.profile == NVIDIA.name
    with pytest.raises(ApiError) as bad:
        parse_migration_request({**body, "keep_image": "yes"}, _env(tmp_path, CPU))
    assert bad.value.status == 400
    # keep, a mapped image, an unknown image (no env) and a move to CPU all go on.
    assert parse_migration_request(body, _env(tmp_path, "my/own-image:1", "keep")).profile
    assert parse_migration_request(body, _env(tmp_path, CPU)).profile == NVIDIA.name
    assert parse_migration_request(body, _env(tmp_path, "")).profile == NVIDIA.name


def test_the_users_keep_image_answers_ask_only() -> None:
    from gpushift_core.move_plan import unmapped_image_setting

    assert unmapped_image_setting("ask", True) == "keep"
    assert unmapped_image_setting("ask", False) == "ask"
    assert unmapped_image_setting("refuse", True) == "refuse"  # the admin's word stands
    assert unmapped_image_setting("keep", False) == "keep"
