"""GPU needs in shell commands: `!nvidia-smi`, `%%bash` cells, `subprocess.run([...])`."""

from __future__ import annotations

import re

# Commands that talk to the GPU driver, or (nvcc) live only in the CUDA image.
_GPU_TOOLS: dict[str, str] = {
    "nvidia-smi": "shell.nvidia_smi",
    "nvtop": "shell.gpu_tool",
    "gpustat": "shell.gpu_tool",
    "nvidia-debugdump": "shell.gpu_tool",
    "dcgmi": "shell.gpu_tool",
    "nvcc": "shell.nvcc",
}
_TOOL = re.compile(r"(?<![\w.-])(nvidia-smi|nvtop|gpustat|nvidia-debugdump|dcgmi|nvcc)(?![\w-])")
# Arguments that put a script on a GPU: `--device cuda`, `device=0` (YOLO), `--gpus 2`.
_GPU_ARGUMENT = re.compile(
    r"--device[= ]+['\"]?(?:cuda|gpu|\d)"
    r"|(?<![\w-])device=['\"]?(?:cuda|gpu|\d)"
    r"|--gpus?[= ]+['\"]?(?:all|\d*[1-9]|\d+,)"
    r"|--(?:cuda|use[-_]cuda|use[-_]gpu)(?![\w-])"
    r"|(?<![\w])CUDA_VISIBLE_DEVICES=['\"]?\d"
    r"|-m\s+cudf\.pandas",
    re.IGNORECASE,
)
# A command that only installs, finds or prints a GPU tool does not run it.
_NOT_RUNNING = re.compile(
    r"^\s*(?:sudo\s+)?(?:(?:\S*/)?(?:pip3?|uv|conda|mamba|micromamba|apt|apt-get|yum|npm)\b"
    r"|python3?\s+-m\s+pip\b|which\b|command\s+-v\b|type\b|echo\b|printf\b|ls\b|man\b|cat\b)"
)
_SEGMENTS = re.compile(r"\|\||&&|;|\n|\|")


def shell_hits(command: str) -> list[tuple[int, str]]:
    """(0-based line within `command`, rule) for each GPU need in a shell command text.

    A command followed by `||` is a probe with a fallback (`nvidia-smi || echo no GPU`),
    so it is not a need.
    """
    hits: list[tuple[int, str]] = []
    line = 0
    position = 0
    for separator in [*_SEGMENTS.finditer(command), None]:
        end = separator.start() if separator else len(command)
        segment = command[position:end]
        probe = separator is not None and separator.group() == "||"
        if not probe and not _NOT_RUNNING.match(segment):
            tool = _TOOL.search(segment)
            if tool:
                hits.append((line, _GPU_TOOLS[tool.group(1)]))
            elif _GPU_ARGUMENT.search(segment):
                hits.append((line, "shell.gpu_arg"))
        line += command.count("\n", position, separator.end() if separator else end)
        position = separator.end() if separator else end
    return hits
