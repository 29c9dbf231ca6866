import pytest

from gpushift_webhook.patches import PatchBuilder, PatchConflict, apply, escape, pointer


def test_escape_slash_and_tilde():
    assert escape("gpushift.io/injected") == "gpushift.io~1injected"
    assert escape("a~b/c") == "a~0b~1c"
    assert pointer(("metadata", "annotations", "x/y")) == "/metadata/annotations/x~1y"
    assert pointer(("spec", "containers", 0, "env")) == "/spec/containers/0/env"


def test_creates_missing_annotations_then_adds_below_it():
    pod = {"metadata": {"name": "p"}}
    patch = PatchBuilder(pod)
    patch.set_key(("metadata", "annotations"), "gpushift.io/a", "1")
    patch.set_key(("metadata", "annotations"), "gpushift.io/b", "2")
    ops = patch.operations
    assert ops[0] == {"op": "add", "path": "/metadata/annotations",
                      "value": {"gpushift.io/a": "1"}}
    assert ops[1]["path"] == "/metadata/annotations/gpushift.io~1b"
    annotations = apply(pod, ops)["metadata"]["annotations"]
    assert annotations == {"gpushift.io/a": "1", "gpushift.io/b": "2"}


def test_existing_annotations_are_kept():
    pod = {"metadata": {"annotations": {"keep": "me"}}}
    patch = PatchBuilder(pod)
    patch.set_key(("metadata", "annotations"), "gpushift.io/a", "1")
    assert apply(pod, patch.operations)["metadata"]["annotations"] == {"keep": "me",
                                                                      "gpushift.io/a": "1"}


def test_null_parent_counts_as_missing():
    pod = {"metadata": {"annotations": None}}
    patch = PatchBuilder(pod)
    patch.set_key(("metadata", "annotations"), "a", "1")
    assert apply(pod, patch.operations)["metadata"]["annotations"] == {"a": "1"}


def test_append_creates_list_then_appends_with_dash():
    pod = {"spec": {"containers": [{"name": "c"}]}}
    patch = PatchBuilder(pod)
    patch.append(("spec", "initContainers"), {"name": "one"})
    patch.append(("spec", "initContainers"), {"name": "two"})
    patch.append(("spec", "containers"), {"name": "three"})
    ops = patch.operations
    assert ops[0]["path"] == "/spec/initContainers" and ops[0]["value"] == [{"name": "one"}]
    assert ops[1]["path"] == "/spec/initContainers/-"
    assert ops[2]["path"] == "/spec/containers/-"
    result = apply(pod, ops)
    assert [c["name"] for c in result["spec"]["initContainers"]] == ["one", "two"]
    assert [c["name"] for c in result["spec"]["containers"]] == ["c", "three"]


def test_creates_several_missing_levels_at_once():
    pod = {"metadata": {}}
    patch = PatchBuilder(pod)
    patch.append(("spec", "volumes"), {"name": "v"})
    patch.append(("spec", "volumes"), {"name": "w"})
    assert patch.operations[0] == {"op": "add", "path": "/spec",
                                   "value": {"volumes": [{"name": "v"}]}}
    assert apply(pod, patch.operations)["spec"]["volumes"] == [{"name": "v"}, {"name": "w"}]


def test_env_of_container_by_index():
    pod = {"spec": {"containers": [{"name": "a"}, {"name": "b", "env": [{"name": "X"}]}]}}
    patch = PatchBuilder(pod)
    patch.append(("spec", "containers", 0, "env"), {"name": "Y", "value": "1"})
    patch.append(("spec", "containers", 1, "env"), {"name": "Z", "value": "2"})
    result = apply(pod, patch.operations)
    assert result["spec"]["containers"][0]["env"] == [{"name": "Y", "value": "1"}]
    assert [e["name"] for e in result["spec"]["containers"][1]["env"]] == ["X", "Z"]


def test_original_is_not_modified():
    pod = {"metadata": {}}
    patch = PatchBuilder(pod)
    patch.set_key(("metadata", "annotations"), "a", "1")
    apply(pod, patch.operations)
    assert pod == {"metadata": {}}
    assert not PatchBuilder(pod)


@pytest.mark.parametrize("key", ["a/b", "a~b", "~/", "plain"])
def test_escaped_keys_round_trip(key):
    pod = {"metadata": {"annotations": {}}}
    patch = PatchBuilder(pod)
    patch.set_key(("metadata", "annotations"), key, "v")
    assert apply(pod, patch.operations)["metadata"]["annotations"] == {key: "v"}


@pytest.mark.parametrize(("pod", "call"), [
    ({"spec": {"volumes": {"not": "a list"}}}, lambda p: p.append(("spec", "volumes"), {})),
    ({"metadata": {"annotations": ["x"]}},
     lambda p: p.set_key(("metadata", "annotations"), "k", "v")),
    ({"spec": "text"}, lambda p: p.append(("spec", "volumes"), {})),
])
def test_wrong_types_in_the_original_are_refused_not_patched(pod, call):
    with pytest.raises(PatchConflict):
        call(PatchBuilder(pod))
