/**
 * On a GPU pod: while the sidecar's idle warning runs, a countdown notification with
 * "Stay on GPU", naming what the move would stop without saving (consoles, terminals)
 * and the variables it would leave behind.
 */
import { Notification } from '@jupyterlab/apputils';

import { idleWarningMessage } from './countdown';
import { TranslationBundle } from './i18n';
import { IMigrationService } from './tokens';
import { notSavedNames } from './willStop';

const NOT_SAVED_REFRESH_MS = 5000;

export class IdleWarning {
  constructor(
    private readonly _service: IMigrationService,
    private readonly _trans: TranslationBundle
  ) {
    _service.changed.connect(this._update, this);
  }

  dispose(): void {
    this._service.changed.disconnect(this._update, this);
    this._stopTicking();
  }

  private _update(): void {
    const left = this._service.idleSecondsLeft();
    if (left === null || this._service.migrating) {
      this._close();
      return;
    }
    if (this._noticeId === null) {
      this._notSaved = null;
      this._askedAt = 0;
    }
    if (Date.now() - this._askedAt >= NOT_SAVED_REFRESH_MS) {
      // Asked when the warning starts and every few seconds while it runs: a terminal
      // closed meanwhile is no longer named.
      this._askedAt = Date.now();
      void this._service.podSessions(true).then(pod => {
        this._notSaved = notSavedNames(this._trans, pod);
      });
    }
    const message = idleWarningMessage(this._trans, left, this._notSaved);
    if (this._noticeId === null) {
      this._noticeId = Notification.emit(message, 'warning', {
        autoClose: false,
        actions: [
          {
            label: this._trans.__('Stay on GPU'),
            caption: this._trans.__('Keep this GPU; the idle timer starts again'),
            callback: () => {
              this._close();
              void this._service.stayOnGpu().then(ok => {
                if (ok) {
                  Notification.success(this._trans.__('Staying on the GPU. The idle timer starts again.'), {
                    autoClose: 4000
                  });
                }
              });
            }
          }
        ]
      });
      this._startTicking();
    } else {
      Notification.update({ id: this._noticeId, message, type: 'warning' });
    }
  }

  private _close(): void {
    this._stopTicking();
    if (this._noticeId !== null) {
      Notification.dismiss(this._noticeId);
      this._noticeId = null;
    }
  }

  /** The countdown moves every second between polls. */
  private _startTicking(): void {
    this._stopTicking();
    this._ticker = setInterval(() => this._update(), 1000);
  }

  private _stopTicking(): void {
    if (this._ticker !== null) {
      clearInterval(this._ticker);
      this._ticker = null;
    }
  }

  private _noticeId: string | null = null;
  /** What the idle move would lose (`notSavedNames`), and when it was last asked. */
  private _notSaved: string | null = null;
  private _askedAt = 0;
  private _ticker: ReturnType<typeof setInterval> | null = null;
}
