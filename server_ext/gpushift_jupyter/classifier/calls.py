"""Rules for one call expression: `x.cuda()`, `.to("cuda")`, `device=0`, `tf.device(...)`,
CUDA-only APIs. The caller walks the tree and decides whether a hit counts (guards)."""

from __future__ import annotations

import ast
from functools import lru_cache

from gpushift_jupyter.classifier.devices import dotted, eval_device, qualname
from gpushift_jupyter.classifier.rules import (
    DISPLAY_CALLS,
    GPU_CALLS,
    GPU_LIBRARIES,
    GPU_LIBRARY_CHECKS,
    GPU_METHODS,
    NUMBA_CUDA_SAFE,
    TF_GPU_CONFIG,
    TORCH_CUDA_SAFE,
    TORCH_CUDA_TENSOR_TYPES,
    DeviceKind,
)
from gpushift_jupyter.classifier.state import KernelState

Hit = tuple[ast.AST, str]  # (node whose line is reported, rule)

_TRAINING_CONFIG_SUFFIXES = ("TrainingArguments", "Config")
_GPU_ACCELERATORS = frozenset({"gpu", "cuda"})
_GPU_TREE_SETTINGS = frozenset({"gpu_hist", "gpu_exact", "gpu_predictor"})
_GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
_FLASH_ATTENTION = frozenset({"flash_attention_2", "flash_attention_3"})
# First parts of every name `_named_call_hits` has a rule for (besides GPU_CALLS and
# `*init_process_group`), and every keyword `_keyword_hits` looks at.
_NAMED_ROOTS = frozenset({"torch", "numba", "tensorflow", "jax", *GPU_LIBRARIES})
_KEYWORDS = frozenset({
    "device", "device_type", "device_map", "map_location", "devices", "accelerator", "gpus",
    "tree_method", "predictor", "gpu_id", "task_type", "target", "backend",
    "attn_implementation", "load_in_4bit", "load_in_8bit", "fp16", "providers",
})


def _string(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _device_hit(node: ast.AST, state: KernelState, rule: str, *, ints: bool) -> list[Hit]:
    kind, via = eval_device(node, state, ints=ints)
    if kind is not DeviceKind.CUDA:
        return []
    return [(node, "state.cuda_device" if via else rule)]


def call_hits(call: ast.Call, state: KernelState, name: str | None = None) -> list[Hit]:
    """Every GPU need that this call expresses by itself. `name`: the callee's qualname
    ("" when it has none), when the caller has it already."""
    hits: list[Hit] = []
    func = call.func
    if name is None:
        name = qualname(func, state) or ""
    method = func.attr if type(func) is ast.Attribute else ""
    if method == "cuda":
        hits.append((call, "torch.cuda_method"))
    elif method == "to" and not name.startswith(("numba.", "cupy.")):
        for arg in call.args[:1]:
            hits += _device_hit(arg, state, "torch.to_cuda", ints=True)
    elif method in GPU_METHODS:
        hits.append((call, GPU_METHODS[method]))
    # Most calls (`np.zeros`, `model(x)`, `print`) match no rule: the cheap tests below
    # skip the rule chains that could not match (each test is what every branch requires).
    root = name.partition(".")[0]
    if root in _NAMED_ROOTS or name in GPU_CALLS or name.endswith("init_process_group"):
        hits += _named_call_hits(call, name, state)
    if call.keywords:
        hits += _keyword_hits(call, name, state)
    if state.gpu_functions or (call.args and state.devices):
        hits += _state_hits(call, name, state)
    return hits


def _named_call_hits(call: ast.Call, name: str, state: KernelState) -> list[Hit]:
    args = call.args
    if name in GPU_CALLS:
        return [(call, GPU_CALLS[name])]
    if name.startswith("torch.cuda."):
        last = name.rsplit(".", 1)[-1]
        if name.startswith("torch.cuda.amp."):
            return [(call, "torch.cuda_amp")]
        return [] if last in TORCH_CUDA_SAFE else [(call, "torch.cuda_call")]
    if name.startswith("numba.cuda."):
        return [] if name.rsplit(".", 1)[-1] in NUMBA_CUDA_SAFE else [(call, "numba.cuda_call")]
    root = name.split(".", 1)[0]
    if root in GPU_LIBRARIES and name not in GPU_LIBRARY_CHECKS:
        return [(call, f"{GPU_LIBRARIES[root]}.call")]
    if name == "torch.device" and args:
        return _device_hit(args[0], state, "torch.device_cuda", ints=True)
    if name == "tensorflow.device" and args:
        return _device_hit(args[0], state, "tf.gpu_device", ints=False)
    if name in {"torch.autocast", "torch.amp.autocast", "torch.amp.GradScaler"} and args:
        return _device_hit(args[0], state, "torch.cuda_amp", ints=False)
    if name == "torch.set_default_device" and args:
        return _device_hit(args[0], state, "torch.default_device_cuda", ints=True)
    if name == "torch.set_default_tensor_type" and args:
        type_name = _string(args[0]) or qualname(args[0], state) or ""
        return [(call, "torch.cuda_tensor_type")] if type_name.startswith("torch.cuda.") else []
    if name.endswith("init_process_group"):
        backend = args[0] if args else _keyword(call, "backend")
        return [(call, "torch.nccl")] if backend is not None and _string(backend) == "nccl" else []
    if name in {"jax.devices", "jax.local_devices"}:
        target = args[0] if args else _keyword(call, "backend")
        return [] if target is None else _device_hit(target, state, "jax.gpu_devices", ints=False)
    if name == "jax.device_put" and len(args) > 1:
        return _device_hit(args[1], state, "jax.device_put_gpu", ints=False)
    if name == "jax.config.update" and len(args) > 1:
        setting = _string(args[0]) or ""
        if setting in {"jax_platform_name", "jax_platforms"}:
            return _device_hit(args[1], state, "jax.gpu_platform", ints=False)
        return []
    if name in TF_GPU_CONFIG:
        if args and isinstance(args[0], ast.List) and not args[0].elts:
            return []  # set_visible_devices([], "GPU") hides the GPUs: CPU-only
        return [(call, "tf.gpu_config")]
    if name == "tensorflow.distribute.OneDeviceStrategy" and args:
        return _device_hit(args[0], state, "tf.gpu_strategy", ints=False)
    if name in {"os.system", "os.popen"} or name.startswith("subprocess."):
        return []  # shell commands are read by the analyzer (they need the shell rules)
    return []


def _keyword(call: ast.Call, keyword: str) -> ast.expr | None:
    for item in call.keywords:
        if item.arg == keyword:
            return item.value
    return None


def _keyword_hits(call: ast.Call, name: str, state: KernelState) -> list[Hit]:
    hits: list[Hit] = []
    for item in call.keywords:
        key, value = item.arg, item.value
        if key not in _KEYWORDS:
            continue
        text = (_string(value) or "").lower()
        if key in {"device", "device_type"}:
            hits += _device_hit(value, state, "device_kwarg.cuda", ints=True)
        elif key == "device_map":
            hits += _device_hit(value, state, "hf.device_map_cuda", ints=True)
        elif key == "map_location":
            hits += _device_hit(value, state, "torch.map_location_cuda", ints=True)
        elif key == "devices" and isinstance(value, ast.List | ast.Tuple):
            hits += _device_hit(value, state, "device_kwarg.cuda", ints=False)
        elif key == "accelerator" and text in _GPU_ACCELERATORS:
            hits.append((value, "lightning.gpu_accelerator"))
        elif key == "gpus" and _is_gpu_count(value):
            hits.append((value, "lightning.gpus"))
        elif _is_xgboost_gpu(key, text, value):
            hits.append((value, "xgboost.gpu"))
        elif key == "task_type" and text == "gpu":
            hits.append((value, "catboost.gpu"))
        elif key == "target" and text in {"cuda", "gpu"}:
            hits.append((value, "numba.cuda_target"))
        elif key == "backend" and text in {"cuda", "gpu"}:
            hits.append((value, "jax.gpu_backend"))
        elif key == "attn_implementation" and text in _FLASH_ATTENTION:
            hits.append((value, "hf.flash_attention"))
        elif key in {"load_in_4bit", "load_in_8bit"} and _is_true(value):
            hits.append((value, "hf.bitsandbytes"))
        elif key == "fp16" and _is_true(value) and name.endswith(_TRAINING_CONFIG_SUFFIXES):
            hits.append((value, "hf.fp16_training"))
        elif key == "providers" and _gpu_providers_only(value):
            hits.append((value, "onnxruntime.cuda_provider"))
    return hits


def _is_xgboost_gpu(key: str | None, text: str, value: ast.AST) -> bool:
    if key in {"tree_method", "predictor"}:
        return text in _GPU_TREE_SETTINGS
    return key == "gpu_id" and _is_gpu_count(value, zero=True)


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_gpu_count(node: ast.AST, *, zero: bool = False) -> bool:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value != 0 or zero
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.strip() not in {"", "0", "None"}
    return isinstance(node, ast.List | ast.Tuple) and bool(node.elts)


def _gpu_providers_only(node: ast.AST) -> bool:
    # A list that also names the CPU falls back by itself, like device_map="auto".
    if not isinstance(node, ast.List | ast.Tuple):
        return False
    names = {_string(elt) or "" for elt in node.elts}
    return bool(names & _GPU_PROVIDERS) and "CPUExecutionProvider" not in names


def _state_hits(call: ast.Call, name: str, state: KernelState) -> list[Hit]:
    hits: list[Hit] = []
    func = call.func
    target = func.value if type(func) is ast.Subscript else func
    if type(target) is ast.Name and target.id in state.gpu_functions:
        hits.append((call, "state.gpu_function"))
    devices = state.devices
    if not devices or name in DISPLAY_CALLS or name.startswith("logging.") \
            or name.endswith((".info", ".debug")):
        return hits
    # A device bound earlier to CUDA, handed to a function: it will be used there (what
    # `_device_hit` finds for a name: only a name bound to CUDA counts).
    for arg in call.args:
        kind = type(arg)
        if (kind is ast.Name or kind is ast.Attribute) \
                and devices.get(dotted(arg) or "") is DeviceKind.CUDA:
            hits.append((arg, "state.cuda_device"))
    return hits


def attribute_hit(node: ast.Attribute, name: str) -> str | None:
    """A rule for a dotted name in an expression that is not itself called
    (`torch.cuda.FloatTensor`, `cp.ndarray`)."""
    return _attribute_rule(name)


@lru_cache(maxsize=4096)
def _attribute_rule(name: str) -> str | None:
    # A function of the name alone, asked for every `torch.*` chain a cell holds (the same
    # few names again and again): remembered.
    if TORCH_CUDA_TENSOR_TYPES.match(name):
        return "torch.cuda_tensor_type"
    root = name.split(".", 1)[0]
    if root in GPU_LIBRARIES and name not in GPU_LIBRARY_CHECKS:
        return f"{GPU_LIBRARIES[root]}.call"
    return None
