/**
 * After a move: the notebook server answers again on the new pod (same URL). Reopen the
 * notebook's session with a fresh kernel, ask the server to restore the saved state into
 * it, say what came back, and run the cell that asked for the move.
 *
 * Driven by the server's state (a migration in phase `restoring`), not by this page's
 * memory, so a page reloaded during the move does the same.
 *
 * The new pod's server restores the move by itself as soon as it starts, browser or not;
 * this page then collects what it did (the same POST /restore answers it, with the
 * kernel the state went into, which the notebook is switched to) and runs the held cell
 * — or offers it, when the restore is older than a couple of minutes.
 *
 * A move that could not complete after the old pod was replaced (no GPU free: the guard
 * rolled the notebook back to CPU) is `recoverable`: the same restore brings the state
 * back into the notebook's fresh kernel, the held cell is not run, and the user is told
 * why, with "Try again" (`recovery.ts` decides and words it).
 */
import { Notification, showDialog, Dialog } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { ApiClient, ApiError } from './api';
import { TranslationBundle } from './i18n';
import { IMigrationService } from './tokens';
import { IMigration, IRestoreResult } from './types';
import { isTerminal } from './phases';
import { notebookPathOf, otherNotebookPathsOf } from './migrationPath';
import { describeRestore, heldCellIsStale, heldCellToRun } from './restoreText';
import { describeRecovery, restoreKindOf, retryRequest } from './recovery';

const KERNEL_READY_TIMEOUT_MS = 120000;
/** How long to wait while the server (or another tab) restores the move itself: the
 * sidecar's own deadline for `restoring` is 600 s. */
const SERVER_RESTORE_WAIT_MS = 600000;
const SERVER_RESTORE_POLL_MS = 1000;

export class RestoreFlow {
  constructor(
    private readonly _service: IMigrationService,
    private readonly _api: ApiClient,
    private readonly _docs: IDocumentManager,
    private readonly _trans: TranslationBundle
  ) {
    _service.changed.connect(this._check, this);
  }

  /** Paths whose kernel is being restored (the attach watcher leaves them alone). */
  get busyPaths(): ReadonlySet<string> {
    return this._busyPaths;
  }

  private _check(): void {
    const m = this._service.migration;
    if (m && !isTerminal(m.phase)) {
      this._watched.add(m.id);
    }
    const kind = restoreKindOf(
      m,
      this._service.serverDownSince !== null,
      this._handled,
      this._watched
    );
    if (!m || kind === null) {
      return;
    }
    if (kind === 'recover') {
      // Only for a notebook open on this page (or the one it moved): the state goes into
      // that notebook's kernel; another tab, or this one once the notebook is opened,
      // does it otherwise.
      const root = PageConfig.getOption('serverRoot');
      const path = notebookPathOf(m, root, this._service.movedPath(m.id));
      if (!path || (!this._docs.findWidget(path) && !this._service.movedPath(m.id))) {
        return;
      }
      this._handled.add(m.id);
      void this._recover(m, path);
      return;
    }
    this._handled.add(m.id);
    void this._restore(m);
  }

  /** The state of a move that did not complete, into the notebook's fresh kernel. */
  private async _recover(m: IMigration, path: string): Promise<void> {
    this._busyPaths.add(path);
    const trans = this._trans;
    const notice = Notification.emit(
      trans.__('The move did not complete: restoring the variables of %1 on this pod…', path),
      'in-progress',
      { autoClose: false }
    );
    try {
      const restored = await this._restoreInFreshKernel(path, notice);
      if (!restored) {
        return;
      }
      const { panel, kernel, result } = restored;
      const text = describeRecovery(trans, m, result);
      const actions: Notification.IAction[] = [
        {
          label: trans.__('Details'),
          callback: () =>
            void showDetails(trans, text.details, trans.__('The move did not complete'))
        }
      ];
      if (text.canRetry && result.ok) {
        const retry = retryRequest(m);
        actions.push({
          label: trans.__('Try again'),
          callback: () =>
            void this._service.move(retry.target, {
              reason: retry.reason,
              panel,
              pendingCell: retry.pendingCell
            })
        });
      }
      Notification.update({
        id: notice,
        message: text.message,
        type: text.type,
        autoClose: false,
        actions
      });
      this._busyPaths.delete(path);
      await this._service.attach(kernel.id, path);
    } catch (error) {
      const detail = error instanceof ApiError ? error.detail : String(error);
      Notification.update({
        id: notice,
        message: trans.__(
          'The move did not complete, and your variables could not be restored: %1',
          detail
        ),
        type: 'error',
        autoClose: false
      });
    } finally {
      this._busyPaths.delete(path);
      void this._service.refresh();
    }
  }

  private async _restore(m: IMigration): Promise<void> {
    const trans = this._trans;
    const root = PageConfig.getOption('serverRoot');
    const path = notebookPathOf(m, root, this._service.movedPath(m.id));
    if (!path) {
      Notification.warning(
        trans.__(
          'The move is done, but no notebook state was saved for it: your variables were not restored.'
        ),
        { autoClose: false }
      );
      return;
    }
    this._busyPaths.add(path);
    const notice = Notification.emit(trans.__('Restoring the variables of %1…', path), 'in-progress', {
      autoClose: false
    });
    try {
      const restored = await this._restoreInFreshKernel(path, notice);
      if (!restored) {
        return;
      }
      const { panel, kernel, result } = restored;
      const text = describeRestore(trans, result);
      Notification.update({
        id: notice,
        message: text.message,
        type: text.type,
        autoClose: text.type === 'success' ? 8000 : false,
        actions: text.details
          ? [
              {
                label: trans.__('Details'),
                callback: () =>
                  void showDetails(trans, text.details!, trans.__('What was restored'))
              }
            ]
          : []
      });
      this._busyPaths.delete(path);
      await this._service.attach(kernel.id, path);
      // The move is over now (the server told the sidecar): learn it before running the
      // pending cell, or the cell executor would hold it as "a move is in progress".
      await this._service.refresh();
      const held = heldCellToRun(result);
      if (held && heldCellIsStale(result, Date.now() / 1000)) {
        Notification.info(
          trans.__(
            'The cell that asked for the move has not run: your variables were restored while %1 was closed. Run it now?',
            path
          ),
          {
            autoClose: false,
            actions: [
              {
                label: trans.__('Run the held cell'),
                callback: () => void this._runPending(panel, held)
              }
            ]
          }
        );
      } else {
        await this._runPending(panel, held);
      }
      // The move's other notebooks open on this page: each tab collects its own.
      for (const other of otherNotebookPathsOf(m, root)) {
        if (other !== path && this._docs.findWidget(other)) {
          void this._restoreOther(other);
        }
      }
    } catch (error) {
      const detail = error instanceof ApiError ? error.detail : String(error);
      Notification.update({
        id: notice,
        message: trans.__('Your variables could not be restored: %1', detail),
        type: 'error',
        autoClose: false
      });
    } finally {
      this._busyPaths.delete(path);
      void this._service.refresh();
    }
  }

  /** Another notebook of the move, open in a tab here: switched to the kernel the
   * server restored its state into, and told what came back (no held cell: that one
   * belongs to the notebook that asked for the move). */
  private async _restoreOther(path: string): Promise<void> {
    const trans = this._trans;
    this._busyPaths.add(path);
    const notice = Notification.emit(trans.__('Restoring the variables of %1…', path), 'in-progress', {
      autoClose: false
    });
    try {
      const restored = await this._restoreInFreshKernel(path, notice);
      if (restored) {
        const text = describeRestore(trans, restored.result);
        Notification.update({
          id: notice,
          message: `${path}: ${text.message}`,
          type: text.type,
          autoClose: text.type === 'success' ? 8000 : false
        });
      }
    } catch (error) {
      const detail = error instanceof ApiError ? error.detail : String(error);
      Notification.update({
        id: notice,
        message: trans.__('The variables of %1 could not be restored: %2', path, detail),
        type: 'error',
        autoClose: false
      });
    } finally {
      this._busyPaths.delete(path);
    }
  }

  /**
   * The notebook opened with a fresh kernel, and the server's restore into it; null when
   * another tab restored it already (409: `notice` is dismissed).
   */
  private async _restoreInFreshKernel(
    path: string,
    notice: string
  ): Promise<{
    panel: NotebookPanel;
    kernel: Kernel.IKernelConnection;
    result: IRestoreResult;
  } | null> {
    const panel = await this._openNotebook(path);
    let kernel = await this._freshKernel(panel);
    const deadline = Date.now() + SERVER_RESTORE_WAIT_MS;
    for (;;) {
      try {
        const result = await this._api.post<IRestoreResult>(
          'restore',
          { kernel_id: kernel.id, path },
          300000
        );
        if (result.kernel_id && result.kernel_id !== kernel.id) {
          // The server restored into the kernel of the session it opened: use that one.
          await panel.sessionContext.changeKernel({ id: result.kernel_id });
          kernel = panel.sessionContext.session?.kernel ?? kernel;
        }
        return { panel, kernel, result };
      } catch (error) {
        const restoringElsewhere =
          error instanceof ApiError && error.status === 409 && error.code === 'already_restoring';
        if (restoringElsewhere && Date.now() < deadline) {
          // Another tab recovers this notebook's state now (a move's restore is
          // waited for by the server itself): ask again after it.
          await new Promise(resolve => setTimeout(resolve, SERVER_RESTORE_POLL_MS));
          continue;
        }
        if (error instanceof ApiError && error.status === 409) {
          Notification.dismiss(notice);
          return null;
        }
        throw error;
      }
    }
  }

  private async _openNotebook(path: string): Promise<NotebookPanel> {
    const widget = this._docs.findWidget(path) ?? this._docs.openOrReveal(path);
    if (!(widget instanceof NotebookPanel)) {
      throw new Error(this._trans.__('%1 did not open as a notebook', path));
    }
    await widget.context.ready;
    await widget.sessionContext.ready;
    return widget;
  }

  /** The kernel of a session on the new server; a stale one is replaced. */
  private async _freshKernel(panel: NotebookPanel): Promise<Kernel.IKernelConnection> {
    const context = panel.sessionContext;
    // Sessions of the old pod are gone from the new server: refreshing drops them.
    await context.sessionManager.refreshRunning();
    const running = new Set(Array.from(context.sessionManager.running(), s => s.id));
    if (!context.session || !running.has(context.session.id)) {
      // The new pod's server may have opened this notebook's session for its restore
      // already: join that kernel (where the state goes) rather than start another one
      // beside it, which would slow both and be closed again.
      const opened = await context.sessionManager.findByPath(panel.context.path);
      if (opened?.kernel) {
        await context.changeKernel({ id: opened.kernel.id });
      } else {
        const name =
          panel.model?.defaultKernelName || context.kernelPreference.name || 'python3';
        await context.changeKernel({ name });
      }
    }
    const kernel = context.session?.kernel;
    if (!kernel) {
      throw new Error(this._trans.__('no kernel could be started for the notebook'));
    }
    await withTimeout(kernel.info, KERNEL_READY_TIMEOUT_MS, this._trans.__('the new kernel did not start'));
    return kernel;
  }

  private async _runPending(
    panel: NotebookPanel,
    pending: { cell_id: string } | null
  ): Promise<void> {
    if (!pending) {
      return;
    }
    const notebook = panel.content;
    const index = notebook.widgets.findIndex(cell => cell.model.id === pending.cell_id);
    if (index < 0) {
      Notification.warning(
        this._trans.__('The cell that asked for the move is no longer in the notebook; run it again.'),
        { autoClose: false }
      );
      return;
    }
    notebook.deselectAll();
    notebook.activeCellIndex = index;
    await NotebookActions.run(notebook, panel.sessionContext);
  }

  private _handled = new Set<string>();
  /** Migrations this page saw under way (see `restoreKindOf`). */
  private _watched = new Set<string>();
  private _busyPaths = new Set<string>();
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A restore's details (what came back, what did not, why) in a dialog. */
export function showDetails(
  trans: TranslationBundle,
  details: string,
  title: string
): Promise<unknown> {
  const body = document.createElement('pre');
  body.className = 'gpushift-restore-details';
  body.textContent = details;
  return showDialog({
    title,
    body: new Widget({ node: body }),
    buttons: [Dialog.okButton({ label: trans.__('Close') })]
  });
}
