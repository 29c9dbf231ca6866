/**
 * The progress notification of a migration: one per migration, updated through every
 * phase, also while the notebook server restarts on the new pod.
 */
import { Notification, showErrorMessage } from '@jupyterlab/apputils';

import { describeMigration, isTerminal, serverGoneMessage } from './phases';
import { IMigrationService } from './tokens';
import { IMigration } from './types';

export class MigrationProgress {
  constructor(private readonly _service: IMigrationService) {
    _service.changed.connect(this._update, this);
    this._update();
  }

  dispose(): void {
    this._service.changed.disconnect(this._update, this);
  }

  private _update(): void {
    const migration = this._service.migration;
    if (migration === null) {
      return;
    }
    const down = this._service.serverDownSince;
    let text: string;
    let type: Notification.TypeOptions;
    if (down !== null && !isTerminal(migration.phase)) {
      text = serverGoneMessage(migration.target, (Date.now() - down) / 1000);
      type = 'in-progress';
    } else {
      ({ message: text, type } = describeMigration(migration));
    }
    const key = `${migration.id}:${text}`;
    if (key === this._shown) {
      return;
    }
    if (this._noticeFor !== migration.id && isTerminal(migration.phase) && !this._seen.has(migration.id)) {
      // An old migration this page never followed: nothing to report now.
      this._seen.add(migration.id);
      return;
    }
    this._seen.add(migration.id);
    this._shown = key;
    const options = this._options(migration, type);
    if (this._noticeFor === migration.id && this._noticeId !== null) {
      Notification.update({ id: this._noticeId, message: text, type, ...options });
    } else {
      this._noticeId = Notification.emit(text, type, options);
      this._noticeFor = migration.id;
    }
  }

  private _options(
    migration: IMigration,
    type: Notification.TypeOptions
  ): Notification.IOptions<null> {
    if (type === 'success') {
      return { autoClose: 6000, actions: [] };
    }
    if (type === 'error' || type === 'warning') {
      const detail = migration.error || 'no reason given';
      return {
        autoClose: false,
        actions: [
          {
            label: 'Details',
            callback: () =>
              void showErrorMessage(`The move to a ${migration.target.toUpperCase()} pod did not complete`, {
                message: `${detail}\n\nMigration ${migration.id}, phase ${migration.phase}.`
              })
          }
        ]
      };
    }
    return { autoClose: false, actions: [] };
  }

  private _shown = '';
  private _noticeId: string | null = null;
  private _noticeFor: string | null = null;
  private _seen = new Set<string>();
}
