import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { ModelInfo } from '@mobillama/pipeline';
import { bearerAuth } from './auth.js';
import { ApiError, sendError, toApiError } from './errors.js';
import { ClientGoneError, InferenceService, RequestTimeoutError, ShutdownError, runErrorToApi } from './inference.js';
import { Metrics, type Gauges } from './metrics.js';
import { chatChunk, chatCompletion, finishReason, parseChatCompletion, usageChunk, type CompletionIds, type GenerationParams, type RequestLimits } from './openai.js';
import { resolveOptions, type ServerOptions } from './options.js';
import type { WireAnswerRequest } from './protocol.js';
import { SseStream } from './sse.js';
import { parseVqaJson, parseVqaMultipart, vqaResponse } from './vqa.js';
import { WorkerPool } from './worker-pool.js';

export interface ListeningServer {
  readonly server: http.Server;
  readonly port: number;
  readonly host: string;
  /** http://host:port */
  readonly url: string;
  /** Stops accepting, lets in-flight requests finish, then stops the workers. */
  close(opts?: CloseOptions): Promise<void>;
}

export interface CloseOptions {
  /** Cancel in-flight requests (503) instead of waiting for them. */
  readonly force?: boolean;
}

export interface VqaServer {
  readonly app: Express;
  /** Resolves when every worker has loaded the model; rejects if loading fails. */
  readonly ready: Promise<ModelInfo>;
  /** Binds (default 127.0.0.1:8080; port 0 picks one) and resolves once the model is loaded too. */
  listen(port?: number, host?: string): Promise<ListeningServer>;
  /** Graceful stop: as ListeningServer.close, for every listener. */
  close(opts?: CloseOptions): Promise<void>;
  /** Requests being handled right now (any route). */
  readonly activeRequests: number;
}

const ROUTES = new Set(['/', '/health', '/metrics', '/v1/models', '/v1/chat/completions', '/v1/vqa']);
const INDEX_HTML = new URL('./static/index.html', import.meta.url);

/** Builds the express app and starts the inference workers (they load the model in the background). */
export function createServer(options: ServerOptions): VqaServer {
  const o = resolveOptions(options);
  const modelOptions = o.threadsPerWorker !== undefined && o.model.threads === undefined ? { ...o.model, threads: o.threadsPerWorker } : o.model;
  const pool = new WorkerPool({ modelModule: o.modelModule, modelOptions, size: o.workers, log: o.log });
  // The gauges read the queue lazily, so the metrics can exist before the service that owns it.
  const gauges: Gauges = {
    queueDepth: () => inference.queue.depth,
    activeGenerations: () => inference.queue.active,
    workersReady: () => pool.readyCount,
    workers: () => pool.size,
  };
  const metrics: Metrics = new Metrics(gauges);
  const inference: InferenceService = new InferenceService(pool, o.queueSize, metrics);
  const limits: RequestLimits = {
    maxImages: o.maxImages,
    image: { maxBytes: o.maxBodyBytes, maxPixels: o.maxImagePixels, allowRemote: o.allowRemoteImages, remoteTimeoutMs: o.remoteImageTimeoutMs },
  };

  let state: 'loading' | 'ready' | 'failed' | 'draining' | 'closed' = 'loading';
  let loadError: string | null = null;
  const startedAt = Date.now();
  const ready = pool.start();
  ready.then(() => { if (state === 'loading') state = 'ready'; }, (e: Error) => {
    loadError = e.message;
    if (state === 'loading') state = 'failed';
  });

  let active = 0;
  const idleWaiters = new Set<() => void>();
  const controllers = new Set<AbortController>();
  const servers = new Set<http.Server>();
  const indexHtml = readFileSync(INDEX_HTML);

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  // Accounting for every request: metrics, and the count that a graceful stop waits for.
  app.use((req, res, next) => {
    const t0 = performance.now();
    active++;
    res.once('close', () => {
      active--;
      const route = ROUTES.has(req.path) ? req.path : 'other';
      // 499 (as nginx logs it): the client went away before the response was complete.
      metrics.observeRequest(route, res.writableFinished ? res.statusCode : 499, (performance.now() - t0) / 1000);
      if (state === 'draining') for (const s of servers) s.closeIdleConnections();
      if (active === 0) for (const w of idleWaiters) w();
    });
    if (state === 'draining' || state === 'closed') {
      res.setHeader('Connection', 'close');
      if (req.path !== '/health' && req.path !== '/metrics') {
        sendError(res, new ApiError(503, 'the server is shutting down', { code: 'shutting_down', headers: { 'Retry-After': '5' } }));
        return;
      }
    }
    next();
  });

  app.get('/', (_req, res) => {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    // Everything is inline: no CDN, no other origin; images stay in the page as data: URLs.
    res.setHeader('Content-Security-Policy', "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'");
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.send(indexHtml);
  });

  app.get('/health', (_req, res) => {
    const ok = state === 'ready' && pool.readyCount > 0;
    res.status(ok ? 200 : 503).json({
      status: ok ? 'ok' : state === 'ready' ? 'degraded' : state,
      ...(loadError ? { error: loadError } : {}),
      model: pool.info?.id ?? null,
      workers: { total: pool.size, ready: pool.readyCount, busy: inference.queue.active },
      queue: { depth: inference.queue.depth, capacity: o.queueSize },
      uptime_seconds: Math.round((Date.now() - startedAt) / 1000),
    });
  });

  app.get('/metrics', (_req, res) => {
    // res.end, not res.send: send() would rewrite the content type's parameters.
    res.setHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8');
    res.end(metrics.render());
  });

  if (o.apiKey) app.use('/v1', bearerAuth(o.apiKey));

  const requireModel = (): ModelInfo => {
    if (state === 'ready' && pool.info) return pool.info;
    if (state === 'failed') throw new ApiError(503, `${loadError}`, { code: 'model_unavailable' });
    throw new ApiError(503, 'the model is still loading', { code: 'model_loading', headers: { 'Retry-After': '5' } });
  };

  app.get('/v1/models', (_req, res) => {
    const info = requireModel();
    res.json({
      object: 'list',
      data: [{
        id: info.id, object: 'model', created: Math.floor(startedAt / 1000), owned_by: 'mobillama',
        template: info.template, image_size: info.imageSize, image_tokens: info.imageTokens, context_length: info.contextLength,
      }],
    });
  });

  // Refuse by Content-Length before reading anything; bodies without one are counted as they stream.
  const bodyLimit = (req: Request, _res: Response, next: NextFunction) => {
    const len = Number(req.get('content-length') ?? NaN);
    if (len > o.maxBodyBytes) {
      req.resume();
      next(new ApiError(413, `request body is larger than ${o.maxBodyBytes} bytes`, { code: 'request_too_large' }));
    } else next();
  };
  // Any content type is read as JSON: `curl -d` sends form-urlencoded by default.
  const jsonBody = express.json({ limit: o.maxBodyBytes, type: () => true, strict: false });

  /** Per-request cancellation: timeout, client disconnect, forced shutdown. */
  const control = (res: Response) => {
    const ac = new AbortController();
    controllers.add(ac);
    const timer = setTimeout(() => ac.abort(new RequestTimeoutError(o.timeoutMs)), o.timeoutMs);
    const onClose = () => { if (!res.writableFinished) ac.abort(new ClientGoneError()); };
    res.on('close', onClose);
    return {
      signal: ac.signal,
      done() {
        clearTimeout(timer);
        res.off('close', onClose);
        controllers.delete(ac);
      },
    };
  };

  const newIds = (info: ModelInfo, prefix: string): CompletionIds => ({
    id: `${prefix}-${randomUUID().replace(/-/g, '').slice(0, 24)}`, created: Math.floor(Date.now() / 1000), model: info.id,
  });
  const toRequest = (p: GenerationParams): Omit<WireAnswerRequest, 'messages' | 'image' | 'question'> => {
    const r: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(p)) if (v !== undefined) r[k] = v;
    return r;
  };

  app.post('/v1/chat/completions', bodyLimit, jsonBody, async (req, res) => {
    const job = await parseChatCompletion(req.body, limits);
    const info = requireModel();
    const ids = newIds(info, 'chatcmpl');
    const request: WireAnswerRequest = { ...toRequest(job.params), messages: job.messages };
    const ctl = control(res);
    try {
      if (!job.stream) {
        const result = await inference.run(request, { signal: ctl.signal });
        res.json(chatCompletion(ids, result));
        return;
      }
      const sse = new SseStream(res);
      try {
        const result = await inference.run(request, {
          signal: ctl.signal,
          onStart: () => sse.send(chatChunk(ids, { role: 'assistant', content: '' }, null)),
          onPiece: (p) => { if (p.text) sse.send(chatChunk(ids, { content: p.text }, null)); },
        });
        sse.send(chatChunk(ids, {}, finishReason(result.finishReason)));
        if (job.includeUsage) sse.send(usageChunk(ids, result));
        sse.done();
      } catch (e) {
        if (!res.headersSent) throw e;
        // Mid-stream: the status is already 200, so the error travels as an event (the openai client raises it).
        if (!(e instanceof ClientGoneError)) {
          sse.send(runErrorToApi(e).body());
          sse.done();
        }
      }
    } catch (e) {
      throw e instanceof ClientGoneError ? e : runErrorToApi(e);
    } finally {
      ctl.done();
    }
  });

  app.post('/v1/vqa', bodyLimit, async (req, res, next) => {
    let job;
    if (req.is('multipart/form-data')) job = await parseVqaMultipart(req, limits);
    else {
      await new Promise<void>((resolve, reject) => jsonBody(req, res, (err?: unknown) => (err ? reject(err) : resolve())));
      job = await parseVqaJson(req.body, limits);
    }
    const info = requireModel();
    const ctl = control(res);
    try {
      const result = await inference.run({ ...toRequest(job.params), image: job.image, question: job.question }, { signal: ctl.signal });
      res.json(vqaResponse(newIds(info, 'vqa'), result));
    } catch (e) {
      next(e instanceof ClientGoneError ? e : runErrorToApi(e));
    } finally {
      ctl.done();
    }
  });

  app.use((req, _res, next) => {
    next(new ApiError(404, `no route for ${req.method} ${req.path}`, { code: 'not_found' }));
  });

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    if (err instanceof ClientGoneError || res.destroyed) return;
    const api = toApiError(err);
    if (api.status >= 500 && api.code === 'internal_error') o.log(`internal error: ${(err as Error)?.stack ?? String(err)}`);
    if (res.headersSent) {
      res.end();
      return;
    }
    sendError(res, api);
  });

  const whenIdle = () => new Promise<void>((resolve) => {
    if (active === 0) return resolve();
    const w = () => { idleWaiters.delete(w); resolve(); };
    idleWaiters.add(w);
  });

  let closing: Promise<void> | null = null;
  const close = (opts: CloseOptions = {}): Promise<void> => {
    if (opts.force) for (const c of controllers) c.abort(new ShutdownError());
    closing ??= (async () => {
      state = 'draining';
      await Promise.all([...servers].map((s) => new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeIdleConnections();
      })).concat([(async () => {
        // In-flight requests end by themselves within the request timeout; past that, cancel them.
        const deadline = setTimeout(() => { for (const c of controllers) c.abort(new ShutdownError()); }, o.timeoutMs + 1000);
        await whenIdle();
        clearTimeout(deadline);
        for (const s of servers) s.closeAllConnections();
      })()]));
      state = 'closed';
      await pool.close();
    })();
    return closing;
  };

  const listen = async (port = 8080, host = '127.0.0.1'): Promise<ListeningServer> => {
    const server = http.createServer(app);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    servers.add(server);
    try {
      await ready;
    } catch (e) {
      servers.delete(server);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      throw e;
    }
    const addr = server.address() as AddressInfo;
    const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return { server, port: addr.port, host: addr.address, url: `http://${shownHost}:${addr.port}`, close };
  };

  return {
    app, ready, listen, close,
    get activeRequests() { return active; },
  };
}
