/**
 * The status bar item: CPU / GPU (type × count), the idle countdown, "optimizer off",
 * a move in progress.
 */
import { Widget } from '@lumino/widgets';

import { formatCountdown } from './countdown';
import { describeBounds, podKindText } from './podKind';
import { phaseMessage } from './phases';
import { IMigrationService } from './tokens';

/** The item's text and tooltip (pure apart from reading the service). */
export function statusText(service: IMigrationService): { text: string; title: string; kind: string } {
  const pod = service.pod;
  const m = service.migration;
  if (service.migrating && m) {
    const down = service.serverDownSince !== null;
    return {
      text: `Moving to ${m.target.toUpperCase()}… ${down ? '(pod restarting)' : `(${m.phase})`}`,
      title: phaseMessage(m.phase, m.target, m.error),
      kind: 'moving'
    };
  }
  if (service.serverDownSince !== null) {
    return { text: 'Pod: reconnecting…', title: 'The notebook server is not answering.', kind: 'unknown' };
  }
  const base = podKindText(pod);
  const bounds = service.config?.idleBounds ?? null;
  switch (pod.kind) {
    case 'gpu': {
      const left = service.idleSecondsLeft();
      const idle = service.idle;
      const timeout = typeof idle?.timeout === 'number' ? ` Idle timeout ${Math.round(idle.timeout)} s.` : '';
      return {
        text: left === null ? base : `${base} · idle, CPU in ${formatCountdown(left)}`,
        title: `This notebook runs on a GPU pod.${timeout} ${describeBounds(bounds)}`,
        kind: 'gpu'
      };
    }
    case 'cpu':
      return {
        text: base,
        title: 'This notebook runs on a CPU pod; cells that need a GPU can move it to one.',
        kind: 'cpu'
      };
    case 'off':
      return { text: base, title: `No moves between CPU and GPU pods: ${pod.reason}.`, kind: 'off' };
    case 'unknown':
      return { text: base, title: pod.reason, kind: 'unknown' };
  }
}

export class PodStatusItem extends Widget {
  constructor(private readonly _service: IMigrationService) {
    super();
    this.addClass('gpushift-status');
    this.node.setAttribute('data-testid', 'gpushift-status');
    _service.changed.connect(this._render, this);
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
    super.dispose();
  }

  private _render(): void {
    const { text, title, kind } = statusText(this._service);
    this.node.textContent = text;
    this.node.title = title;
    this.node.dataset.podKind = kind;
  }

  private _ticker: ReturnType<typeof setInterval>;
}
