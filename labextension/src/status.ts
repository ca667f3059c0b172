/**
 * The engine status of a kernel, over the `gptoss-magics` comm (kernel side:
 * gptoss_magics/labcomm.py), and the status-bar item that shows it for the
 * active notebook.
 */

import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

/** The comm target, in both directions. */
export const COMM_TARGET = 'gptoss-magics';

export type EngineState = 'none' | 'loading' | 'ready' | 'dead';

/** The kernel's status message (see labcomm.message). */
export interface IEngineStatus {
  type: 'status';
  /** The engine state (`state` in the first protocol draft; see engineState). */
  engine?: EngineState | null;
  state?: EngineState | null;
  model: string | null;
  tiny: boolean;
  device: string | null;
  last_tokens_per_s: number | null;
  effort: string;
  max_tokens: number;
  temperature: number;
  rss_bytes: number | null;
  gpu_used_bytes: number | null;
  /** Background maps running in the kernel (df.gptoss.submit), with their progress. */
  background?: IBackgroundJob[];
  reasoning_budget?: number | null;
}

/** One background map's progress (see MapJob in gptoss_magics/frame.py). */
export interface IBackgroundJob {
  rows: number;
  rows_done: number;
  tokens_per_s?: number | null;
}

/** "312/1,000 rows (31%)" for the background maps of a status, or '' when none. */
export function backgroundText(status: IEngineStatus | null): string {
  const jobs = status?.background ?? [];
  if (jobs.length === 0) {
    return '';
  }
  const rows = jobs.reduce((n, j) => n + j.rows, 0);
  const done = jobs.reduce((n, j) => n + j.rows_done, 0);
  const share = rows > 0 ? Math.floor((100 * done) / rows) : 100;
  const what = jobs.length === 1 ? 'background map' : `${jobs.length} background maps`;
  return `${what} ${done.toLocaleString('en-US')}/${rows.toLocaleString('en-US')} rows (${share}%)`;
}

function isStatus(data: unknown): data is IEngineStatus {
  return (
    typeof data === 'object' &&
    data !== null &&
    (data as { type?: unknown }).type === 'status'
  );
}

/**
 * What one kernel connection tells about its engine.
 *
 * The kernel opens a comm at `%load_ext gptoss_magics` (we register the target);
 * when we connect to a kernel that loaded the extension earlier (a page reload),
 * we open one ourselves. A kernel without the extension closes such a comm at once,
 * which is fine: we try again after a cell that mentions gptoss has run.
 */
export class KernelEngineStatus {
  constructor(readonly kernel: Kernel.IKernelConnection) {
    kernel.registerCommTarget(COMM_TARGET, (comm, msg) => {
      this._adopt(comm);
      this._apply(msg.content.data);
    });
    kernel.statusChanged.connect(this._onKernelStatus, this);
    kernel.connectionStatusChanged.connect(this._onConnection, this);
    kernel.disposed.connect(() => this._setComm(null));
    void this.probe();
  }

  /** Emitted when the status (or whether we know it) changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The last status the kernel sent, or null when it has not talked to us. */
  get status(): IEngineStatus | null {
    return this._status;
  }

  /** Whether a comm to the kernel's extension is open. */
  get connected(): boolean {
    return this._comm !== null;
  }

  /**
   * Open a comm when the kernel already has comms of our target, i.e. the
   * extension is loaded there (asks with comm_info, so a kernel without it sees
   * nothing and logs nothing).
   */
  async probe(): Promise<void> {
    if (this._comm || this._probing || this.kernel.isDisposed) {
      return;
    }
    this._probing = true;
    try {
      const reply = await this.kernel.requestCommInfo({ target_name: COMM_TARGET });
      const content = reply.content as KernelMessage.ICommInfoReplyMsg['content'];
      if (content.status === 'ok' && Object.keys(content.comms).length > 0) {
        this.open();
      }
    } catch {
      // kernel not ready, restarting or gone: we try again later
    } finally {
      this._probing = false;
    }
  }

  /** Open a comm to the kernel's extension (quietly closed if it has none). */
  open(): void {
    if (this._comm || this.kernel.isDisposed) {
      return;
    }
    try {
      const comm = this.kernel.createComm(COMM_TARGET);
      this._setComm(comm);
      comm.open({}).done.catch(() => undefined);
    } catch {
      this._setComm(null);
    }
  }

  private _adopt(comm: Kernel.IComm): void {
    const old = this._comm;
    this._setComm(comm);
    if (old && old !== comm && !old.isDisposed) {
      // one comm per connection is enough: the kernel forgets the old one
      try {
        old.close();
      } catch {
        // already closed
      }
    }
  }

  private _setComm(comm: Kernel.IComm | null): void {
    this._comm = comm;
    if (comm) {
      comm.onMsg = msg => this._apply(msg.content.data);
      comm.onClose = () => {
        if (this._comm === comm) {
          this._comm = null;
        }
      };
    }
  }

  private _apply(data: unknown): void {
    if (isStatus(data)) {
      this._status = data;
      this._changed.emit();
    }
  }

  private _forget(): void {
    this._comm = null;
    if (this._status !== null) {
      this._status = null;
      this._changed.emit();
    }
  }

  private _onKernelStatus(_: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // a new process: the extension (and the model) are gone
      this._forget();
    }
  }

  private _onConnection(
    _: Kernel.IKernelConnection,
    status: Kernel.ConnectionStatus
  ): void {
    if (status === 'connected') {
      void this.probe();
    }
  }

  private _comm: Kernel.IComm | null = null;
  private _status: IEngineStatus | null = null;
  private _probing = false;
  private _changed = new Signal<this, void>(this);
}

function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '-';
  }
  return `${(n / 2 ** 20).toFixed(0)} MiB`;
}

/** The engine state of a status message ('none' when unknown). */
export function engineState(status: IEngineStatus | null): EngineState {
  return status?.engine ?? status?.state ?? 'none';
}

/** The one-line text of a status. */
export function statusText(status: IEngineStatus | null): string {
  const state = engineState(status);
  if (!status || state === 'none') {
    return 'gpt-oss: none';
  }
  if (state === 'loading') {
    return 'gpt-oss: loading…';
  }
  const parts = [status.model ?? '?'];
  if (state === 'dead') {
    parts.push('engine dead');
  }
  parts.push(`effort ${status.effort}`);
  if (typeof status.last_tokens_per_s === 'number') {
    parts.push(`${status.last_tokens_per_s.toFixed(0)} tok/s`);
  }
  const background = backgroundText(status);
  if (background) {
    parts.push(background);
  }
  return `gpt-oss: ${parts.join(' · ')}`;
}

/** The tooltip of a status. */
export function statusTitle(status: IEngineStatus | null): string {
  if (!status) {
    return 'gptoss_magics is not loaded in this kernel (%load_ext gptoss_magics)';
  }
  const lines = [`engine: ${engineState(status)}`];
  if (status.model) {
    lines.push(`model: ${status.model}${status.tiny ? ' (embedded test model)' : ''}`);
    lines.push(`device: ${status.device ?? '-'}`);
  }
  const budget =
    typeof status.reasoning_budget === 'number'
      ? `, reasoning budget ${status.reasoning_budget}`
      : '';
  lines.push(
    `defaults: effort ${status.effort}, max_tokens ${status.max_tokens}, ` +
      `temperature ${status.temperature}${budget}`
  );
  const background = backgroundText(status);
  if (background) {
    lines.push(background);
  }
  lines.push(`kernel memory (RSS): ${formatBytes(status.rss_bytes)}`);
  if (status.gpu_used_bytes !== null && status.gpu_used_bytes !== undefined) {
    lines.push(`GPU memory used: ${formatBytes(status.gpu_used_bytes)}`);
  }
  return lines.join('\n');
}

/** The status-bar item. */
export class EngineStatusItem extends Widget {
  constructor() {
    super();
    this.id = 'gptoss-status';
    this.addClass('gptoss-StatusItem');
    this.render(null);
  }

  /** Follow `source` (null: no notebook kernel). */
  follow(source: KernelEngineStatus | null): void {
    if (this._source === source) {
      return;
    }
    this._source?.changed.disconnect(this._update, this);
    this._source = source;
    source?.changed.connect(this._update, this);
    this._update();
  }

  render(status: IEngineStatus | null): void {
    this.node.textContent = statusText(status);
    this.node.title = statusTitle(status);
    this.node.dataset.state = status ? engineState(status) : 'unknown';
  }

  private _update(): void {
    this.render(this._source?.status ?? null);
  }

  private _source: KernelEngineStatus | null = null;
}
