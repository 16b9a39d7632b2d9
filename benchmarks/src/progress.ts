/** Where progress is written: a terminal gets one rewritten line, a log one line per step. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

function clock(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** A single progress line: "[ 12/148] 0:41 kernels bsrLinear ...". */
export class Progress {
  private done = 0;
  private readonly startedAt = performance.now();

  constructor(
    private readonly total: number,
    private readonly stream: ProgressStream = process.stderr,
  ) {}

  /** Announces the step about to run. */
  step(label: string): void {
    const width = String(this.total).length;
    const line = `[${String(this.done + 1).padStart(width)}/${this.total}] ${clock(performance.now() - this.startedAt)} ${label}`;
    this.done++;
    if (this.stream.isTTY) {
      const columns = this.stream.columns ?? 100;
      this.stream.write(`\r${line.slice(0, columns - 1).padEnd(columns - 1)}`);
    } else {
      this.stream.write(`${line}\n`);
    }
  }

  /** Ends the line (a terminal keeps the last step visible) and says how long it all took. */
  finish(summary: string): void {
    if (this.stream.isTTY) this.stream.write("\n");
    this.stream.write(`${summary} in ${clock(performance.now() - this.startedAt)}\n`);
  }
}
