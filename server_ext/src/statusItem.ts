/**
 * The status bar item: CPU / GPU (type × count), the idle countdown, "optimizer off",
 * a move in progress, and the current notebook's background checkpoint (in the tooltip;
 * a mark when the variables were not saved in the background).
 */
import { Widget } from '@lumino/widgets';

import { BackgroundWatcher } from './background';
import { backgroundText } from './backgroundText';
import { formatCountdown } from './countdown';
import { TranslationBundle } from './i18n';
import { isTerminal, phaseMessage, serverGoneMessage } from './phases';
import { describeBounds, gpuLabel, podKindText } from './podKind';
import { IMigrationService } from './tokens';

/** The item's text and tooltip (pure apart from reading the service): the text short,
 * the details (GPU model, node, idle timeout and bounds) in the tooltip. */
export function statusText(
  trans: TranslationBundle,
  service: IMigrationService
): { text: string; title: string; kind: string } {
  const pod = service.pod;
  const m = service.migration;
  if (service.migrating) {
    const target = m && !isTerminal(m.phase) ? m.target : service.starting ?? m?.target ?? 'gpu';
    const phase = m && !isTerminal(m.phase) ? m.phase : 'checkpointing';
    return {
      text: target === 'gpu' ? trans.__('Moving to GPU…') : trans.__('Moving to CPU…'),
      title:
        service.serverDownSince !== null
          ? serverGoneMessage(trans, target, (Date.now() - service.serverDownSince) / 1000)
          : phaseMessage(trans, phase, target, m?.error),
      kind: 'moving'
    };
  }
  if (service.serverDownSince !== null) {
    return {
      text: trans.__('Pod: reconnecting…'),
      title: trans.__('The notebook server is not answering.'),
      kind: 'unknown'
    };
  }
  const base = podKindText(trans, pod);
  const bounds = service.config?.idleBounds ?? null;
  switch (pod.kind) {
    case 'gpu': {
      const left = service.idleSecondsLeft();
      const idle = service.idle;
      const node = service.config?.node;
      const lines = [
        trans.__('This notebook runs on a GPU pod: %1.', gpuLabel(pod.resource, pod.count, pod.name)),
        node ? trans.__('Node: %1.', node) : '',
        typeof idle?.timeout === 'number'
          ? trans.__('Idle timeout %1 s.', Math.round(idle.timeout))
          : '',
        // Why the idle timer stands where it does (a stay, a busy kernel, an idle move
        // the admin's settings held back): the sidecar's words.
        idle?.reason ? trans.__('Idle timer: %1.', idle.reason.replace(/\.+$/, '')) : '',
        describeBounds(trans, bounds)
      ];
      return {
        text: left === null ? base : trans.__('%1 · CPU in %2', base, formatCountdown(left)),
        title: lines.filter(line => line).join('\n'),
        kind: 'gpu'
      };
    }
    case 'cpu':
      return {
        text: base,
        title: trans.__('This notebook runs on a CPU pod; cells that need a GPU can move it to one.'),
        kind: 'cpu'
      };
    case 'off':
      return {
        text: base,
        title: trans.__('No moves between CPU and GPU pods: %1.', pod.reason),
        kind: 'off'
      };
    case 'unknown':
      return { text: base, title: pod.reason, kind: 'unknown' };
  }
}

export class PodStatusItem extends Widget {
  constructor(
    private readonly _service: IMigrationService,
    private readonly _trans: TranslationBundle,
    /** What a click does ("Move to GPU…"); none: the item only shows. */
    onClick: (() => void) | null = null,
    /** The current notebook's background checkpoint; none: not shown. */
    private readonly _background: BackgroundWatcher | null = null
  ) {
    super();
    this.addClass('gpushift-status');
    this.node.setAttribute('data-testid', 'gpushift-status');
    if (onClick) {
      this.addClass('jp-mod-highlighted');
      this.node.addEventListener('click', onClick);
    }
    _service.changed.connect(this._render, this);
    _background?.changed.connect(this._render, this);
    this._ticker = setInterval(() => {
      if (this._service.idleSecondsLeft() !== null) {
        this._render(); // the countdown moves between polls
      }
    }, 1000);
    this._render();
  }

  dispose(): void {
    clearInterval(this._ticker);
    this._service.changed.disconnect(this._render, this);
    this._background?.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(): void {
    const { text, title, kind } = statusText(this._trans, this._service);
    // During a move (or while the server is gone) the move's words only.
    const report = kind === 'moving' || kind === 'unknown' ? null : this._background?.report ?? null;
    const { line, mark } = backgroundText(this._trans, report);
    this.node.textContent = text;
    this.node.title = line ? `${title}\n${line}` : title;
    this.node.dataset.podKind = kind;
    // At a glance (style/base.css): the variables were not saved in the background.
    if (mark && report) {
      this.node.dataset.background = report.state;
    } else {
      delete this.node.dataset.background;
    }
  }

  private _ticker: ReturnType<typeof setInterval>;
}
