"""The classifier's knowledge of libraries: which names are GPU-only, which are checks,
which strings name a CUDA device. Tables only; the walk is in `analyzer.py`.

What counts as a GPU need (the labels of tests/jupyter/classifier_corpus follow it):

* a cell needs a GPU when running it uses one (`x.cuda()`, `.to("cuda")`, `device=0` in a
  Hugging Face pipeline, `@cuda.jit`, CuPy/RAPIDS, `!nvidia-smi`), fails without one
  (`torch.cuda.synchronize()`, `jax.devices("gpu")`, `fp16=True` training arguments,
  bitsandbytes, `assert torch.cuda.is_available()`), or commits the kernel to a CUDA device
  (`device = torch.device("cuda")`, `DEVICE = "cuda"`); a def or class whose body needs one
  needs one (it is written to run), and so does a later call of it;
* not needs: checks (`torch.cuda.is_available()`, `device_count()`), code under a check
  (`if torch.cuda.is_available():`, `"cuda" if ... else "cpu"`, `for g in
  tf.config.list_physical_devices("GPU")`, a short `try:` with a swallowing `except`),
  settings harmless on a CPU (`torch.backends.cudnn.benchmark = True`,
  `torch.cuda.manual_seed_all`, `torch.cuda.empty_cache()`, `CUDA_VISIBLE_DEVICES`),
  choices that fall back to the CPU by themselves (`device_map="auto"`, `accelerator="auto"`,
  `spacy.prefer_gpu()`, onnxruntime providers that also list the CPU), installs
  (`pip install cupy-cuda12x`), probes (`which nvidia-smi`, `nvidia-smi || echo none`),
  `%%writefile` bodies, strings and comments, and imports of libraries that import fine
  without a GPU (`import torch`, `from numba import cuda`, `import triton`);
* a switch the classifier cannot see (`if args.use_gpu:`) is a guard; one the kernel set to
  True (`USE_GPU = True`) is not.
"""

from __future__ import annotations

import re
from enum import Enum


class DeviceKind(Enum):
    """What a device expression evaluates to, as far as the classifier can tell."""

    CUDA = "cuda"
    GUARDED = "guarded"  # CUDA only when one is available: fine on a CPU pod
    CPU = "cpu"
    UNKNOWN = "unknown"


# Names a notebook uses without importing them in the same cell: the usual aliases.
DEFAULT_ALIASES: dict[str, str] = {
    "torch": "torch",
    "tf": "tensorflow",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "cp": "cupy",
    "cupy": "cupy",
    "cupyx": "cupyx",
    "cudf": "cudf",
    "cuml": "cuml",
    "cugraph": "cugraph",
    "dask_cudf": "dask_cudf",
    "triton": "triton",
    "tl": "triton.language",
    "trt": "tensorrt",
    "tensorrt": "tensorrt",
    "numba": "numba",
    "cuda": "numba.cuda",
    "pycuda": "pycuda",
    "dist": "torch.distributed",
    "spacy": "spacy",
    "pynvml": "pynvml",
    "nvmlInit": "pynvml.nvmlInit",
    "subprocess": "subprocess",
    "os": "os",
    "bnb": "bitsandbytes",
}

# First component of a module path -> library tag, for libraries that need a GPU as soon as
# they are imported or used (CuPy and RAPIDS fail to import without a CUDA driver).
GPU_LIBRARIES: dict[str, str] = {
    "cupy": "cupy",
    "cupyx": "cupy",
    "cudf": "rapids",
    "cuml": "rapids",
    "cugraph": "rapids",
    "nx_cugraph": "rapids",
    "dask_cudf": "rapids",
    "dask_cuda": "rapids",
    "cuspatial": "rapids",
    "cucim": "rapids",
    "cuxfilter": "rapids",
    "cusignal": "rapids",
    "cuvs": "rapids",
    "pylibraft": "rapids",
    "raft_dask": "rapids",
    "rmm": "rapids",
    "pycuda": "pycuda",
    "tensorrt": "tensorrt",
    "torch_tensorrt": "tensorrt",
    "tensorrt_llm": "tensorrt",
    "vllm": "vllm",
    "flash_attn": "flash_attn",
    "unsloth": "unsloth",
    "bitsandbytes": "bitsandbytes",
    "apex": "apex",
    "nvidia": "nvidia",
    "cuquantum": "cuquantum",
    "mamba_ssm": "mamba_ssm",
    "auto_gptq": "gptq",
    "exllamav2": "exllamav2",
}
# `import cuda` / `from cuda import cudart` is NVIDIA's cuda-python; only at import time,
# because a bare `cuda.` in code is far more often numba's.
IMPORT_ONLY_LIBRARIES: dict[str, str] = {"cuda": "cuda_python"}
# Checks inside GPU libraries that are fine without a GPU.
GPU_LIBRARY_CHECKS = frozenset({"cupy.cuda.is_available", "cupy.is_available"})

# Last attribute of a call that asks whether a GPU is there: such a call is a check (never a
# need) and an `if`/`for`/conditional expression on it is a guard.
AVAILABILITY_CALLS = frozenset({
    "is_available",
    "device_count",
    "list_physical_devices",
    "list_logical_devices",
    "is_gpu_available",
    "is_built_with_cuda",
    "gpu_device_name",
    "default_backend",
    "prefer_gpu",
    "getAvailable",
    "is_bf16_supported",
    "get_device_count",
    "getDeviceCount",
})

# torch.cuda functions that work on a CPU-only build (lazy or no-ops).
TORCH_CUDA_SAFE = frozenset({
    "is_available",
    "device_count",
    "is_initialized",
    "empty_cache",
    "manual_seed",
    "manual_seed_all",
    "seed",
    "seed_all",
    "is_bf16_supported",
    "get_arch_list",
})
TORCH_CUDA_TENSOR_TYPES = re.compile(r"torch\.cuda\.[A-Z]\w*Tensor$")

NUMBA_CUDA_SAFE = frozenset({"is_available", "detect", "jit"})  # jit: see decorators

# Decorators (the function or its call) that compile for a GPU.
GPU_DECORATORS: dict[str, str] = {
    "numba.cuda.jit": "numba.cuda_jit",
    "triton.jit": "triton.jit",
    "triton.autotune": "triton.jit",
    "triton.heuristics": "triton.jit",
}

# Exact calls that need a GPU whatever their arguments.
GPU_CALLS: dict[str, str] = {
    "tensorflow.distribute.MirroredStrategy": "tf.gpu_strategy",
    "tensorflow.distribute.MultiWorkerMirroredStrategy": "tf.gpu_strategy",
    "tensorflow.distribute.CentralStorageStrategy": "tf.gpu_strategy",
    "tensorflow.distribute.experimental.CentralStorageStrategy": "tf.gpu_strategy",
    "tensorflow.distribute.experimental.MultiWorkerMirroredStrategy": "tf.gpu_strategy",
    "spacy.require_gpu": "spacy.require_gpu",
    "thinc.api.require_gpu": "spacy.require_gpu",
    "pynvml.nvmlInit": "nvml.init",
    "nvidia_smi.nvmlInit": "nvml.init",
    "triton.testing.do_bench": "triton.bench",
    "transformers.BitsAndBytesConfig": "hf.bitsandbytes",
    "BitsAndBytesConfig": "hf.bitsandbytes",
    "faiss.StandardGpuResources": "faiss.gpu",
    "faiss.index_cpu_to_gpu": "faiss.gpu",
    "faiss.index_cpu_to_all_gpus": "faiss.gpu",
    "faiss.GpuIndexFlatL2": "faiss.gpu",
    "faiss.GpuIndexFlatIP": "faiss.gpu",
    "faiss.GpuIndexIVFFlat": "faiss.gpu",
    "faiss.GpuIndexIVFPQ": "faiss.gpu",
}
# tf.config calls that configure a GPU: needs one unless under a guard.
TF_GPU_CONFIG = frozenset({
    "tensorflow.config.experimental.set_memory_growth",
    "tensorflow.config.set_logical_device_configuration",
    "tensorflow.config.experimental.set_virtual_device_configuration",
    "tensorflow.config.experimental.set_visible_devices",
    "tensorflow.config.set_visible_devices",
    "tensorflow.config.experimental.VirtualDeviceConfiguration",
})
# Methods whose name alone says "runs on the GPU" (diffusers, Hugging Face).
GPU_METHODS: dict[str, str] = {
    "enable_model_cpu_offload": "hf.cpu_offload",
    "enable_sequential_cpu_offload": "hf.cpu_offload",
    "enable_xformers_memory_efficient_attention": "hf.xformers",
}
SHELL_RUNNERS = frozenset({
    "os.system",
    "os.popen",
    "subprocess.run",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "subprocess.Popen",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
})
# Calls whose arguments are shown, not used: a CUDA device printed is not a GPU need.
DISPLAY_CALLS = frozenset({"print", "str", "repr", "format", "display", "len", "isinstance"})

# Cell magics whose body IPython runs as Python, and those that run a shell.
PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "memit", "debug"})
PYTHON_LINE_MAGICS = frozenset({"time", "timeit", "prun", "memit", "debug"})
SHELL_CELL_MAGICS = frozenset({"bash", "sh", "system", "script"})
SHELL_LINE_MAGICS = frozenset({"system", "sx", "run"})

_CUDA_DEVICE = re.compile(
    r"(?:cuda|gpu)(?::\d+)?|/?(?:job:[^/]*/)?(?:replica:\d+/)?(?:task:\d+/)?(?:device:)?gpu:\d+"
)
_CPU_DEVICE = re.compile(r"cpu(?::\d+)?|/?(?:device:)?cpu:\d+|mps|meta|auto|balanced\w*|sequential")
_GPU_INDEXES = re.compile(r"\d+(,\d+)*")  # "0", "0,1": GPU indexes (compiled once: hot)
DEVICE_WORDS = ("device", "dev", "gpu", "cuda")


def device_string_kind(text: str) -> DeviceKind:
    """What a device string names: "cuda:0", "/GPU:0", "gpu" are CUDA; "0" is GPU 0 (the
    Hugging Face / Ultralytics spelling); "cpu", "auto" are not."""
    value = text.strip().lower()
    if _CUDA_DEVICE.fullmatch(value) or _GPU_INDEXES.fullmatch(value):
        return DeviceKind.CUDA
    if _CPU_DEVICE.fullmatch(value) or value in {"", "-1"}:
        return DeviceKind.CPU
    return DeviceKind.UNKNOWN


def is_device_like_name(name: str) -> bool:
    """A name that holds a device by its spelling (`device`, `DEVICE`, `dev`, `args.device`,
    `gpu_name`)."""
    last = name.rsplit(".", 1)[-1].lower()
    return "device" in last or "gpu" in last or "cuda" in last or last == "dev"


def holds_device_index(name: str) -> bool:
    """A name whose integer value is a GPU index (`device = 0`), unlike `n_gpus = 4`."""
    last = name.rsplit(".", 1)[-1].lower()
    return last in {"device", "dev", "gpu", "gpu_id", "device_id", "gpu_index", "device_index"}


def mentions_gpu(name: str) -> bool:
    """An identifier about CUDA or GPUs (`use_cuda`, `args.gpu`, `HAS_GPU`)."""
    last = name.rsplit(".", 1)[-1].lower()
    return "cuda" in last or "gpu" in last
