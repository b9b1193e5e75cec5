import type { ModelOptions } from '@mobillama/pipeline';

/** How to create the server. Only `model` is required. */
export interface ServerOptions {
  /** What every inference worker loads (passed to the model module's loadModel). */
  model: ModelOptions;
  /**
   * The module each worker imports to load the model; it exports
   * `loadModel(opts: ModelOptions): Promise<VqaModel>` (see ModelModule). Default: the
   * MobiLlamaV pipeline. Tests pass a deterministic fake.
   */
  modelModule?: URL;
  /** Worker threads, each with its own copy of the model, each running one request at a time. Default 1. */
  workers?: number;
  /** ORT intra-op threads per worker (ModelOptions.threads when the model options leave it unset). */
  threadsPerWorker?: number;
  /** Requests allowed to wait for a worker; past that, 429 with Retry-After. Default 8. */
  queueSize?: number;
  /** Per-request limit in ms, queueing included; past it the generation is cancelled (504). Default 120000. */
  timeoutMs?: number;
  /** When set, /v1/* requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Fetch http(s) image URLs. Off by default: the server would fetch any URL a client names. */
  allowRemoteImages?: boolean;
  /** Largest request body (JSON or multipart), in bytes; past it, 413. Default 20 MiB. */
  maxBodyBytes?: number;
  /** Images allowed in one request. Default 1 (the pipeline takes one image per conversation). */
  maxImages?: number;
  /** Largest image, in pixels (width × height), read from the header before decoding. Default 40 M. */
  maxImagePixels?: number;
  /** Remote image fetch timeout in ms. Default 10000. */
  remoteImageTimeoutMs?: number;
  /** Where to log one line per notable event; default console.error. Pass () => {} to silence. */
  log?: (line: string) => void;
}

export type ResolvedOptions = Required<Omit<ServerOptions, 'apiKey' | 'threadsPerWorker'>> & Pick<ServerOptions, 'apiKey' | 'threadsPerWorker'>;

export const DEFAULT_MODEL_MODULE = new URL('./pipeline-model.ts', import.meta.url);

export function resolveOptions(o: ServerOptions): ResolvedOptions {
  const int = (name: string, v: number | undefined, def: number, min: number): number => {
    const x = v ?? def;
    if (!Number.isInteger(x) || x < min) throw new RangeError(`${name} must be an integer >= ${min} (got ${x})`);
    return x;
  };
  return {
    model: o.model,
    modelModule: o.modelModule ?? DEFAULT_MODEL_MODULE,
    workers: int('workers', o.workers, 1, 1),
    threadsPerWorker: o.threadsPerWorker,
    queueSize: int('queueSize', o.queueSize, 8, 0),
    timeoutMs: int('timeoutMs', o.timeoutMs, 120_000, 1),
    apiKey: o.apiKey || undefined,
    allowRemoteImages: o.allowRemoteImages ?? false,
    maxBodyBytes: int('maxBodyBytes', o.maxBodyBytes, 20 * 1024 * 1024, 1024),
    maxImages: int('maxImages', o.maxImages, 1, 0),
    maxImagePixels: int('maxImagePixels', o.maxImagePixels, 40_000_000, 1),
    remoteImageTimeoutMs: int('remoteImageTimeoutMs', o.remoteImageTimeoutMs, 10_000, 1),
    log: o.log ?? ((line: string) => console.error(line)),
  };
}
