"""Focused tests of the GPU-need classifier: each idiom, each hard negative, per-kernel
state, magics, unparseable cells, and line numbers after IPython's transformation."""

from __future__ import annotations

import ast
import json
import re
import textwrap

import pytest
import yaml
from IPython.core.inputtransformer2 import TransformerManager
from test_classifier_corpus import CORPUS

from gpushift_jupyter.classifier import KernelClassifier, Reason, Verdict, classify_cell


def rules_of(code: str) -> set[str]:
    return {reason.rule for reason in classify_cell(textwrap.dedent(code)).reasons}


NEEDS_GPU = [
    # PyTorch
    ("model = Net().cuda()", "torch.cuda_method"),
    ("x = x.cuda(non_blocking=True)", "torch.cuda_method"),
    ('x = x.to("cuda")', "torch.to_cuda"),
    ('x = x.to("cuda:1", non_blocking=True)', "torch.to_cuda"),
    ('x = x.to(torch.device("cuda"))', "torch.to_cuda"),
    ("x = x.to(0)", "torch.to_cuda"),
    ('x = x.to(f"cuda:{rank}")', "torch.to_cuda"),
    ('x = torch.zeros(3, device="cuda:0")', "device_kwarg.cuda"),
    ('dev = torch.device("cuda")', "torch.device_cuda"),
    ('dev = torch.device("cuda", 1)', "torch.device_cuda"),
    ("torch.cuda.synchronize()", "torch.cuda_call"),
    ("torch.cuda.set_device(1)", "torch.cuda_call"),
    ("print(torch.cuda.get_device_name(0))", "torch.cuda_call"),
    ("print(torch.cuda.memory_allocated())", "torch.cuda_call"),
    ("scaler = torch.cuda.amp.GradScaler()", "torch.cuda_amp"),
    ("with torch.cuda.amp.autocast():\n    y = m(x)", "torch.cuda_amp"),
    ('with torch.autocast("cuda"):\n    y = m(x)', "torch.cuda_amp"),
    ('with torch.autocast(device_type="cuda"):\n    y = m(x)', "device_kwarg.cuda"),
    ('scaler = torch.amp.GradScaler("cuda")', "torch.cuda_amp"),
    ('sd = torch.load("m.pt", map_location="cuda:0")', "torch.map_location_cuda"),
    ('dist.init_process_group("nccl")', "torch.nccl"),
    ('torch.set_default_device("cuda")', "torch.default_device_cuda"),
    ("torch.set_default_tensor_type(torch.cuda.FloatTensor)", "torch.cuda_tensor_type"),
    ("torch.set_default_tensor_type('torch.cuda.HalfTensor')", "torch.cuda_tensor_type"),
    ('assert torch.cuda.is_available(), "need a GPU"', "require_gpu"),
    ('if not torch.cuda.is_available():\n    raise SystemExit("GPU!")', "require_gpu"),
    ('DEVICE = "cuda"', "device.cuda_binding"),
    ('config["device"] = "cuda:0"', "device.cuda_binding"),
    ('def train(model, device="cuda"):\n    return model', "device_kwarg.cuda"),
    # TensorFlow / Keras
    ('with tf.device("/GPU:0"):\n    y = tf.ones(3)', "tf.gpu_device"),
    ('with tf.device("/device:GPU:1"):\n    y = tf.ones(3)', "tf.gpu_device"),
    ("strategy = tf.distribute.MirroredStrategy()", "tf.gpu_strategy"),
    ('s = tf.distribute.OneDeviceStrategy("/gpu:0")', "tf.gpu_strategy"),
    ("tf.config.experimental.set_memory_growth(gpus[0], True)", "tf.gpu_config"),
    # JAX
    ('gpu = jax.devices("gpu")[0]', "jax.gpu_devices"),
    ('x = jax.device_put(x, jax.devices("cuda")[0])', "jax.gpu_devices"),
    ('jax.config.update("jax_platform_name", "gpu")', "jax.gpu_platform"),
    ('f = jax.jit(g, backend="gpu")', "jax.gpu_backend"),
    # CuPy and RAPIDS
    ("import cupy as cp", "cupy.import"),
    ("y = cp.asarray(x)", "cupy.call"),
    ("import cudf", "rapids.import"),
    ("from cuml.cluster import KMeans", "rapids.import"),
    ("import cugraph", "rapids.import"),
    ("import dask_cudf", "rapids.import"),
    ("%load_ext cudf.pandas", "rapids.cudf_pandas"),
    # Numba, PyCUDA, Triton, TensorRT
    ("@cuda.jit\ndef k(a):\n    pass", "numba.cuda_jit"),
    ("@numba.cuda.jit(device=True)\ndef k(a):\n    return a", "numba.cuda_jit"),
    ("d = cuda.to_device(x)", "numba.cuda_call"),
    ('@vectorize(["f4(f4)"], target="cuda")\ndef f(a):\n    return a', "numba.cuda_target"),
    ("import pycuda.autoinit", "pycuda.import"),
    ("@triton.jit\ndef k(p):\n    pass", "triton.jit"),
    ("import tensorrt as trt", "tensorrt.import"),
    ("import torch_tensorrt", "tensorrt.import"),
    # Hugging Face and friends
    ('p = pipeline("ner", device=0)', "device_kwarg.cuda"),
    ('p = pipeline("ner", device="cuda:0")', "device_kwarg.cuda"),
    ('m = AutoModel.from_pretrained("x", device_map="cuda")', "hf.device_map_cuda"),
    ('m = AutoModel.from_pretrained("x", device_map={"": 0})', "hf.device_map_cuda"),
    ('m = AutoModel.from_pretrained("x", load_in_4bit=True)', "hf.bitsandbytes"),
    ("q = BitsAndBytesConfig(load_in_8bit=True)", "hf.bitsandbytes"),
    ('a = TrainingArguments("out", fp16=True)', "hf.fp16_training"),
    ('m = M.from_pretrained("x", attn_implementation="flash_attention_2")', "hf.flash_attention"),
    ("pipe.enable_model_cpu_offload()", "hf.cpu_offload"),
    ('t = L.Trainer(accelerator="gpu", devices=1)', "lightning.gpu_accelerator"),
    ("t = pl.Trainer(gpus=2)", "lightning.gpus"),
    ('c = xgb.XGBClassifier(tree_method="gpu_hist")', "xgboost.gpu"),
    ('c = CatBoostClassifier(task_type="GPU")', "catboost.gpu"),
    ('s = ort.InferenceSession("m.onnx", providers=["CUDAExecutionProvider"])',
     "onnxruntime.cuda_provider"),
    ("spacy.require_gpu()", "spacy.require_gpu"),
    ("pynvml.nvmlInit()", "nvml.init"),
    ("res = faiss.StandardGpuResources()", "faiss.gpu"),
    # shell
    ("!nvidia-smi", "shell.nvidia_smi"),
    ("out = !nvidia-smi -L", "shell.nvidia_smi"),
    ("%%bash\nnvidia-smi\n", "shell.nvidia_smi"),
    ("%%sh\nls\nnvidia-smi | head\n", "shell.nvidia_smi"),
    ("%%script bash\nnvidia-smi\n", "shell.nvidia_smi"),
    ("%system nvidia-smi", "shell.nvidia_smi"),
    ('subprocess.run(["nvidia-smi", "-L"])', "shell.nvidia_smi"),
    ('os.system("nvidia-smi")', "shell.nvidia_smi"),
    ("!nvcc --version", "shell.nvcc"),
    ("!python train.py --device cuda", "shell.gpu_arg"),
    ("!CUDA_VISIBLE_DEVICES=1 python train.py", "shell.gpu_arg"),
    ("%run train.py --gpus 2", "shell.gpu_arg"),
]


@pytest.mark.parametrize(("code", "rule"), NEEDS_GPU)
def test_idiom_needs_gpu(code: str, rule: str) -> None:
    verdict = classify_cell(code)
    assert verdict.needs_gpu, code
    assert rule in {reason.rule for reason in verdict.reasons}, verdict.reasons


NO_GPU = [
    "import torch",
    "import torch\nimport torchvision\nimport tensorflow as tf\nimport jax",
    "print(torch.cuda.is_available(), torch.cuda.device_count())",
    'device = "cuda" if torch.cuda.is_available() else "cpu"\nmodel.to(device)',
    'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")\nx.to(device)',
    'device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")',
    "if torch.cuda.is_available():\n    model.cuda()",
    "if torch.cuda.device_count() > 1:\n    model = nn.DataParallel(model).cuda()",
    "x = x.cuda() if torch.cuda.is_available() else x",
    "torch.cuda.is_available() and torch.cuda.synchronize()",
    "for i in range(torch.cuda.device_count()):\n    print(torch.cuda.get_device_name(i))",
    'sd = torch.load("m.pt", map_location="cpu")',
    'sd = torch.load("m.pt", map_location=torch.device("cpu"))',
    '# model.cuda()\nprint("moving to cuda")',
    'msg = "call .cuda() or .to(\'cuda\') on the GPU pod"',
    'def f():\n    """Uses torch.cuda.synchronize() on a GPU."""\n    return 1',
    "torch.backends.cudnn.benchmark = True",
    "torch.cuda.manual_seed_all(0)\ntorch.cuda.empty_cache()",
    'x = x.to("cpu")\ny = y.cpu()',
    "model.to(device)",  # unknown device in a fresh kernel
    'p = pipeline("ner", device=-1)',
    'm = AutoModel.from_pretrained("x", device_map="auto")',
    'm = AutoModel.from_pretrained("x", device_map="balanced")',
    't = L.Trainer(accelerator="auto")',
    'with tf.device("/CPU:0"):\n    y = tf.ones(3)',
    'tf.config.set_visible_devices([], "GPU")',
    'gpus = tf.config.list_physical_devices("GPU")\nif gpus:\n'
    "    tf.config.experimental.set_memory_growth(gpus[0], True)",
    'for g in tf.config.list_physical_devices("GPU"):\n'
    "    tf.config.experimental.set_memory_growth(g, True)",
    "print(jax.devices(), jax.default_backend())",
    'x = jax.device_put(x, jax.devices("cpu")[0])',
    "try:\n    import cupy as xp\nexcept ImportError:\n    import numpy as xp",
    "from numba import cuda\nprint(cuda.is_available())",
    "import triton",
    "spacy.prefer_gpu()",
    's = ort.InferenceSession("m", providers=["CUDAExecutionProvider", "CPUExecutionProvider"])',
    "!pip install cupy-cuda12x",
    "%pip install nvidia-ml-py",
    "!which nvidia-smi",
    "!nvidia-smi || echo no gpu",
    "%%writefile train.py\nimport torch\ntorch.zeros(1).cuda()\n",
    "%%html\n<b>nvidia-smi</b>\n",
    "%env CUDA_VISIBLE_DEVICES=0",
    'os.environ["CUDA_VISIBLE_DEVICES"] = "0"',
    "torch.cuda.synchronize?",
    'a = TrainingArguments("out", bf16=True)',
    'r = whisper_model.transcribe("a.wav", fp16=True)',
    'df.groupby("device_id").size()',
    'n_gpus = 4\nprint(range(n_gpus))',
]


@pytest.mark.parametrize("code", NO_GPU)
def test_hard_negative_needs_no_gpu(code: str) -> None:
    verdict = classify_cell(code)
    assert not verdict.needs_gpu, verdict.reasons
    assert verdict.reasons == ()


def test_device_bound_to_cuda_makes_later_use_a_need() -> None:
    kernel = KernelClassifier()
    assert kernel.classify('device = torch.device("cuda:0")').needs_gpu
    later = kernel.classify("import torch.nn as nn\nmodel = nn.Linear(3, 2)\nmodel.to(device)")
    assert later.needs_gpu
    assert later.reasons == (Reason(3, "state.cuda_device", "model.to(device)"),)
    assert kernel.classify("x = torch.ones(2, device=device)").needs_gpu
    assert not kernel.classify("print(device)").needs_gpu


def test_guarded_device_binding_is_not_a_need_later() -> None:
    kernel = KernelClassifier()
    assert not kernel.classify('device = "cuda" if torch.cuda.is_available() else "cpu"').needs_gpu
    assert not kernel.classify("model.to(device)").needs_gpu


def test_rebinding_to_cpu_unbinds() -> None:
    kernel = KernelClassifier()
    assert kernel.classify('dev = "cuda"').needs_gpu
    assert kernel.classify("m.to(dev)").needs_gpu
    assert not kernel.classify('dev = "cpu"').needs_gpu
    assert not kernel.classify("m.to(dev)").needs_gpu
    assert kernel.classify('dev = "cuda:1"').needs_gpu
    assert not kernel.classify("dev = get_device()").needs_gpu
    assert not kernel.classify("m.to(dev)").needs_gpu


def test_state_is_per_kernel() -> None:
    first, second = KernelClassifier(), KernelClassifier()
    first.classify('device = torch.device("cuda")')
    assert first.classify("m.to(device)").needs_gpu
    assert not second.classify("m.to(device)").needs_gpu
    assert not classify_cell("m.to(device)").needs_gpu


def test_gpu_function_and_kernel_launch_need_gpu_later() -> None:
    kernel = KernelClassifier()
    assert kernel.classify("@cuda.jit\ndef add(a, b, out):\n    out[0] = a[0] + b[0]").needs_gpu
    launch = kernel.classify("add[32, 128](d_a, d_b, d_out)")
    assert launch.reasons == (Reason(1, "state.gpu_function", "add[32, 128](d_a, d_b, d_out)"),)
    assert not kernel.classify("def add(a, b):\n    return a + b").needs_gpu
    assert not kernel.classify("add(1, 2)").needs_gpu


def test_aliases_follow_imports() -> None:
    kernel = KernelClassifier()
    assert not kernel.classify("import torch as th").needs_gpu
    assert "torch.cuda_call" in {r.rule for r in kernel.classify("th.cuda.synchronize()").reasons}
    assert kernel.classify("import cupy as xp").needs_gpu
    assert kernel.classify("y = xp.zeros(3)").needs_gpu
    assert not kernel.classify("import numpy as xp").needs_gpu
    assert not kernel.classify("y = xp.zeros(3)").needs_gpu
    assert not kernel.classify("cp = shutil.copy\ncp('a', 'b')").needs_gpu


def test_forced_switch_is_not_a_guard() -> None:
    kernel = KernelClassifier()
    assert not kernel.classify("USE_CUDA = True").needs_gpu
    assert kernel.classify("if USE_CUDA:\n    model.cuda()").needs_gpu
    assert not classify_cell("if USE_CUDA:\n    model.cuda()").needs_gpu  # unknown switch


def test_cell_that_does_not_parse_is_no_gpu_with_a_reason() -> None:
    verdict = classify_cell("x = 1\nmodel.cuda(\nprint('unclosed'")
    assert not verdict.needs_gpu
    assert [reason.rule for reason in verdict.reasons] == ["no_parse"]
    assert verdict.reasons[0].text.startswith("SyntaxError")
    for broken in ["def f(:\n  pass", "\x00", "(" * 500, "%%bash\n", "  x = 1\n y = 2", "!"]:
        assert not classify_cell(broken).needs_gpu


def test_unparseable_cell_leaves_state_untouched() -> None:
    kernel = KernelClassifier()
    kernel.classify('device = "cuda"')
    broken = kernel.classify('device = "cpu"\nprint("unclosed"')
    assert [reason.rule for reason in broken.reasons] == ["no_parse"]
    assert kernel.classify("m.to(device)").needs_gpu


@pytest.mark.parametrize(
    ("code", "line", "text"),
    [
        ("\n\n\nx = 1\n!nvidia-smi\n", 5, "!nvidia-smi"),
        ("a = 1\n!ls -l \\\n   data/\n%time y = m.cuda()\n", 4, "%time y = m.cuda()"),
        ("%%time\nimport torch\n\nx = torch.ones(1)\ny = x.cuda()\n", 5, "y = x.cuda()"),
        ("%%bash\necho one\necho two\nnvidia-smi -L\n", 4, "nvidia-smi -L"),
        ("\n%%capture out\n!ls\nz = w.to('cuda')\n", 4, "z = w.to('cuda')"),
        ("x = 1 \n  \ny = x?\nmodel.cuda()\n", 4, "model.cuda()"),
        ("%%timeit -n 3\n!echo hi\ntorch.cuda.synchronize()\n", 3, "torch.cuda.synchronize()"),
    ],
)
def test_line_numbers_refer_to_the_users_lines(code: str, line: int, text: str) -> None:
    verdict = classify_cell(code)
    assert verdict.needs_gpu
    assert (verdict.reasons[0].line, verdict.reasons[0].text) == (line, text)


def test_reason_per_hit_with_rule_and_text() -> None:
    code = 'import cupy as cp\nimport pandas as pd\nx = cp.ones(3)\n!nvidia-smi\n'
    verdict = classify_cell(code)
    assert verdict.reasons == (
        Reason(1, "cupy.import", "import cupy as cp"),
        Reason(3, "cupy.call", "x = cp.ones(3)"),
        Reason(4, "shell.nvidia_smi", "!nvidia-smi"),
    )


def test_verdict_json_shape() -> None:
    verdict = classify_cell("x.cuda()")
    payload = json.loads(json.dumps(verdict.to_json()))
    assert set(payload) == {"needs_gpu", "reasons", "elapsed_ms", "cached"}
    assert payload["reasons"] == [{"line": 1, "rule": "torch.cuda_method", "text": "x.cuda()"}]
    assert isinstance(payload["elapsed_ms"], float) and payload["elapsed_ms"] >= 0
    assert isinstance(verdict, Verdict)


def test_deep_expression_does_not_overflow() -> None:
    # The parser gives up (RecursionError) near 3000 terms: "no_parse", never an exception.
    assert classify_cell("x = " + " + ".join(["a"] * 900) + "\ny = z.cuda()").needs_gpu
    too_deep = classify_cell("x = " + " + ".join(["a"] * 5000) + "\ny = z.cuda()")
    assert [reason.rule for reason in too_deep.reasons] == ["no_parse"]
    nested = classify_cell("y = " + "(" * 150 + "x.cuda()" + ")" * 150)
    assert nested.needs_gpu


def test_ipython_leaves_valid_python_unchanged_over_the_corpus() -> None:
    """The classifier skips IPython's transformation for cells that are valid Python;
    this holds only if that transformation never changes valid Python."""
    transformer = TransformerManager()
    checked = 0
    for path in sorted(CORPUS.glob("*.yaml")):
        for item in yaml.safe_load(path.read_text()):
            for cell in item.get("sequence", [item]):
                try:
                    plain = ast.parse(cell["code"])
                except SyntaxError:
                    continue
                transformed = ast.parse(transformer.transform_cell(cell["code"]))
                assert ast.dump(plain) == ast.dump(transformed), cell["code"]
                checked += 1
    assert checked > 250


def test_rule_names_are_short_identifiers() -> None:
    rules = {rule for _, rule in NEEDS_GPU}
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_0-9]+)?", rule) for rule in rules)
