/**
 * The "Move to GPU…" dialog: the admin's GPU profiles, each with its GPU, what is free
 * now and the quota left; those a move cannot go to now are shown, greyed, with why.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { TranslationBundle } from './i18n';
import { IProfileRow, IProfilesAnswer, preselected, profileRows } from './profiles';

/** The dialog's body: one radio button per profile; its value is the chosen name. */
export class ProfileList extends Widget implements Dialog.IBodyWidget<string | null> {
  constructor(trans: TranslationBundle, answer: IProfilesAnswer) {
    super({ node: document.createElement('div') });
    this.addClass('gpushift-profile-picker');
    this.node.setAttribute('data-testid', 'gpushift-profile-picker');
    this._rows = profileRows(trans, answer);
    this._chosen = preselected(this._rows);
    const list = document.createElement('div');
    list.setAttribute('role', 'radiogroup');
    list.setAttribute('aria-label', trans.__('GPU profiles'));
    for (const row of this._rows) {
      list.appendChild(this._option(row));
    }
    this.node.appendChild(list);
    const note = capacityNote(trans, answer);
    if (note) {
      const p = document.createElement('p');
      p.className = 'gpushift-profile-note';
      p.textContent = note;
      this.node.appendChild(p);
    }
  }

  getValue(): string | null {
    return this._chosen;
  }

  private _option(row: IProfileRow): HTMLElement {
    const label = document.createElement('label');
    label.className = 'gpushift-profile';
    label.dataset.profile = row.name;
    if (!row.enabled) {
      label.classList.add('gpushift-profile-unavailable');
    }
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'gpushift-profile';
    input.value = row.name;
    input.disabled = !row.enabled;
    input.checked = row.name === this._chosen;
    input.addEventListener('change', () => {
      if (input.checked) {
        this._chosen = row.name;
      }
    });
    const text = document.createElement('span');
    const title = document.createElement('span');
    title.className = 'gpushift-profile-label';
    title.textContent = row.label;
    const detail = document.createElement('span');
    detail.className = 'gpushift-profile-detail';
    detail.textContent = row.detail;
    text.append(title, detail);
    label.append(input, text);
    return label;
  }

  private readonly _rows: IProfileRow[];
  private _chosen: string | null;
}

/** When the free GPUs were counted, or why they are not known. */
export function capacityNote(trans: TranslationBundle, answer: IProfilesAnswer): string {
  if (answer.capacityNote) {
    return answer.capacityNote;
  }
  if (answer.capacityAt) {
    const at = new Date(answer.capacityAt);
    if (!Number.isNaN(at.getTime())) {
      return trans.__(
        'Free GPUs as counted at %1; another notebook may take them first.',
        at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
      );
    }
  }
  return '';
}

/** Ask which profile to move to; null when the user cancelled or none can be chosen. */
export async function pickProfile(
  trans: TranslationBundle,
  answer: IProfilesAnswer
): Promise<string | null> {
  const body = new ProfileList(trans, answer);
  if (body.getValue() === null) {
    // Nothing can be chosen now: say why, with no button that would do nothing.
    await showDialog({
      title: trans.__('Move to GPU'),
      body,
      buttons: [Dialog.okButton({ label: trans.__('Close') })]
    });
    return null;
  }
  const result = await showDialog({
    title: trans.__('Move to GPU'),
    body,
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.okButton({
        label: trans.__('Move'),
        caption: trans.__('Save the variables, move to a pod with this GPU and restore them there')
      })
    ],
    focusNodeSelector: 'input[type="radio"]:checked'
  });
  return result.button.accept ? result.value : null;
}
