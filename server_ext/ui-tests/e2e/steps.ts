/**
 * Steps and cells of the end-to-end move tests (move.spec.ts).
 */
import { IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { expect, Locator } from '@playwright/test';
import * as path from 'path';

import { SCREENSHOTS } from '../tests/helpers';

/** The notebook of the tests (JupyterLab's first new notebook, not renamed: the
 * session keeps its path). */
export const NOTEBOOK = 'Untitled.ipynb';

/** Varied state: a 50 MiB array, a DataFrame, instances of classes defined here (one
 * counts its restores). */
export const STATE_CELL = `import numpy as np, pandas as pd
big = np.random.default_rng(7).random(50 * 2**20 // 8)  # 50 MiB of float64
frame = pd.DataFrame({"a": range(1000), "b": [i / 2 for i in range(1000)]})

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5

point = Point(3, 4)

class RestoreCounter:  # counts the times the state is unpickled into this kernel
    def __setstate__(self, state):
        import builtins
        builtins.restores = getattr(builtins, "restores", 0) + 1
        self.__dict__.update(state)

counter = RestoreCounter()
counter.made = "before the moves"  # a non-empty state: unpickling calls __setstate__
print("checksum", repr(float(big.sum())), big.nbytes // 2**20, "MiB")`;

/** What the state looks like now (also the GPU cell's first line of output), and how
 * many times it was restored into this kernel (one move: once, however many tabs). */
const STATE_LINE =
  'print("checksum", repr(float(big.sum())), "frame", frame.shape, "point", point.norm())\n' +
  'import builtins; print("restores", getattr(builtins, "restores", 0))';

/** Flagged by the classifier (line 2: `device = "cuda"`); needs no torch. */
export const GPU_CELL = `import os
device = "cuda"
${STATE_LINE}
print("gpu", os.environ.get("GPUSHIFT_FAKE_GPU"), device)`;

/** The state of a second notebook open in another tab of the page (it moves too). */
export const SECOND_STATE_CELL = 'second = {"answer": 41 + 1}\nprint("second", second["answer"])';

/** Its check after the move: its own state, on the pod it moved to. */
export const SECOND_CHECK_CELL =
  'import os\nprint("second", second["answer"], "gpu", os.environ.get("GPUSHIFT_FAKE_GPU"))';

/** The same check on a CPU pod (not flagged). */
export const CHECKSUM_CELL = `import os
${STATE_LINE}
print("gpu", os.environ.get("GPUSHIFT_FAKE_GPU"))`;

/** SCREENSHOTS/NAME.png (NAME starts with e2e-): the ignored folder of every run, or the
 * README's pictures under `make screenshots` (tests/helpers.ts). */
export async function shot(page: IJupyterLabPageFixture, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

/** Sources of the current notebook's cells from `first` on, set through the notebook
 * model (typing would auto-indent and auto-close brackets); cells are added as needed. */
export async function setSources(
  page: IJupyterLabPageFixture,
  sources: string[],
  first = 0
): Promise<void> {
  await page.evaluate(([sources, first]) => {
    const panel: any = (window as any).jupyterapp.shell.currentWidget;
    const shared = panel.content.model.sharedModel;
    sources.forEach((source, offset) => {
      const index = first + offset;
      if (index < shared.cells.length) {
        shared.cells[index].setSource(source);
      } else {
        shared.insertCell(index, { cell_type: 'code', source });
      }
    });
  }, [sources, first] as [string[], number]);
}

/** The cell's text outputs joined. */
export async function textOutput(page: IJupyterLabPageFixture, index: number): Promise<string> {
  return ((await page.notebook.getCellTextOutput(index)) ?? []).join('');
}

/** The checksum printed by the state cell or the checks. */
export function checksumOf(output: string): string | null {
  return /checksum (\S+)/.exec(output)?.[1] ?? null;
}

/** GET api_extension (the pod's runtime config), through the proxy. */
export async function podFacts(page: IJupyterLabPageFixture): Promise<Record<string, any>> {
  const base = test.info().project.use.baseURL;
  const answer = await page.request.get(`${base}/api_extension`);
  expect(answer.status()).toBe(200);
  return answer.json();
}

/** The full text of the restore notification's "Details" dialog (then closed). */
export async function restoreDetails(
  page: IJupyterLabPageFixture,
  notice: Locator,
  title = 'What was restored'
): Promise<string> {
  await notice.getByRole('button', { name: 'Details' }).click();
  const dialog = page.locator('.jp-Dialog').filter({ hasText: title });
  await expect(dialog).toBeVisible();
  const text = (await dialog.locator('.gpushift-restore-details').textContent()) ?? '';
  await dialog.getByRole('button', { name: 'Close' }).click();
  await expect(dialog).toHaveCount(0);
  return text;
}
