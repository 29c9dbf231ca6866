"""How a cell's assignments and imports change what the kernel remembers: `device =
torch.device("cuda")` binds a CUDA device, `device = "cpu"` unbinds it, `use_cuda =
torch.cuda.is_available()` makes a guard, `import cupy as cp` an alias."""

from __future__ import annotations

import ast

from gpushift_jupyter.classifier.devices import (
    GuardKind,
    contains_availability,
    dotted,
    eval_device,
    guard_kind,
)
from gpushift_jupyter.classifier.rules import (
    GPU_LIBRARIES,
    IMPORT_ONLY_LIBRARIES,
    DeviceKind,
    holds_device_index,
    is_device_like_name,
    mentions_gpu,
)
from gpushift_jupyter.classifier.state import KernelState


def bind_import(node: ast.Import | ast.ImportFrom, state: KernelState) -> list[str]:
    """Record the names an import binds; the rule when it imports a GPU-only library."""
    modules: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            modules.append(alias.name)
            if alias.asname:
                state.bind_alias(alias.asname, alias.name)
            else:
                root = alias.name.split(".", 1)[0]
                state.bind_alias(root, root)
    else:
        if node.level or not node.module:
            for alias in node.names:
                state.forget(alias.asname or alias.name)
            return []
        modules.append(node.module)
        for alias in node.names:
            if alias.name != "*":
                state.bind_alias(alias.asname or alias.name, f"{node.module}.{alias.name}")
    rules: list[str] = []
    for module in modules:
        root = module.split(".", 1)[0]
        library = GPU_LIBRARIES.get(root) or IMPORT_ONLY_LIBRARIES.get(root)
        if library and f"{library}.import" not in rules:
            rules.append(f"{library}.import")
    return rules


def bind(
    target: ast.AST, value: ast.AST, state: KernelState, guarded: bool, *, iterating: bool = False
) -> str | None:
    """Bind `target = value` (or `for target in value`); the rule when the binding itself
    commits the kernel to a CUDA device (`DEVICE = "cuda"`)."""
    target_type = type(target)
    if target_type is not ast.Name:  # most targets are plain names: skip the other tests
        if target_type is ast.Tuple or target_type is ast.List:
            for element in target.elts:  # type: ignore[attr-defined]
                _forget_target(element, state)
            return None
        if target_type is ast.Starred:
            _forget_target(target.value, state)  # type: ignore[attr-defined]
            return None
        if target_type is ast.Subscript:
            key = target.slice  # type: ignore[attr-defined]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                return _literal_device_rule(key.value, value, state)
            return None
    name = dotted(target)
    if name is None:
        return None
    state.forget(name)
    kind, _ = eval_device(value, state, ints=holds_device_index(name) and not iterating)
    if kind is DeviceKind.CUDA and guarded:
        kind = DeviceKind.GUARDED
    if kind is not DeviceKind.UNKNOWN:
        state.devices[name] = kind
        state.changed()
        return None if iterating or guarded else _literal_device_rule(name, value, state)
    if contains_availability(value, state):
        state.add_guard(name)
    elif _is_switch_on(value) and mentions_gpu(name) and not guarded:
        state.forced.add(name)
        state.changed()
    elif isinstance(value, ast.Name | ast.Attribute) and not iterating:
        source = dotted(value)
        if source:
            head, dot, rest = source.partition(".")
            module = state.resolve(head) + dot + rest
            if module.split(".", 1)[0] in GPU_LIBRARIES:
                state.bind_alias(name, module)  # `xp = cp`
            elif source in state.gpu_functions:
                state.gpu_functions.add(name)
                state.changed()
    return None


def _literal_device_rule(name: str, value: ast.AST, state: KernelState) -> str | None:
    # `torch.device("cuda")` and `jax.devices("gpu")` are reported by the call rules; here
    # only a device written as a literal string into a device-named variable or key.
    if not is_device_like_name(name):
        return None
    while isinstance(value, ast.IfExp) and guard_kind(value.test, state) is GuardKind.FORCED:
        value = value.body  # `"cuda" if USE_GPU else "cpu"` with USE_GPU = True
    if isinstance(value, ast.Constant | ast.JoinedStr):
        kind, _ = eval_device(value, state, ints=False)
        if kind is DeviceKind.CUDA and not _is_digit_string(value):
            return "device.cuda_binding"
    return None


def _is_digit_string(value: ast.AST) -> bool:
    return isinstance(value, ast.Constant) and str(value.value).strip().isdigit()


def _is_switch_on(value: ast.AST) -> bool:
    return isinstance(value, ast.Constant) and value.value in {True, "1", "true", "True"}


def _forget_target(target: ast.AST, state: KernelState) -> None:
    if isinstance(target, ast.Starred):
        target = target.value
    if isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            _forget_target(element, state)
        return
    name = dotted(target)
    if name:
        state.forget(name)


def default_hits(args: ast.arguments, state: KernelState) -> list[tuple[ast.AST, str]]:
    """`def train(model, device="cuda")`: a CUDA default is a device the function will use."""
    positional = [*args.posonlyargs, *args.args]
    pairs: list[tuple[ast.arg, ast.expr | None]] = list(
        zip(positional[len(positional) - len(args.defaults):], args.defaults, strict=True)
    )
    pairs += list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
    hits: list[tuple[ast.AST, str]] = []
    for parameter, default in pairs:
        if default is None or not is_device_like_name(parameter.arg):
            continue
        kind, via = eval_device(default, state, ints=True)
        if kind is DeviceKind.CUDA:
            hits.append((default, "state.cuda_device" if via else "device_kwarg.cuda"))
    return hits
