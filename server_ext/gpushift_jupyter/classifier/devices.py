"""Reading device expressions and guards: what `torch.device("cuda" if ok else "cpu")` or
`if torch.cuda.is_available():` mean for a GPU need."""

from __future__ import annotations

import ast
import bisect
from enum import Enum

from gpushift_jupyter.classifier.rules import (
    AVAILABILITY_CALLS,
    DEFAULT_ALIASES,
    DeviceKind,
    device_string_kind,
    mentions_gpu,
)
from gpushift_jupyter.classifier.state import KernelState


class GuardKind(Enum):
    """How a condition gates the code under it."""

    NONE = "none"  # not about GPUs
    GUARD = "guard"  # true only where a GPU is there (or a user switch we cannot see)
    FORCED = "forced"  # a switch this kernel set on: the code runs unconditionally


def dotted(node: ast.AST) -> str | None:
    """`a.b.c` for a Name/Attribute chain, else None."""
    kind = type(node)
    if kind is ast.Name:  # the common cases (`x`, `np.zeros`) without building a list
        return node.id  # type: ignore[attr-defined,no-any-return]
    if kind is ast.Attribute and type(node.value) is ast.Name:  # type: ignore[attr-defined]
        return node.value.id + "." + node.attr  # type: ignore[attr-defined,no-any-return]
    parts: list[str] = []
    while kind is ast.Attribute:
        parts.append(node.attr)  # type: ignore[attr-defined]
        node = node.value  # type: ignore[attr-defined]
        kind = type(node)
    if kind is ast.Name:
        parts.append(node.id)  # type: ignore[attr-defined]
        parts.reverse()
        return ".".join(parts)
    return None


def qualname(node: ast.AST, state: KernelState) -> str | None:
    """The dotted name with its first part resolved through the kernel's imports
    (`cp.asarray` -> `cupy.asarray`)."""
    text = dotted(node)
    if text is None:
        return None
    head, dot, rest = text.partition(".")
    # state.resolve(head), inlined: this runs for every call a cell makes.
    resolved = state.aliases.get(head)  # (an alias is never None)
    if resolved is None:
        resolved = head if head in state.shadowed else DEFAULT_ALIASES.get(head, head)
    return resolved + dot + rest if dot else resolved


def is_availability_call(node: ast.AST) -> bool:
    """`torch.cuda.is_available()`, `tf.config.list_physical_devices("GPU")`, ..."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in AVAILABILITY_CALLS


_SKIPPED_FIELDS = frozenset({
    "ctx", "type_comment", "id", "attr", "arg", "conversion", "is_async", "op",
})
_NODE_FIELDS: dict[type, tuple[str, ...]] = {}


def subnodes(node: ast.AST) -> list[ast.AST]:
    """`node` and every node under it that can matter to a rule (all but contexts and
    operators). Like `ast.walk`, without its generator and generic field iteration: the
    guard and availability checks run on every test and assigned value of a cell."""
    nodes = [node]
    append = nodes.append
    fields_of = _NODE_FIELDS
    for current in nodes:  # grows while it is read: breadth first, as ast.walk
        kind = type(current)
        fields = fields_of.get(kind)
        if fields is None:
            fields = fields_of[kind] = tuple(
                field for field in getattr(kind, "_fields", ()) if field not in _SKIPPED_FIELDS
            )
        for field in fields:
            child = getattr(current, field, None)
            if type(child) is list:
                for item in child:
                    if isinstance(item, ast.AST):
                        append(item)
            elif isinstance(child, ast.AST):
                append(child)
    return nodes


def contains_availability(node: ast.AST, state: KernelState) -> bool:
    """Whether an expression asks if a GPU is there, directly or through a guard name."""
    lines = state.availability_lines
    if lines is not None:
        first = getattr(node, "lineno", 1)
        index = bisect.bisect_left(lines, first)
        if index == len(lines) or lines[index] > (getattr(node, "end_lineno", None) or first):
            return False
    guards = state.guards
    for child in subnodes(node):
        kind = type(child)
        if kind is ast.Call:
            func = child.func  # type: ignore[attr-defined]
            name = func.attr if type(func) is ast.Attribute else getattr(func, "id", "")
            if name in AVAILABILITY_CALLS:
                return True
        elif guards and (kind is ast.Name or kind is ast.Attribute) and dotted(child) in guards:
            return True
    return False


def guard_kind(test: ast.AST, state: KernelState) -> GuardKind:
    """Classify the condition of an `if`, `while`, conditional expression or `and`."""
    forced = False
    for child in subnodes(test):
        kind = type(child)
        if kind is ast.Call:
            func = child.func  # type: ignore[attr-defined]
            called = func.attr if type(func) is ast.Attribute else getattr(func, "id", "")
            if called in AVAILABILITY_CALLS:
                return GuardKind.GUARD
        elif kind is ast.Compare:
            compared = [child.left, *child.comparators]  # type: ignore[attr-defined]
            if any(_is_gpu_string(operand) for operand in compared):
                kinds = [_compared_device(operand, state) for operand in compared]
                if DeviceKind.CUDA in kinds:
                    forced = True
                else:
                    return GuardKind.GUARD
        elif kind is ast.Name or kind is ast.Attribute:
            name = dotted(child)
            if name is None:
                continue
            if name in state.guards:
                return GuardKind.GUARD
            if name in state.forced or state.devices.get(name) is DeviceKind.CUDA:
                forced = True
            elif mentions_gpu(name) and not name.startswith("torch.cuda"):
                # `if args.use_gpu:` — a switch we cannot see: the user decides at run time.
                return GuardKind.GUARD
    return GuardKind.FORCED if forced else GuardKind.NONE


def _is_gpu_string(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and device_string_kind(node.value) is DeviceKind.CUDA
        and not node.value.strip().isdigit()
    )


def _compared_device(node: ast.AST, state: KernelState) -> DeviceKind:
    # `device.type == "cuda"` and `str(device) == "cuda"` look at `device`.
    if isinstance(node, ast.Call) and node.args:
        node = node.args[0]
    if isinstance(node, ast.Attribute) and node.attr == "type":
        node = node.value
    name = dotted(node)
    return state.devices.get(name, DeviceKind.UNKNOWN) if name else DeviceKind.UNKNOWN


def eval_device(node: ast.AST, state: KernelState, *, ints: bool) -> tuple[DeviceKind, str]:
    """What device an expression names, and through which bound name ("" when literal).

    `ints`: whether a bare integer means a GPU index here (`.to(0)`, `device=0`).
    """
    # Dispatch on the exact node type (the parser makes no subclasses): most values met
    # (`np.zeros(...)`, `x + 1`) name no device, and a chain of isinstance tests cost more
    # than the answer.
    kind = type(node)
    if kind is ast.Constant:
        value = node.value  # type: ignore[attr-defined]
        if isinstance(value, str):
            return device_string_kind(value), ""
        if isinstance(value, int) and not isinstance(value, bool) and ints:
            return (DeviceKind.CUDA if value >= 0 else DeviceKind.CPU), ""
        return _UNKNOWN
    if kind is ast.Name or kind is ast.Attribute:
        name = dotted(node)
        if name is not None and name in state.devices:
            return state.devices[name], name
        return _UNKNOWN
    if kind is ast.Call:
        return _eval_device_call(node, state)  # type: ignore[arg-type]
    if kind not in _DEVICE_CONTAINERS:
        return _UNKNOWN
    if kind is ast.JoinedStr:
        head = node.values[0] if node.values else None  # type: ignore[attr-defined]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            prefix = head.value.lower().lstrip("/")
            if prefix.startswith(("cuda", "gpu", "device:gpu")):
                return DeviceKind.CUDA, ""
        return _UNKNOWN
    if kind is ast.Subscript:
        return eval_device(node.value, state, ints=False)  # type: ignore[attr-defined]
    if kind is ast.IfExp:
        assert isinstance(node, ast.IfExp)
        if guard_kind(node.test, state) is GuardKind.FORCED:
            return eval_device(node.body, state, ints=ints)
        return _combine([node.body, node.orelse], state, ints)
    if kind is ast.BoolOp:
        return _combine(node.values, state, ints)  # type: ignore[attr-defined]
    if kind is ast.Dict:
        return _first_cuda([eval_device(value, state, ints=True)
                            for value in node.values])  # type: ignore[attr-defined]
    # List, Tuple, Set
    return _first_cuda([eval_device(elt, state, ints=ints) for elt in node.elts])  # type: ignore[attr-defined]


_UNKNOWN = (DeviceKind.UNKNOWN, "")
_DEVICE_CONTAINERS = frozenset({
    ast.JoinedStr, ast.Subscript, ast.IfExp, ast.BoolOp, ast.List, ast.Tuple, ast.Set, ast.Dict,
})


def _first_cuda(kinds: list[tuple[DeviceKind, str]]) -> tuple[DeviceKind, str]:
    # A device list or a device map uses a GPU when any entry is one.
    return next((kind for kind in kinds if kind[0] is DeviceKind.CUDA), (DeviceKind.UNKNOWN, ""))


def _combine(options: list[ast.expr], state: KernelState, ints: bool) -> tuple[DeviceKind, str]:
    kinds = [eval_device(option, state, ints=ints)[0] for option in options]
    if DeviceKind.CUDA in kinds or DeviceKind.GUARDED in kinds:
        return DeviceKind.GUARDED, ""
    return (DeviceKind.CPU if DeviceKind.CPU in kinds else DeviceKind.UNKNOWN), ""


# The last parts of the calls `_eval_device_call` reads: resolving a name through the
# kernel's imports changes only its first part, so a dotted callee ending otherwise
# (`np.zeros`, most assigned values) names no device.
_DEVICE_CALL_LASTS = frozenset({"device", "str", "device_put", "devices", "local_devices",
                                "current_device"})


def _eval_device_call(node: ast.Call, state: KernelState) -> tuple[DeviceKind, str]:
    text = dotted(node.func)
    if text is None or ("." in text and text.rpartition(".")[2] not in _DEVICE_CALL_LASTS):
        return _UNKNOWN
    head, dot, rest = text.partition(".")
    name = state.resolve(head) + dot + rest
    if name in {"torch.device", "str", "tensorflow.device", "jax.device_put"} and node.args:
        return eval_device(node.args[0], state, ints=name == "torch.device")
    if name == "torch.device":
        return _keyword_device(node, "type", state)
    if name in {"jax.devices", "jax.local_devices"}:
        if node.args:
            return eval_device(node.args[0], state, ints=False)
        return _keyword_device(node, "backend", state)
    if name == "torch.cuda.current_device":
        return DeviceKind.CUDA, ""
    return DeviceKind.UNKNOWN, ""


def _keyword_device(node: ast.Call, keyword: str, state: KernelState) -> tuple[DeviceKind, str]:
    for item in node.keywords:
        if item.arg == keyword:
            return eval_device(item.value, state, ints=False)
    return DeviceKind.UNKNOWN, ""
