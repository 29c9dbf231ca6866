/**
 * Notebooks for which the user chose "Don't ask again": kept in JupyterLab's settings
 * (`quietNotebooks` of gpushift's settings), so the choice follows the user to any browser
 * and can be undone in the Settings Editor. Earlier versions kept it in the browser's
 * localStorage: that list is moved into the settings once, then removed.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';

/** Where earlier versions kept the list. */
export const LEGACY_STORAGE_KEY = 'gpushift-jupyter:quiet-notebooks';
export const SETTING_KEY = 'quietNotebooks';

/** The paths of a stored value (a JSON list of strings); [] for anything else. */
export function pathsOf(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((p): p is string => typeof p === 'string') : [];
}

/** `current` with `added` appended, no duplicates, order kept (pure). */
export function mergePaths(current: readonly string[], added: readonly string[]): string[] {
  return [...new Set([...current, ...added])];
}

export class QuietNotebooks {
  has(path: string): boolean {
    return this._paths.has(path);
  }

  add(path: string): void {
    this._paths.add(path);
    void this._save();
  }

  /** Follow the settings; move a localStorage list into them once. */
  async attach(settings: ISettingRegistry.ISettings): Promise<void> {
    this._settings = settings;
    const read = () => {
      // Paths added before the settings loaded stay (they are saved below).
      const stored = pathsOf(settings.composite[SETTING_KEY]);
      this._paths = new Set(mergePaths(stored, [...this._pending]));
    };
    settings.changed.connect(read);
    read();
    const legacy = readLegacy();
    if (legacy.length || this._pending.size) {
      this._pending = new Set([...this._pending, ...legacy]);
      read();
      await this._save();
    }
    if (legacy.length) {
      try {
        window.localStorage.removeItem(LEGACY_STORAGE_KEY);
      } catch {
        // Storage not available: nothing to remove.
      }
    }
  }

  private async _save(): Promise<void> {
    if (!this._settings) {
      this._pending = new Set([...this._pending, ...this._paths]);
      return;
    }
    const stored = pathsOf(this._settings.composite[SETTING_KEY]);
    const merged = mergePaths(stored, [...this._paths]);
    this._pending.clear();
    if (merged.length !== stored.length) {
      try {
        await this._settings.set(SETTING_KEY, merged);
      } catch (error) {
        console.warn('gpushift: the "don\'t ask again" choice was not saved', error);
      }
    }
  }

  private _paths = new Set<string>();
  private _pending = new Set<string>();
  private _settings: ISettingRegistry.ISettings | null = null;
}

function readLegacy(): string[] {
  try {
    return pathsOf(JSON.parse(window.localStorage.getItem(LEGACY_STORAGE_KEY) ?? '[]'));
  } catch {
    return [];
  }
}
