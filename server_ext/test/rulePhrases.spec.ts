import { trans } from './trans';
import { rulePhrase } from '../src/rulePhrases';

describe('rulePhrase', () => {
  it('says what a rule means, not its id', () => {
    expect(rulePhrase(trans, 'torch.cuda')).toBe('uses torch.cuda');
    expect(rulePhrase(trans, 'torch.cuda_method')).toBe('calls .cuda(), which moves data to a GPU');
    expect(rulePhrase(trans, 'state.cuda_device')).toBe('uses a device set to CUDA in an earlier cell');
    expect(rulePhrase(trans, 'shell.nvidia_smi')).toBe('runs nvidia-smi');
  });
  it('names the library of an import', () => {
    expect(rulePhrase(trans, 'cupy.import')).toBe('imports CuPy, which needs a GPU');
    expect(rulePhrase(trans, 'rapids.import')).toBe('imports RAPIDS, which needs a GPU');
    expect(rulePhrase(trans, 'newlib.import')).toBe('imports newlib, which needs a GPU');
  });
  it('reads as a phrase for ids it does not know', () => {
    expect(rulePhrase(trans, 'jax.something_new')).toBe('runs JAX on a GPU');
    expect(rulePhrase(trans, 'subprocess.run')).toBe('runs a command that needs a GPU');
    expect(rulePhrase(trans, 'unheard.of')).toBe('needs a GPU');
    expect(rulePhrase(trans, 'torch.cuda_method')).not.toContain('torch.cuda_method');
  });
});

/** The rule ids of gpushift_jupyter/classifier (its tables and walkers). */
const CLASSIFIER_RULES = [
  'catboost.gpu',
  'cudf.pandas',
  'device.cuda_binding',
  'device_kwarg.cuda',
  'faiss.gpu',
  'faiss.index_cpu_to_all_gpus',
  'faiss.index_cpu_to_gpu',
  'hf.bitsandbytes',
  'hf.cpu_offload',
  'hf.device_map_cuda',
  'hf.flash_attention',
  'hf.xformers',
  'jax.device_put',
  'jax.device_put_gpu',
  'jax.devices',
  'jax.gpu_backend',
  'jax.gpu_devices',
  'jax.gpu_platform',
  'jax.local_devices',
  'lightning.gpu_accelerator',
  'lightning.gpus',
  'numba.cuda',
  'numba.cuda_call',
  'numba.cuda_jit',
  'numba.cuda_target',
  'nvml.init',
  'onnxruntime.cuda_provider',
  'os.popen',
  'os.system',
  'rapids.cudf_pandas',
  'shell.gpu_arg',
  'shell.gpu_tool',
  'shell.nvcc',
  'shell.nvidia_smi',
  'spacy.require_gpu',
  'state.cuda_device',
  'state.gpu_function',
  'subprocess.call',
  'subprocess.check_call',
  'subprocess.check_output',
  'subprocess.getoutput',
  'subprocess.getstatusoutput',
  'subprocess.run',
  'sys.exit',
  'tensorflow.device',
  'tf.gpu_config',
  'tf.gpu_device',
  'tf.gpu_strategy',
  'torch.autocast',
  'torch.cuda',
  'torch.cuda_amp',
  'torch.cuda_call',
  'torch.cuda_method',
  'torch.cuda_tensor_type',
  'torch.default_device_cuda',
  'torch.device',
  'torch.device_cuda',
  'torch.distributed',
  'torch.map_location_cuda',
  'torch.nccl',
  'torch.set_default_device',
  'torch.set_default_tensor_type',
  'torch.to_cuda',
  'triton.autotune',
  'triton.bench',
  'triton.heuristics',
  'triton.jit',
  'xgboost.gpu',
];

describe('every rule id of the classifier', () => {
  it.each(CLASSIFIER_RULES)('%s has its own phrase', rule => {
    const phrase = rulePhrase(trans, rule);
    expect(phrase).not.toBe('needs a GPU');
    expect(phrase).not.toContain(`(${rule})`);
  });
});
