// Wall time of a CLI command, phase by phase, in plain words, and progress on stderr for any phase that runs
// longer than LIVE_AFTER_MS: on a terminal one line rewritten in place ("side-effect check: 240 prompts … 12 s",
// with done/total where the phase counts); in a log (stderr not a terminal) one line when such a phase passes the
// mark and one when it ends. onnxruntime runs on this thread, so the line is redrawn between forwards, not during.
// (A progress-bar library was considered, cli-progress: its bars need a total, and most phases here have none.)

/** A phase that ran: its words (with what it found, e.g. "guard set: 82 lines, from the cache") and its wall time. */
export interface PhaseTime {
  name: string;
  ms: number;
}

/** Where progress goes: process.stderr, or a stand-in in tests. */
export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
}

export const LIVE_AFTER_MS = 2000;
const REDRAW_MS = 250;

export class Phases {
  readonly startedAt: number;
  private readonly done: PhaseTime[] = [];
  private current: { name: string; at: number; count?: [number, number]; announced: boolean } | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private live = false;

  constructor(
    private readonly stream: ProgressStream = process.stderr,
    private readonly liveAfterMs = LIVE_AFTER_MS,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.startedAt = now();
  }

  /** Ends the current phase (if any) and starts `name`. */
  enter(name: string): void {
    if (this.current?.name === name) return;
    this.end();
    this.current = { name, at: this.now(), announced: false };
    this.timer = setInterval(() => this.draw(), REDRAW_MS);
    this.timer.unref?.();
  }

  /** Renames the current phase (what it found: "guard set: 82 lines, from the cache"). */
  rename(name: string): void {
    if (this.current) this.current.name = name;
  }

  /** Items done of all in the current phase; shown on the live line. */
  tick(done: number, total: number): void {
    if (!this.current) return;
    this.current.count = [done, total];
    this.draw();
  }

  /** Ends the current phase; its time is kept. */
  end(): void {
    const c = this.current;
    if (!c) return;
    clearInterval(this.timer);
    this.timer = undefined;
    const ms = this.now() - c.at;
    this.done.push({ name: c.name, ms });
    this.clearLive();
    if (ms >= this.liveAfterMs) this.stream.write(`neuronpatch: ${c.name}: ${seconds(ms)}\n`);
    this.current = undefined;
  }

  /** Runs `work` as the phase `name`; the phase ends when it settles. */
  async run<T>(name: string, work: (tick: (done: number, total: number) => void) => Promise<T>): Promise<T> {
    this.enter(name);
    try {
      return await work((d, t) => this.tick(d, t));
    } finally {
      this.end();
    }
  }

  /**
   * Writes `text` on `to` (default: the progress stream) without tearing the live line: warnings, --verbose lines,
   * and stdout's lines where both go to one terminal.
   */
  say(text: string, to: ProgressStream = this.stream): void {
    this.clearLive();
    to.write(text);
    this.draw();
  }

  /** The phases so far (the current one up to now) and the wall time since the command started, in ms. */
  times(): { totalMs: number; phases: PhaseTime[] } {
    const t = this.now();
    const phases = [...this.done, ...(this.current ? [{ name: this.current.name, ms: t - this.current.at }] : [])];
    return { totalMs: t - this.startedAt, phases };
  }

  /** The wall time and its phases as lines of text (the current one, if any, counted up to now). */
  text(): string {
    const { totalMs, phases } = this.times();
    return [`wall time ${seconds(totalMs)}:`, ...phases.map((p) => `  ${seconds(p.ms).padStart(8)}  ${p.name}`), ''].join('\n');
  }

  private draw(): void {
    const c = this.current;
    if (!c) return;
    const ms = this.now() - c.at;
    if (ms < this.liveAfterMs) return;
    const count = c.count ? ` ${c.count[0]}/${c.count[1]}` : '';
    if (this.stream.isTTY) {
      this.stream.write(`\r\x1b[2Kneuronpatch: ${c.name}${count} … ${Math.floor(ms / 1000)} s`);
      this.live = true;
    } else if (!c.announced) {
      this.stream.write(`neuronpatch: ${c.name}…\n`);
    }
    c.announced = true;
  }

  private clearLive(): void {
    if (this.live) this.stream.write('\r\x1b[2K');
    this.live = false;
  }
}

/** Milliseconds as seconds for people: "0.04 s", "12.3 s". */
export function seconds(ms: number): string {
  return ms < 100 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/**
 * The CLI's words for a phase the engine's repair announces in a progress line, or undefined where the line stays
 * in the current phase (the solvers' own rounds).
 */
export function phaseOfRepairLine(line: string): string | undefined {
  if (/^generating the current completion/.test(line)) return 'current completion';
  if (/^tracing the neurons/.test(line)) return 'trace: the neurons behind the completion';
  const stats = /^reading the model's statistics on reference code( and the protected code)?/.exec(line);
  if (stats) return `reference statistics${stats[1] ? ' and protected code (keyed)' : ''}`;
  const solve = /^solving \((\w+)\) for (\d+) failing/.exec(line);
  if (solve) return `solve (${solve[1]}): ${solve[2]} failing token(s)`;
  if (/^confirming/.test(line)) return 'confirm: greedy generation with the patch';
  if (/^analysing the patch/.test(line)) return 'report: lens and ablation of the neurons';
  const fx = /^measuring side effects on (\d+) regression prompts and (\d+) guard lines/.exec(line);
  if (fx) return `side-effect check: ${fx[1]} prompts, ${fx[2]} guard lines`;
  return undefined;
}

/** An engine `onProgress` that moves `phases` along (and echoes each line with --verbose). */
export function repairProgress(phases: Phases, verbose: boolean, warn: (line: string) => void): (line: string) => void {
  return (line) => {
    if (verbose) warn(line);
    const p = phaseOfRepairLine(line);
    if (p) phases.enter(p);
  };
}
