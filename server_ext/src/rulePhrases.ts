/**
 * The classifier's rule ids (`torch.cuda_method`, `cupy.import`, ...) in words a notebook
 * user understands (pure). The ids are the server's vocabulary; the dialog shows why a
 * cell needs a GPU, so every id maps to a short phrase, and an id this table does not know
 * (a newer server) still reads as a sentence.
 */
import { TranslationBundle } from './i18n';

/** Display names of the libraries the classifier tags on import (`<tag>.import`). */
const LIBRARIES: Record<string, string> = {
  cupy: 'CuPy',
  rapids: 'RAPIDS',
  pycuda: 'PyCUDA',
  tensorrt: 'TensorRT',
  vllm: 'vLLM',
  flash_attn: 'FlashAttention',
  unsloth: 'Unsloth',
  bitsandbytes: 'bitsandbytes',
  apex: 'NVIDIA Apex',
  nvidia: 'an NVIDIA library',
  cuquantum: 'cuQuantum',
  mamba_ssm: 'Mamba',
  gptq: 'AutoGPTQ',
  exllamav2: 'ExLlamaV2',
  cuda_python: 'cuda-python'
};

type Phrase = (trans: TranslationBundle) => string;

/** Exact rule ids. */
const EXACT: Record<string, Phrase> = {
  'torch.cuda': t => t.__('uses torch.cuda'),
  'torch.cuda_method': t => t.__('calls .cuda(), which moves data to a GPU'),
  'torch.cuda_call': t => t.__('calls a torch.cuda function that needs a GPU'),
  'torch.cuda_amp': t => t.__('uses CUDA mixed precision'),
  'torch.cuda_tensor_type': t => t.__('creates CUDA tensors'),
  'torch.autocast': t => t.__('uses CUDA mixed precision'),
  'torch.to_cuda': t => t.__('moves data to a GPU'),
  'torch.map_location_cuda': t => t.__('loads saved data onto a GPU'),
  'torch.device': t => t.__('selects a CUDA device'),
  'torch.device_cuda': t => t.__('selects a CUDA device'),
  'torch.default_device_cuda': t => t.__('makes a GPU the default device'),
  'torch.set_default_device': t => t.__('makes a GPU the default device'),
  'torch.set_default_tensor_type': t => t.__('makes CUDA tensors the default'),
  'torch.distributed': t => t.__('uses GPU communication (NCCL)'),
  'torch.nccl': t => t.__('uses GPU communication (NCCL)'),
  'device_kwarg.cuda': t => t.__('runs on a CUDA device'),
  'device.cuda_binding': t => t.__('sets a device to CUDA'),
  'state.cuda_device': t => t.__('uses a device set to CUDA in an earlier cell'),
  'state.gpu_function': t => t.__('calls a function that needs a GPU'),
  'tensorflow.device': t => t.__('runs TensorFlow on a GPU'),
  'shell.nvidia_smi': t => t.__('runs nvidia-smi'),
  'shell.nvcc': t => t.__('runs the CUDA compiler (nvcc)'),
  'shell.gpu_tool': t => t.__('runs a GPU tool'),
  'shell.gpu_arg': t => t.__('runs a command with a GPU option'),
  'hf.bitsandbytes': t => t.__('uses bitsandbytes quantization, which needs a GPU'),
  'hf.flash_attention': t => t.__('uses FlashAttention, which needs a GPU'),
  'hf.xformers': t => t.__('uses xFormers, which needs a GPU'),
  'onnxruntime.cuda_provider': t => t.__('runs ONNX Runtime on CUDA only'),
  'spacy.require_gpu': t => t.__('requires a GPU (spaCy)'),
  'nvml.init': t => t.__('talks to the NVIDIA driver'),
  'rapids.cudf_pandas': t => t.__('runs pandas on a GPU with cuDF'),
  'cudf.pandas': t => t.__('runs pandas on a GPU with cuDF'),
  'sys.exit': t => t.__('stops when no GPU is found')
};

/** Rule ids by their first part (the library), when no exact id matched. */
const BY_LIBRARY: Record<string, Phrase> = {
  torch: t => t.__('uses PyTorch on a GPU'),
  tf: t => t.__('runs TensorFlow on a GPU'),
  jax: t => t.__('runs JAX on a GPU'),
  numba: t => t.__('compiles code for a GPU (Numba CUDA)'),
  triton: t => t.__('compiles a GPU kernel (Triton)'),
  hf: t => t.__('loads a model onto a GPU'),
  lightning: t => t.__('trains on a GPU (Lightning)'),
  xgboost: t => t.__('trains XGBoost on a GPU'),
  catboost: t => t.__('trains CatBoost on a GPU'),
  faiss: t => t.__('uses Faiss on a GPU'),
  os: t => t.__('runs a command that needs a GPU'),
  subprocess: t => t.__('runs a command that needs a GPU'),
  shell: t => t.__('runs a command that needs a GPU')
};

/** What a rule id means, in a short phrase ("uses torch.cuda", "imports CuPy, ..."). */
export function rulePhrase(trans: TranslationBundle, rule: string): string {
  const exact = EXACT[rule];
  if (exact) {
    return exact(trans);
  }
  const [library, what] = rule.split('.', 2);
  if (what === 'import') {
    return trans.__('imports %1, which needs a GPU', LIBRARIES[library] ?? library);
  }
  const byLibrary = BY_LIBRARY[library];
  return byLibrary ? byLibrary(trans) : trans.__('needs a GPU');
}
