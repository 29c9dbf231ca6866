import { trans } from './trans';
import { detectCudaError } from '../src/cudaErrors';

const error = (ename: string, evalue: string, traceback: string[] = []) => ({
  output_type: 'error',
  ename,
  evalue,
  traceback
});

describe('detectCudaError', () => {
  it.each([
    [
      'torch without a driver',
      error('RuntimeError', 'Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver'),
      'no NVIDIA driver on this pod'
    ],
    [
      'torch with no device',
      error('RuntimeError', 'No CUDA GPUs are available'),
      'no CUDA GPU on this pod'
    ],
    [
      'CPU-only torch',
      error('AssertionError', 'Torch not compiled with CUDA enabled'),
      'this pod has CPU-only PyTorch'
    ],
    [
      'cupy',
      error('CUDARuntimeError', 'cudaErrorNoDevice: no CUDA-capable device is detected'),
      'no CUDA device on this pod'
    ],
    [
      'a CUDA tensor loaded on CPU',
      error('RuntimeError', 'Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False.'),
      'the data was saved on a GPU'
    ],
    [
      'tensorflow on stderr',
      { output_type: 'stream', name: 'stderr', text: ['E tensorflow: failed call to cuInit: UNKNOWN ERROR (303)\n'] },
      'no CUDA device on this pod'
    ],
    [
      'jax',
      error('RuntimeError', "Unable to initialize backend 'cuda': FAILED_PRECONDITION"),
      'no CUDA backend on this pod'
    ]
  ])('recognises %s', (_name, output, summary) => {
    expect(detectCudaError(trans, [output])?.summary).toBe(summary);
  });

  it('reads through terminal colours in tracebacks', () => {
    const coloured = error('RuntimeError', '', [
      '\u001b[0;31mRuntimeError\u001b[0m: No CUDA \u001b[1mGPUs\u001b[0m are available'
    ]);
    expect(detectCudaError(trans, [coloured])?.summary).toBe('no CUDA GPU on this pod');
  });

  it('ignores other errors, stdout and results', () => {
    expect(
      detectCudaError(trans, [
        error('NameError', "name 'cuda_device' is not defined"),
        { output_type: 'stream', name: 'stdout', text: 'No CUDA GPUs are available' },
        { output_type: 'execute_result' }
      ])
    ).toBeNull();
    expect(detectCudaError(trans, [])).toBeNull();
  });
});
