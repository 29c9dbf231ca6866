"""What the classifier remembers about one kernel between cells."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from gpushift_jupyter.classifier.rules import (
    AVAILABILITY_CALLS,
    DEFAULT_ALIASES,
    GPU_LIBRARIES,
    DeviceKind,
)

# Words that make a cell worth walking. A cell with none of them (and none of the names this
# kernel has bound to devices, guards or GPU functions) cannot need a GPU, and the walk is
# skipped; within a cell, so is every statement without one. Matched as substrings of the
# lower-cased text (`use_cuda` matches `cuda`).
TRIGGER_WORDS = (
    "cuda", "gpu", "nvidia", "nvcc", "nvml", "nvtop", "dcgmi", "device", "nccl", "triton",
    "tensorrt", "trt", "jax", "numba", "flash_att", "bitsandbytes", "bnb", "load_in_", "fp16",
    "offload", "xformers", "task_type", "accelerator", "providers", "tree_method", "predictor",
    "autocast", "gradscaler", "map_location", "target", "backend", "cupy", "cp.", "rapids",
    "cudf", "cuml", "cugraph", "cuspatial", "cucim", "cuxfilter", "cusignal", "cuvs", "raft",
    "rmm", "vllm", "unsloth", "apex", "cuquantum", "mamba_ssm", "gptq", "exllama",
    "attn_implementation", "get_ipython", "strategy", "system", "popen", "getoutput",
    "import", ".to(",
)


@functools.lru_cache(maxsize=64)
def _trigger_pattern(words: frozenset[str]) -> re.Pattern[str]:
    """One regex for many literal words, grouped by first letter: Python's `re` tries every
    branch of a flat alternation at every position, and the grouped form is ~15x faster."""
    groups: dict[str, list[str]] = {}
    for word in sorted(words, key=len, reverse=True):
        groups.setdefault(word[0], []).append(re.escape(word[1:]))
    branches = [
        re.escape(first) + ("(?:" + "|".join(rests) + ")" if rests != [""] else "")
        for first, rests in groups.items()
    ]
    return re.compile("|".join(branches))


_STATIC_TRIGGER = _trigger_pattern(frozenset(TRIGGER_WORDS))
_AVAILABILITY_WORDS = frozenset(word.lower() for word in AVAILABILITY_CALLS)


@dataclass(frozen=True)
class Scanner:
    """One pass over a cell's lower-cased text finds the lines worth walking and, among
    them, the lines that check for a GPU."""

    pattern: re.Pattern[str]
    checks: frozenset[str]

    def lines(self, lowered: str) -> tuple[list[int], list[int]]:
        """(lines with any word, lines with a check word), 1-based and sorted."""
        any_lines: list[int] = []
        check_lines: list[int] = []
        line = 1
        position = 0
        last = 0  # the last line appended to any_lines (lines only grow)
        count = lowered.count
        checks = self.checks
        for match in self.pattern.finditer(lowered):
            start = match.start()
            line += count("\n", position, start)
            position = start
            if line != last:
                any_lines.append(line)
                last = line
            if match.group() in checks and (not check_lines or check_lines[-1] != line):
                check_lines.append(line)
        return any_lines, check_lines


@dataclass
class KernelState:
    """Per-kernel memory: module aliases, names bound to devices, availability guards,
    flags forced on, and functions (or classes) whose bodies need a GPU."""

    aliases: dict[str, str] = field(default_factory=dict)
    shadowed: set[str] = field(default_factory=set)
    devices: dict[str, DeviceKind] = field(default_factory=dict)
    guards: set[str] = field(default_factory=set)
    forced: set[str] = field(default_factory=set)
    gpu_functions: set[str] = field(default_factory=set)
    # For the cell being walked only: sorted lines that mention an availability check or a
    # guard name (None: unknown, look at every expression). Saves walking most expressions.
    availability_lines: list[int] | None = None
    # The lower-cased text those lines number (so a guard bound mid-cell can add its own).
    walked_text: str = ""
    _scanner: Scanner | None = None
    # walked_text split in lines, when a guard bound mid-cell needed it (once per cell).
    _walked_lines: list[str] | None = field(default=None, compare=False, repr=False)

    def copy(self) -> KernelState:
        """An independent copy (the containers are copied; patterns are immutable)."""
        return KernelState(
            aliases=dict(self.aliases),
            shadowed=set(self.shadowed),
            devices=dict(self.devices),
            guards=set(self.guards),
            forced=set(self.forced),
            gpu_functions=set(self.gpu_functions),
            _scanner=self._scanner,
        )

    def fingerprint(self) -> tuple[object, ...]:
        """What this kernel's memory holds, hashable: two states with the same
        fingerprint classify every cell alike (the verdict cache's key)."""
        return (tuple(sorted(self.aliases.items())), frozenset(self.shadowed),
                tuple(sorted(self.devices.items())), frozenset(self.guards),
                frozenset(self.forced), frozenset(self.gpu_functions))

    def resolve(self, name: str) -> str:
        """The module path a bare name stands for (`cp` -> `cupy`), or the name itself."""
        if name in self.aliases:
            return self.aliases[name]
        if name in self.shadowed:
            return name
        return DEFAULT_ALIASES.get(name, name)

    def bind_alias(self, name: str, module: str) -> None:
        """`import module as name` (or `from package import module`)."""
        self.forget(name)
        self.aliases[name] = module
        self.changed()

    def forget(self, name: str) -> None:
        """`name` now holds something the classifier knows nothing about."""
        # Called for every name a cell assigns: test membership once per container (most
        # names are in none of them) rather than pop/discard on all five.
        known = False
        if name in self.aliases:
            del self.aliases[name]
            known = True
        if name in self.devices:
            del self.devices[name]
            known = True
        for names in (self.guards, self.forced, self.gpu_functions):
            if name in names:
                names.remove(name)
                known = True
        if name in DEFAULT_ALIASES:
            self.shadowed.add(name)
        if known:
            self.changed()

    def add_guard(self, name: str) -> None:
        """`name` now tells whether a GPU is there: remember it, and add the lines of the
        cell being walked that mention it to the availability hint."""
        self.guards.add(name)
        self.changed()
        lines = self.availability_lines
        if lines is None:
            return
        word = _last_word(name)
        text = self.walked_text
        if not word or not text:
            self.availability_lines = None  # no text to search: look everywhere
            return
        # The lines holding the word (it has no newline: a line holds it or not), found
        # line by line: a common word (`device`) occurs dozens of times in a cell.
        found: set[int] = set(lines)
        if self._walked_lines is None:
            self._walked_lines = text.split("\n")
        found.update([number for number, line in enumerate(self._walked_lines, 1) if word in line])
        self.availability_lines = sorted(found)

    def end_walk(self) -> None:
        """The cell's walk is over: drop what was only for its text."""
        self.availability_lines = None
        self.walked_text = ""
        self._walked_lines = None

    def changed(self) -> None:
        """Drop the cached scanner: the set of interesting names changed."""
        self._scanner = None

    def scanner(self) -> Scanner:
        """The words that make a line of a cell worth walking in this kernel, and among them
        those that check for a GPU (availability calls, guard names)."""
        if self._scanner is None:
            remembers = (self.devices or self.guards or self.forced or self.gpu_functions
                         or self.aliases)
            # A kernel that remembers nothing (a fresh one: a notebook's first cells) has
            # the static words only: that scanner is built once.
            self._scanner = _build_scanner(self) if remembers else _static_scanner()
        return self._scanner


def _build_scanner(state: KernelState) -> Scanner:
    names = {*state.devices, *state.guards, *state.forced, *state.gpu_functions}
    # `from torch.cuda import synchronize` makes `synchronize()` interesting.
    names.update(
        alias for alias, module in state.aliases.items()
        if _STATIC_TRIGGER.search(module.lower())
        or module.split(".", 1)[0] in GPU_LIBRARIES
    )
    checks = _AVAILABILITY_WORDS | {_last_word(name) for name in state.guards}
    words = frozenset(TRIGGER_WORDS) | checks | {_last_word(name) for name in names}
    return Scanner(_trigger_pattern(words - {""}), checks - {""})


@functools.lru_cache(maxsize=1)
def _static_scanner() -> Scanner:
    return _build_scanner(KernelState())


def _last_word(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower()
