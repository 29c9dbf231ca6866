/**
 * Telling a cell's output says it needed a GPU (pure): the errors CUDA libraries raise
 * on a machine without an NVIDIA driver or device.
 */

import { TranslationBundle } from './i18n';

/** One pattern and what it means for the user (translated when it is shown). */
interface ICudaErrorPattern {
  pattern: RegExp;
  summary: (trans: TranslationBundle) => string;
}

const PATTERNS: ICudaErrorPattern[] = [
  { pattern: /Found no NVIDIA driver on your system/i, summary: t => t.__('no NVIDIA driver on this pod') },
  { pattern: /No CUDA GPUs are available/i, summary: t => t.__('no CUDA GPU on this pod') },
  { pattern: /Torch not compiled with CUDA enabled/i, summary: t => t.__('this pod has CPU-only PyTorch') },
  {
    pattern: /no CUDA-capable device is detected|cudaErrorNoDevice/i,
    summary: t => t.__('no CUDA device on this pod')
  },
  { pattern: /CUDA driver initialization failed/i, summary: t => t.__('no CUDA driver on this pod') },
  {
    pattern: /cudaErrorInsufficientDriver|CUDA driver version is insufficient/i,
    summary: t => t.__('no usable CUDA driver on this pod')
  },
  {
    pattern: /libcuda\.so[.\d]*: cannot open shared object file/i,
    summary: t => t.__('the CUDA driver library is missing on this pod')
  },
  {
    pattern: /NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver/i,
    summary: t => t.__('no NVIDIA driver on this pod')
  },
  {
    pattern: /Attempting to deserialize object on a CUDA device but torch\.cuda\.is_available\(\) is False/i,
    summary: t => t.__('the data was saved on a GPU')
  },
  { pattern: /failed call to cuInit/i, summary: t => t.__('no CUDA device on this pod') },
  {
    pattern: /Unable to initialize backend 'cuda'|Unknown backend:? '?gpu'? requested/i,
    summary: t => t.__('no CUDA backend on this pod')
  },
  { pattern: /CudaSupportError|CUDA is not available/i, summary: t => t.__('CUDA is not available on this pod') }
];

/** The kinds of output the detector reads (nbformat's output dicts). */
export interface IOutputLike {
  output_type: string;
  ename?: string;
  evalue?: string;
  traceback?: string[];
  name?: string;
  text?: string | string[];
}

/** Terminal colour codes in tracebacks would split the words the patterns look for. */
function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '');
}

function outputText(output: IOutputLike): string {
  if (output.output_type === 'error') {
    return [output.ename ?? '', output.evalue ?? '', ...(output.traceback ?? [])].join('\n');
  }
  if (output.output_type === 'stream' && output.name === 'stderr') {
    return Array.isArray(output.text) ? output.text.join('') : output.text ?? '';
  }
  return '';
}

/** The first CUDA error in these outputs: its meaning and the matched text; else null. */
export function detectCudaError(
  trans: TranslationBundle,
  outputs: readonly IOutputLike[]
): { summary: string; match: string } | null {
  for (const output of outputs) {
    const text = stripAnsi(outputText(output));
    if (!text) {
      continue;
    }
    for (const { pattern, summary } of PATTERNS) {
      const found = pattern.exec(text);
      if (found) {
        return { summary: summary(trans), match: found[0] };
      }
    }
  }
  return null;
}
