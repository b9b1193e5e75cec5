import { appendFile, readFile } from 'node:fs/promises';
import { writeFileAtomic } from '@mobillama/core';

/** One line of log.jsonl: an optimizer step (step counts from 1; grad_norm before clipping). */
export interface StepRecord {
  readonly step: number;
  readonly loss: number;
  readonly lr: number;
  readonly grad_norm: number;
  readonly tokens_per_s: number;
  /** Wall seconds of the step (so a resumed run's time adds up from the log); absent in logs written before it was recorded. */
  readonly seconds?: number;
}

/** One line of eval.jsonl. */
export interface EvalRecord {
  readonly step: number;
  readonly eval_loss: number;
  readonly eval_tokens: number;
}

/** An append-only JSON Lines file; on resume it is cut back to the checkpoint's step. */
export class JsonlLog<T extends { step: number }> {
  constructor(readonly path: string) {}

  async append(rec: T): Promise<void> {
    await appendFile(this.path, `${JSON.stringify(rec)}\n`);
  }

  async read(): Promise<T[]> {
    const text = await readFile(this.path, 'utf8').catch(() => '');
    const out: T[] = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as T);
      } catch {
        break; // a line cut by a kill: everything after it is gone too
      }
    }
    return out;
  }

  /** Keeps the records of steps ≤ `step` (what a run killed after its last checkpoint wrote past it goes). */
  async truncate(step: number): Promise<T[]> {
    const kept = (await this.read()).filter((r) => r.step <= step);
    await writeFileAtomic(this.path, kept.map((r) => `${JSON.stringify(r)}\n`).join(''));
    return kept;
  }
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

export function fmtLr(lr: number): string {
  return lr === 0 ? '0' : lr.toExponential(2);
}

/**
 * Console progress: on a TTY one line redrawn in place (bar, step, loss, lr, tokens/s, ETA);
 * otherwise one plain line per step, which is what log files and CI want.
 */
export class Progress {
  private readonly started = Date.now();
  private firstStep: number | null = null;
  private drawn = false;

  constructor(
    private readonly total: number,
    private readonly out: { write(s: string): unknown; isTTY?: boolean; columns?: number } = process.stderr,
  ) {}

  step(r: StepRecord): void {
    if (this.firstStep === null) this.firstStep = r.step - 1;
    const done = r.step - this.firstStep;
    const elapsed = (Date.now() - this.started) / 1000;
    const eta = (elapsed / Math.max(1, done)) * (this.total - r.step);
    const fields = `step ${r.step}/${this.total} loss ${r.loss.toFixed(4)} lr ${fmtLr(r.lr)} grad_norm ${r.grad_norm.toFixed(3)} ${Math.round(r.tokens_per_s)} tok/s ETA ${fmtDuration(eta)}`;
    if (this.out.isTTY) {
      const width = 24;
      const filled = Math.round((width * r.step) / this.total);
      const bar = `[${'='.repeat(Math.max(0, filled - 1))}${filled > 0 ? '>' : ''}${' '.repeat(width - filled)}]`;
      const line = `${bar} ${fields}`;
      this.out.write(`\r${line.slice(0, Math.max(20, (this.out.columns ?? 120) - 1))}\x1b[K`);
      this.drawn = true;
    } else {
      this.out.write(`${fields}\n`);
    }
  }

  /** A message on its own line (eval results, checkpoints), not clobbering the bar. */
  note(msg: string): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
    this.out.write(`${msg}\n`);
  }

  done(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}

/** A standalone SVG of the training loss per step (and eval loss points), no dependencies. */
export function lossCurveSvg(train: readonly StepRecord[], evals: readonly EvalRecord[] = []): string {
  const W = 720, Hh = 360, L = 64, R = 16, T = 28, Bm = 44;
  const pts = train.filter((r) => Number.isFinite(r.loss));
  const ev = evals.filter((r) => Number.isFinite(r.eval_loss));
  const xs = [...pts.map((r) => r.step), ...ev.map((r) => r.step)];
  const ys = [...pts.map((r) => r.loss), ...ev.map((r) => r.eval_loss)];
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  if (xs.length === 0) {
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${Hh}"><text x="${W / 2}" y="${Hh / 2}" text-anchor="middle">no steps logged</text></svg>\n`;
  }
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (Hh - T - Bm);
  const line = pts.map((r, i) => `${i ? 'L' : 'M'}${sx(r.step).toFixed(1)},${sy(r.loss).toFixed(1)}`).join(' ');
  const ticks: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + ((y1 - y0) * i) / 4, y = sy(yv);
    ticks.push(`<line x1="${L}" x2="${W - R}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#ddd"/><text x="${L - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${yv.toPrecision(4)}</text>`);
    const xv = Math.round(x0 + ((x1 - x0) * i) / 4), x = sx(xv);
    ticks.push(`<text x="${x.toFixed(1)}" y="${Hh - Bm + 18}" text-anchor="middle">${xv}</text>`);
  }
  const evalDots = ev.map((r) => `<circle cx="${sx(r.step).toFixed(1)}" cy="${sy(r.eval_loss).toFixed(1)}" r="4" fill="#d62728"/>`).join('');
  const legend = `<text x="${L}" y="18">${esc('training loss (per optimizer step)')}</text>${ev.length ? `<text x="${W - R}" y="18" text-anchor="end" fill="#d62728">eval loss</text>` : ''}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${Hh}" viewBox="0 0 ${W} ${Hh}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...ticks,
    `<line x1="${L}" y1="${Hh - Bm}" x2="${W - R}" y2="${Hh - Bm}" stroke="#333"/><line x1="${L}" y1="${T}" x2="${L}" y2="${Hh - Bm}" stroke="#333"/>`,
    `<text x="${(L + W - R) / 2}" y="${Hh - 8}" text-anchor="middle">step</text>`,
    `<path d="${line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>`,
    evalDots,
    legend,
    '</svg>',
    '',
  ].join('\n');
}
