export type LrSchedulerKind = 'cosine' | 'linear' | 'constant';

export interface ScheduleOptions {
  readonly kind: LrSchedulerKind;
  readonly baseLr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
}

/**
 * HF's TrainingArguments.get_warmup_steps: explicit steps win, else ceil(total · ratio).
 */
export function warmupStepsFor(totalSteps: number, warmupSteps: number, warmupRatio: number): number {
  return warmupSteps > 0 ? warmupSteps : Math.ceil(totalSteps * warmupRatio);
}

/**
 * The multiplier of transformers' get_{cosine,linear,constant}_schedule_with_warmup at
 * scheduler step `s` (0-based: the k-th optimizer step uses s = k − 1, since HF steps the
 * scheduler after the optimizer). Linear warmup s / max(1, w); then cosine with
 * num_cycles 0.5, linear decay to 0, or constant. `constant` with warmup is HF's
 * constant_with_warmup (without warmup both are the same).
 */
export function lrLambda(s: number, o: Omit<ScheduleOptions, 'baseLr'>): number {
  const w = o.warmupSteps, T = o.totalSteps;
  if (s < w) return s / Math.max(1, w);
  switch (o.kind) {
    case 'constant': return 1;
    case 'linear': return Math.max(0, (T - s) / Math.max(1, T - w));
    case 'cosine': {
      const progress = (s - w) / Math.max(1, T - w);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
  }
}

/** The learning rate of optimizer step `step` (1-based, as log.jsonl counts). */
export function lrAt(step: number, o: ScheduleOptions): number {
  return o.baseLr * lrLambda(step - 1, o);
}
