/**
 * The progress notification of a migration: one per migration, updated through every
 * phase, also while the notebook server restarts on the new pod. A move this page asked
 * for gets its notification at once ("saving your variables", step 1), before the
 * server's answer names the migration.
 */
import { Notification, showErrorMessage } from '@jupyterlab/apputils';

import { TranslationBundle } from './i18n';
import {
  asSeenByThePage,
  describeMigration,
  isTerminal,
  phaseMessage,
  serverGoneMessage,
  stepNumber,
  stepOf
} from './phases';
import { IMigrationService } from './tokens';
import { IMigration } from './types';

export class MigrationProgress {
  constructor(
    private readonly _service: IMigrationService,
    private readonly _trans: TranslationBundle
  ) {
    _service.changed.connect(this._update, this);
    this._update();
  }

  dispose(): void {
    this._service.changed.disconnect(this._update, this);
  }

  private _update(): void {
    const starting = this._service.starting;
    if (starting !== null) {
      this._showStarting(starting);
      return;
    }
    const migration = asSeenByThePage(this._service.migration);
    // Still the migration from before this page's request: the server refused the move.
    const refused = migration === null || this._seen.has(migration.id);
    if (this._noticeFor === PENDING && refused) {
      if (this._noticeId !== null) {
        // The server refused the move (its own notification says why).
        Notification.dismiss(this._noticeId);
      }
      this._noticeId = this._noticeFor = null;
      this._shown = '';
    }
    if (migration === null) {
      return;
    }
    if (this._noticeFor === PENDING) {
      this._noticeFor = migration.id; // the notice shown while the request was answered
      this._step = 1;
    }
    const down = this._service.serverDownSince;
    let text: string;
    let type: Notification.TypeOptions;
    const serverAway = down !== null && !isTerminal(migration.phase);
    // Steps never go back (a poll may read an older phase after a newer one).
    const step = Math.max(stepNumber(migration.phase, serverAway), this._stepFor(migration.id));
    if (serverAway) {
      text = serverGoneMessage(this._trans, migration.target, (Date.now() - down) / 1000);
      type = 'in-progress';
    } else if (!isTerminal(migration.phase) && step > stepNumber(migration.phase)) {
      return; // an older phase than the one shown: keep the newer message
    } else {
      ({ message: text, type } = describeMigration(this._trans, migration));
    }
    const key = `${migration.id}:${text}`;
    if (key === this._shown) {
      return;
    }
    if (isTerminal(migration.phase) && this._ended.has(migration.id)) {
      return; // its end was shown already (a late poll may bring it back)
    }
    if (this._noticeFor !== migration.id && isTerminal(migration.phase)) {
      // An old migration this page never followed: nothing to report now.
      this._seen.add(migration.id);
      this._ended.add(migration.id);
      return;
    }
    this._seen.add(migration.id);
    if (isTerminal(migration.phase)) {
      this._ended.add(migration.id);
    }
    this._shown = key;
    this._step = step;
    const options = this._options(migration, type);
    if (this._noticeFor === migration.id && this._noticeId !== null) {
      Notification.update({ id: this._noticeId, message: text, type, ...options });
    } else {
      this._noticeId = Notification.emit(text, type, options);
      this._noticeFor = migration.id;
    }
  }

  private _stepFor(id: string): number {
    return this._noticeFor === id ? this._step : 0;
  }

  /** Step 1 while this page's request is answered (the server saves the variables). */
  private _showStarting(target: 'gpu' | 'cpu'): void {
    const text = `${phaseMessage(this._trans, 'checkpointing', target)} ${stepOf('checkpointing')}`;
    if (this._noticeFor === PENDING && this._noticeId !== null) {
      return;
    }
    this._noticeId = Notification.emit(text, 'in-progress', { autoClose: false });
    this._noticeFor = PENDING;
    this._shown = `${PENDING}:${text}`;
    this._step = 1;
  }

  private _options(
    migration: IMigration,
    type: Notification.TypeOptions
  ): Notification.IOptions<null> {
    if (type === 'success') {
      return { autoClose: 6000, actions: [] };
    }
    if (type === 'error' || type === 'warning') {
      const trans = this._trans;
      const detail = migration.error || trans.__('no reason given');
      const title =
        migration.target === 'gpu'
          ? trans.__('The move to a GPU pod did not complete')
          : trans.__('The move to a CPU pod did not complete');
      return {
        autoClose: false,
        actions: [
          {
            label: trans.__('Details'),
            callback: () =>
              void showErrorMessage(title, {
                message: `${detail}\n\n${trans.__('Migration %1, phase %2.', migration.id, migration.phase)}`
              })
          }
        ]
      };
    }
    return { autoClose: false, actions: [] };
  }

  private _shown = '';
  private _step = 0;
  private _noticeId: string | null = null;
  private _noticeFor: string | null = null;
  private _seen = new Set<string>();
  private _ended = new Set<string>();
}

/** `_noticeFor` while this page's move request has no migration id yet. */
const PENDING = '\u0000pending';
