/**
 * "Resume where you left off": a notebook whose kernel is a fresh process — opened after
 * a Kubeflow Stop/Start, a pod restart or a server crash, or restarted (by the user, or
 * by the server after an out-of-memory kill) — while a checkpoint of an earlier kernel is
 * kept: the user is offered to bring its variables back. The server decides whether the
 * kernel may be offered (never one that ran cells, nor one a move's restore is for); this
 * asks once per kernel process, one question at a time, and is quiet when the server
 * extension does not answer. The words are in resumeText.ts.
 */
import { Dialog, ISessionContext, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import { ApiClient, ApiError } from './api';
import { TranslationBundle } from './i18n';
import { showDetails } from './restore';
import {
  IResumeNotice,
  IResumeOffer,
  IResumeResult,
  KernelProcesses,
  resumeOutcome,
  resumeQuestion,
  resumeRefused,
  shouldOffer,
  worthAskingAgain
} from './resumeText';
import { SerialGate } from './serialGate';

/** The server waits up to 30 s for a kernel that is still starting. */
const ASK_TIMEOUT_MS = 45000;
/** A restore of a large state takes a while. */
const RESUME_TIMEOUT_MS = 10 * 60 * 1000;
/** When the server was busy with the kernel (attaching kishu): ask again this often. */
const ASK_AGAIN_MS = 2000;
const ASK_AGAIN_TIMES = 3;

export class ResumeOffer {
  constructor(
    tracker: INotebookTracker,
    private readonly _api: ApiClient,
    private readonly _trans: TranslationBundle,
    /** Paths a move's restore is for: that restore brings their state back. */
    private readonly _skip: () => ReadonlySet<string> = () => new Set<string>()
  ) {
    tracker.widgetAdded.connect((_, panel) => this._watch(panel));
    tracker.forEach(panel => this._watch(panel));
  }

  private _watch(panel: NotebookPanel): void {
    const context = panel.sessionContext;
    if (this._watched.has(context)) {
      return; // another view of the same notebook
    }
    this._watched.add(context);
    const check = () => this._check(context);
    context.kernelChanged.connect(check);
    context.statusChanged.connect(check);
    context.disposed.connect(() => {
      context.kernelChanged.disconnect(check);
      context.statusChanged.disconnect(check);
    });
    check();
  }

  private _check(context: ISessionContext): void {
    const kernel = context.session?.kernel;
    if (!kernel || context.isDisposed) {
      return;
    }
    const key = this._processes.status(kernel.id, kernel.status);
    const path = context.path;
    if (key === null || !path || this._skip().has(path) || !this._processes.claim(key)) {
      return;
    }
    void this._questions.run('ask', () => this._offer(context, kernel.id, key, path));
  }

  /** The kernel process `key` is still the notebook's. */
  private _current(context: ISessionContext, kernelId: string, key: string): boolean {
    const kernel = context.session?.kernel;
    return (
      !context.isDisposed &&
      kernel?.id === kernelId &&
      this._processes.current(kernelId) === key &&
      kernel.status !== 'dead'
    );
  }

  private async _offer(
    context: ISessionContext,
    kernelId: string,
    key: string,
    path: string
  ): Promise<void> {
    const endpoint = `resume?kernel_id=${encodeURIComponent(kernelId)}&path=${encodeURIComponent(path)}`;
    let offer: IResumeOffer | null = null;
    for (let asked = 0; ; asked++) {
      if (!this._current(context, kernelId, key)) {
        return;
      }
      try {
        offer = await this._api.get<IResumeOffer>(endpoint, ASK_TIMEOUT_MS);
      } catch (error) {
        console.warn(`gpushift: no resume offer looked up for ${path}`, error);
        return;
      }
      if (!worthAskingAgain(offer) || asked >= ASK_AGAIN_TIMES) {
        break;
      }
      await new Promise(resolve => setTimeout(resolve, ASK_AGAIN_MS));
    }
    if (!offer || !shouldOffer(offer)) {
      if (offer?.why) {
        console.debug(`gpushift: no resume offered for ${path}: ${offer.why}`);
      }
      return;
    }
    if (!this._current(context, kernelId, key)) {
      return;
    }
    if (!(await this._ask(context, kernelId, key, offer, path))) {
      return;
    }
    await this._resume(kernelId, offer, path);
  }

  /** The question; closed unanswered when the kernel process goes away meanwhile. */
  private async _ask(
    context: ISessionContext,
    kernelId: string,
    key: string,
    offer: IResumeOffer,
    path: string
  ): Promise<boolean> {
    const question = resumeQuestion(this._trans, offer, path);
    const dialog = new Dialog({
      title: question.title,
      body: questionBody(question),
      buttons: [
        Dialog.cancelButton({ label: question.fresh }),
        Dialog.okButton({ label: question.resume })
      ],
      defaultButton: 0
    });
    const gone = () => {
      if (!this._current(context, kernelId, key)) {
        dialog.reject();
      }
    };
    context.kernelChanged.connect(gone);
    context.statusChanged.connect(gone);
    try {
      const result = await dialog.launch();
      return result.button.accept && this._current(context, kernelId, key);
    } finally {
      context.kernelChanged.disconnect(gone);
      context.statusChanged.disconnect(gone);
      dialog.dispose();
    }
  }

  private async _resume(kernelId: string, offer: IResumeOffer, path: string): Promise<void> {
    const trans = this._trans;
    const notebook = offer.path || path;
    const notice = Notification.emit(
      trans.__('Restoring the variables of %1…', notebook),
      'in-progress',
      { autoClose: false }
    );
    let text: IResumeNotice;
    try {
      const result = await this._api.post<IResumeResult>(
        'resume',
        { kernel_id: kernelId, path: notebook, commit_id: offer.commit_id },
        RESUME_TIMEOUT_MS
      );
      text = resumeOutcome(trans, result, notebook);
    } catch (error) {
      text =
        error instanceof ApiError
          ? resumeRefused(trans, error.code, error.detail, notebook)
          : resumeRefused(trans, 'error', String(error), notebook);
    }
    const details = text.details;
    Notification.update({
      id: notice,
      message: text.message,
      type: text.type,
      autoClose: text.type === 'success' ? 8000 : false,
      actions: details
        ? [
            {
              label: trans.__('Details'),
              callback: () => void showDetails(trans, details, trans.__('Resume where you left off'))
            }
          ]
        : []
    });
  }

  private _watched = new WeakSet<ISessionContext>();
  private _processes = new KernelProcesses();
  private _questions = new SerialGate();
}

function questionBody(question: ReturnType<typeof resumeQuestion>): Widget {
  const node = document.createElement('div');
  node.className = 'gpushift-resume';
  const paragraph = (text: string, className?: string) => {
    const p = document.createElement('p');
    p.textContent = text;
    if (className) {
      p.className = className;
    }
    node.appendChild(p);
    return p;
  };
  paragraph(question.summary);
  paragraph(question.variables, 'gpushift-resume-variables');
  if (question.notSaved.length) {
    const [heading, ...lines] = question.notSaved;
    paragraph(heading);
    const list = document.createElement('ul');
    list.className = 'gpushift-resume-not-saved';
    for (const line of lines) {
      const item = document.createElement('li');
      item.textContent = line;
      list.appendChild(item);
    }
    node.appendChild(list);
  }
  paragraph(question.choice);
  return new Widget({ node });
}
