import base64
import json

import pytest

from gpushift_core.patches import (
    PatchBuilder,
    PatchConflict,
    apply,
    dumps,
    encode,
    escape,
    pointer,
)


def test_escape_slash_and_tilde():
    assert escape("gpushift.io/injected") == "gpushift.io~1injected"
    assert escape("a~b/c") == "a~0b~1c"
    assert pointer(("metadata", "annotations", "x/y")) == "/metadata/annotations/x~1y"
    assert pointer(("spec", "containers", 0, "env")) == "/spec/containers/0/env"


def test_pointers_are_remembered_apart_for_paths_that_compare_equal():
    # ("a", 1) == ("a", True): one cache key, written two ways, in either order.
    for _ in range(2):
        assert pointer(("seg", True)) == "/seg/True"
        assert pointer(("seg", 1)) == "/seg/1"
        assert pointer(("seg", 1.0)) == "/seg/1.0"
        assert pointer(("other", 2)) == "/other/2"
        assert pointer(("other", 2, "x/y")) == "/other/2/x~1y"
        assert pointer(()) == ""


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


# -- replace / remove ------------------------------------------------------------------


def test_replace_and_remove_keys_with_escaping():
    nb = {"spec": {"limits": {"nvidia.com/gpu": "1", "cpu": "2"}, "image": "a"}}
    patch = PatchBuilder(nb)
    patch.replace(("spec", "image"), "b")
    patch.remove(("spec", "limits", "nvidia.com/gpu"))
    assert patch.operations == [
        {"op": "replace", "path": "/spec/image", "value": "b"},
        {"op": "remove", "path": "/spec/limits/nvidia.com~1gpu"},
    ]
    assert apply(nb, patch.operations) == {"spec": {"limits": {"cpu": "2"}, "image": "b"}}


def test_replace_and_remove_refuse_missing_paths():
    nb = {"spec": {"a": 1, "list": [1], "text": "x"}}
    for call in (lambda p: p.remove(("spec", "b")),
                 lambda p: p.replace(("spec", "b"), 1),
                 lambda p: p.remove(("spec", "list", 1)),
                 lambda p: p.remove(("spec", "text", "x")),
                 lambda p: p.remove(())):
        patch = PatchBuilder(nb)
        with pytest.raises(PatchConflict):
            call(patch)
        assert patch.operations == []


def test_replace_a_null_value():
    nb = {"spec": {"nodeSelector": None}}
    patch = PatchBuilder(nb)
    patch.replace(("spec", "nodeSelector"), {"a": "b"})
    assert apply(nb, patch.operations) == {"spec": {"nodeSelector": {"a": "b"}}}


def test_later_operations_see_a_removal():
    nb = {"spec": {"limits": {"gpu": "1"}}}
    patch = PatchBuilder(nb)
    patch.remove(("spec", "limits", "gpu"))
    assert patch.value_at(("spec", "limits")) == {}
    patch.remove(("spec", "limits"))
    assert patch.value_at(("spec", "limits"), "gone") == "gone"
    # The parent is gone again: set_key creates it, as for a missing one.
    patch.set_key(("spec", "limits"), "cpu", "1")
    with pytest.raises(PatchConflict):
        patch.remove(("spec", "limits", "gpu"))
    assert apply(nb, patch.operations) == {"spec": {"limits": {"cpu": "1"}}}
    assert patch.operations[-1] == {"op": "add", "path": "/spec/limits", "value": {"cpu": "1"}}


def test_removing_list_elements_shifts_later_ones():
    nb = {"spec": {"tolerations": ["a", "b", "c", "d"]}}
    patch = PatchBuilder(nb)
    patch.remove(("spec", "tolerations", 1))
    assert patch.value_at(("spec", "tolerations")) == ["a", "c", "d"]
    patch.remove(("spec", "tolerations", 2))
    patch.append(("spec", "tolerations"), "e")
    assert patch.operations[1] == {"op": "remove", "path": "/spec/tolerations/2"}
    assert apply(nb, patch.operations)["spec"]["tolerations"] == ["a", "c", "e"]


def test_adds_before_a_replace_are_seen_and_not_changed_afterwards():
    pod = {"metadata": {"name": "p"}}
    patch = PatchBuilder(pod)
    patch.set_key(("metadata", "annotations"), "a", "1")
    patch.replace(("metadata", "name"), "q")
    patch.set_key(("metadata", "annotations"), "b", "2")
    patch.remove(("metadata", "annotations", "a"))
    ops = patch.operations
    # The first add still carries what it added, not what later operations made of it.
    assert ops[0] == {"op": "add", "path": "/metadata/annotations", "value": {"a": "1"}}
    assert apply(pod, ops) == {"metadata": {"name": "q", "annotations": {"b": "2"}}}
    assert pod == {"metadata": {"name": "p"}}


def test_replace_then_add_below_the_new_value():
    nb = {"spec": {"resources": "odd"}}
    patch = PatchBuilder(nb)
    patch.replace(("spec", "resources"), {})
    patch.set_key(("spec", "resources", "limits"), "gpu", "1")
    value = {"x": 1}
    patch.set_key(("spec",), "x", value)
    value["x"] = 2  # the caller's object changes after the call: the document does not
    patch.set_key(("spec", "x"), "y", 3)
    result = apply(nb, patch.operations)
    assert result["spec"]["resources"] == {"limits": {"gpu": "1"}}
    assert patch.value_at(("spec", "x")) == {"x": 1, "y": 3}


def test_test_operations_are_kept_in_order_with_replace():
    nb = {"metadata": {"resourceVersion": "7"}, "spec": {"a": 1}}
    patch = PatchBuilder(nb)
    patch.test(("metadata", "resourceVersion"), "7")
    patch.replace(("spec", "a"), 2)
    assert patch.operations[0] == {"op": "test", "path": "/metadata/resourceVersion",
                                   "value": "7"}
    assert apply(nb, patch.operations)["spec"] == {"a": 2}
    stale = {"metadata": {"resourceVersion": "8"}, "spec": {"a": 1}}
    import jsonpatch
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        apply(stale, patch.operations)


def test_value_at_reads_the_original_when_nothing_changed():
    nb = {"spec": {"a": [1, {"b": None}]}}
    patch = PatchBuilder(nb)
    assert patch.value_at(("spec", "a", 1, "b"), "d") is None
    assert patch.value_at(("spec", "a", 2), "d") == "d"
    assert patch.value_at(("spec", "a", 0, "x"), "d") == "d"
    assert not patch


@pytest.mark.parametrize("value", [
    {"b": [1.5, "é", None, True], "a": {"z": 1, "y": "x/~"}},
    {"b": 2**70, "a": [-(2**64), 1]},  # beyond orjson's 64 bits: json writes it
])
def test_dumps_is_compact_utf8_json_with_or_without_sorted_keys(value):
    for sort_keys in (False, True):
        assert dumps(value, sort_keys=sort_keys) == json.dumps(
            value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False).encode()
    ops = [{"op": "add", "path": "/a", "value": value}]
    assert json.loads(base64.b64decode(encode(ops))) == ops
