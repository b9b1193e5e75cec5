import { createSession, createWorkerSession, exportOnnx, type Session, type SessionOptions } from '@mobillama/core';
import type { ProjectorConfig } from './config.js';
import { PROJECTOR_IO, buildProjectorGraph } from './graph.js';
import { loadProjector, type LoadProjectorOptions, type LoadedProjector } from './weights.js';

export interface ProjectorModelOptions extends SessionOptions {
  /** Run ORT in a worker thread (servers); default in-thread. */
  worker?: boolean;
}

/** A loaded projector with its own session: vision features in, language-model embeddings out. */
export class Projector {
  private constructor(
    readonly config: ProjectorConfig,
    private readonly loaded: LoadedProjector,
    private readonly session: Session,
  ) {}

  static async load(pathOrDir: string, opts: ProjectorModelOptions & LoadProjectorOptions = {}): Promise<Projector> {
    const { type, source, configJson, ...rest } = opts;
    const loaded = await loadProjector(pathOrDir, { type, source, configJson });
    try {
      return await Projector.fromLoaded(loaded, rest);
    } catch (e) {
      if (!source) await loaded.source.close();
      throw e;
    }
  }

  static async fromLoaded(loaded: LoadedProjector, opts: ProjectorModelOptions = {}): Promise<Projector> {
    const { worker, ...sessionOpts } = opts;
    const artifact = exportOnnx(buildProjectorGraph(loaded.config, loaded.weights));
    const session = worker ? await createWorkerSession(artifact, sessionOpts) : await createSession(artifact, sessionOpts);
    return new Projector(loaded.config, loaded, session);
  }

  /**
   * Projects features [B, N, inDim] (row-major; dims default to [1, rows, inDim]) to
   * [B, N, outDim]. The buffer is transferred to a worker session.
   */
  async project(features: Float32Array, dims?: readonly [number, number, number]): Promise<Float32Array> {
    const { inDim } = this.config;
    const [b, n, d] = dims ?? [1, features.length / inDim, inDim];
    if (d !== inDim || !Number.isInteger(n) || b * n * d !== features.length) {
      throw new Error(`features have ${features.length} values${dims ? ` for dims [${dims.join(', ')}]` : ''}, expected [B, N, ${inDim}]`);
    }
    const out = await this.session.run({ [PROJECTOR_IO.features]: { dtype: 'float32', dims: [b, n, d], data: features } });
    return out[PROJECTOR_IO.projected].data as Float32Array;
  }

  async dispose(): Promise<void> {
    await this.session.release();
    await this.loaded.source.close();
  }
}
