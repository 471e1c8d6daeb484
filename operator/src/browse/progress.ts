// How kubectl browse shows a session's progress. On a terminal: the steps scroll by above a live
// area (a spinner line with the current wait, and a cli-progress bar per download) that is redrawn
// in place. Anywhere else (a pipe, a file, --output): plain lines, one per step, no escape codes.
import { MultiBar, type SingleBar } from 'cli-progress';
import { formatBytes, formatSpan } from './format.ts';
import type { DownloadView } from './steps.ts';

export interface ProgressView {
  /** A step reached (printed once, in order). */
  step(text: string): void;
  /** The current state: each package's download, and what the session waits for. */
  update(downloads: readonly DownloadView[], waitingFor: string): void;
  /** Stops redrawing; `final` replaces the live status line. */
  finish(final: string): void;
}

export interface OutputStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export function progressView(stream: OutputStream, plain: boolean): ProgressView {
  return plain || !stream.isTTY ? new PlainView(stream) : new TerminalView(stream as NodeJS.WriteStream);
}

function amountOf(download: DownloadView): string {
  if (download.phase === 'Waiting') return 'waiting for a downloader';
  if (download.phase === 'Failed') return 'failed';
  const cached = download.fromCache ? ' (from the cache)' : '';
  return download.total !== undefined
    ? `${formatBytes(download.bytes)} / ${formatBytes(download.total)}${cached}`
    : `${formatBytes(download.bytes)}${cached}`;
}

/** One line per step; a download's progress as a line whenever the server reports more bytes. */
export class PlainView implements ProgressView {
  private readonly stream: OutputStream;
  private readonly reported = new Map<number, number>();

  constructor(stream: OutputStream) {
    this.stream = stream;
  }

  step(text: string): void {
    this.stream.write(`${text}\n`);
  }

  update(downloads: readonly DownloadView[]): void {
    for (const download of downloads) {
      if (download.phase !== 'Downloading' || download.bytes === 0) continue;
      if (this.reported.get(download.index) === download.bytes) continue;
      this.reported.set(download.index, download.bytes);
      const percent = download.total ? ` (${Math.floor((100 * download.bytes) / download.total)}%)` : '';
      this.stream.write(
        `Downloading package ${download.index + 1} ${download.name}: ${amountOf(download)}${percent}\n`,
      );
    }
  }

  finish(): void {}
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const BAR_SIZE = 30;
const COMPLETE = '█';
const INCOMPLETE = '░';
const NAME_WIDTH = 32;
/** Clear to the end of the line: a logged line must not keep the tail of the bar it overwrites. */
const CLEAR_EOL = '\x1b[K';

function fitName(name: string, width: number): string {
  return name.length > width ? `${name.slice(0, width - 1)}…` : name.padEnd(width);
}

/** A spinner line and a cli-progress bar per download, redrawn in place; steps are logged above. */
export class TerminalView implements ProgressView {
  private readonly multi: MultiBar;
  private readonly status: SingleBar;
  private readonly bars = new Map<number, SingleBar>();
  /** Downloads whose final bar is already printed (frozen above the live area). */
  private readonly frozen = new Set<number>();
  private readonly started = Date.now();
  private readonly ticker: NodeJS.Timeout;
  private waiting = 'waiting for the operator';
  private frame = 0;
  private nameWidth = 12;

  constructor(stream: NodeJS.WriteStream) {
    this.multi = new MultiBar({
      stream,
      format: '{line}',
      barsize: BAR_SIZE,
      barCompleteChar: COMPLETE,
      barIncompleteChar: INCOMPLETE,
      hideCursor: true,
      linewrap: true,
      gracefulExit: false,
      clearOnComplete: false,
      autopadding: true,
      fps: 10,
    });
    this.status = this.multi.create(1, 0, { line: this.statusLine() });
    this.ticker = setInterval(() => {
      this.frame = (this.frame + 1) % SPINNER.length;
      this.status.update(0, { line: this.statusLine() });
    }, 120);
  }

  private statusLine(): string {
    return `${SPINNER[this.frame]} ${this.waiting} (${formatSpan(Date.now() - this.started)})`;
  }

  step(text: string): void {
    this.multi.log(`${text}${CLEAR_EOL}\n`);
  }

  update(downloads: readonly DownloadView[], waitingFor: string): void {
    this.waiting = waitingFor;
    this.nameWidth = Math.min(NAME_WIDTH, Math.max(this.nameWidth, ...downloads.map((d) => d.name.length)));
    for (const download of downloads) {
      if (this.frozen.has(download.index)) continue;
      const name = fitName(download.name, this.nameWidth);
      const format = `  ${name} [{bar}] {percentage}% {amount}`;
      let bar = this.bars.get(download.index);
      if (!bar) {
        bar = this.multi.create(download.total || 1, 0, { amount: amountOf(download) }, { format });
        this.bars.set(download.index, bar);
      }
      if (download.total) bar.setTotal(download.total);
      bar.update(download.total ? Math.min(download.bytes, download.total) : 0, { amount: amountOf(download) });
      if (download.phase === 'Succeeded') {
        // Done: the bar stays on the screen where it finished, and leaves the live area.
        this.frozen.add(download.index);
        this.multi.remove(bar);
        this.bars.delete(download.index);
        this.multi.log(`  ${name} [${COMPLETE.repeat(BAR_SIZE)}] 100% ${amountOf(download)}${CLEAR_EOL}\n`);
      }
    }
    this.status.update(0, { line: this.statusLine() });
  }

  finish(final: string): void {
    clearInterval(this.ticker);
    this.status.update(0, { line: final });
    this.multi.update(); // flushes the steps logged since the last redraw
    this.multi.stop();
  }
}
