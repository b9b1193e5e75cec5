/** Latency buckets in seconds: from a health probe to a long generation. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

class Histogram {
  readonly counts = new Array<number>(BUCKETS.length).fill(0);
  sum = 0;
  count = 0;

  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < BUCKETS.length; i++) if (v <= BUCKETS[i]) this.counts[i]++;
  }
}

export interface Gauges {
  readonly queueDepth: () => number;
  readonly activeGenerations: () => number;
  readonly workersReady: () => number;
  readonly workers: () => number;
}

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

/** Counters and histograms rendered in the Prometheus text exposition format (0.0.4). */
export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly latency = new Map<string, Histogram>();
  private readonly ttft = new Histogram();
  private completionTokens = 0;
  private promptTokens = 0;
  private rejected = 0;

  constructor(private readonly gauges: Gauges) {}

  /** One finished HTTP request; `route` must come from a fixed set (label cardinality). */
  observeRequest(route: string, status: number, seconds: number): void {
    const key = `${route}\u0000${status}`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
    let h = this.latency.get(route);
    if (!h) this.latency.set(route, (h = new Histogram()));
    h.observe(seconds);
  }

  observeGeneration(promptTokens: number, completionTokens: number, ttftSeconds: number | null): void {
    this.promptTokens += promptTokens;
    this.completionTokens += completionTokens;
    if (ttftSeconds !== null) this.ttft.observe(ttftSeconds);
  }

  observeQueueFull(): void {
    this.rejected++;
  }

  render(): string {
    const out: string[] = [];
    const head = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    const hist = (name: string, h: Histogram, labels: string) => {
      const sep = labels ? ',' : '';
      BUCKETS.forEach((b, i) => out.push(`${name}_bucket{${labels}${sep}le="${b}"} ${h.counts[i]}`));
      out.push(`${name}_bucket{${labels}${sep}le="+Inf"} ${h.count}`);
      const l = labels ? `{${labels}}` : '';
      out.push(`${name}_sum${l} ${h.sum}`, `${name}_count${l} ${h.count}`);
    };

    head('mobillama_http_requests_total', 'counter', 'HTTP requests by route and status code.');
    for (const [key, n] of [...this.requests].sort()) {
      const [route, status] = key.split('\u0000');
      out.push(`mobillama_http_requests_total{route="${escapeLabel(route)}",status="${status}"} ${n}`);
    }
    head('mobillama_http_request_duration_seconds', 'histogram', 'HTTP request latency, from arrival to the last byte.');
    for (const [route, h] of [...this.latency].sort(([a], [b]) => a.localeCompare(b))) {
      hist('mobillama_http_request_duration_seconds', h, `route="${escapeLabel(route)}"`);
    }
    head('mobillama_time_to_first_token_seconds', 'histogram', 'Time from a request starting on a worker to its first token.');
    hist('mobillama_time_to_first_token_seconds', this.ttft, '');
    head('mobillama_generated_tokens_total', 'counter', 'Tokens generated (completion tokens).');
    out.push(`mobillama_generated_tokens_total ${this.completionTokens}`);
    head('mobillama_prompt_tokens_total', 'counter', 'Prompt tokens processed, image tokens included.');
    out.push(`mobillama_prompt_tokens_total ${this.promptTokens}`);
    head('mobillama_queue_rejections_total', 'counter', 'Requests refused with 429 because the queue was full.');
    out.push(`mobillama_queue_rejections_total ${this.rejected}`);
    head('mobillama_queue_depth', 'gauge', 'Requests waiting for a worker.');
    out.push(`mobillama_queue_depth ${this.gauges.queueDepth()}`);
    head('mobillama_active_generations', 'gauge', 'Requests running on a worker.');
    out.push(`mobillama_active_generations ${this.gauges.activeGenerations()}`);
    head('mobillama_workers', 'gauge', 'Inference workers configured.');
    out.push(`mobillama_workers ${this.gauges.workers()}`);
    head('mobillama_workers_ready', 'gauge', 'Inference workers with a loaded model.');
    out.push(`mobillama_workers_ready ${this.gauges.workersReady()}`);
    return out.join('\n') + '\n';
  }
}
