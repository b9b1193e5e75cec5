import { GraphBuilder, nn, type Graph, type Value } from '@mobillama/core';
import type { ProjectorConfig } from './config.js';
import type { ProjectorWeights } from './weights.js';

/** Graph input `image_features` [B, N, inDim], output `projected` [B, N, outDim]. */
export const PROJECTOR_IO = { features: 'image_features', projected: 'projected' } as const;

/**
 * The projector applied to `x` inside an existing graph (the pipeline composes
 * vision → projector in one graph): Linear → GELU(exact) → Linear … (no GELU after the last).
 */
export function projectorInto(g: GraphBuilder, x: Value, w: ProjectorWeights): Value {
  w.linears.forEach((l, i) => {
    if (i > 0) x = nn.gelu(g, x);
    x = nn.linear(g, x, g.param(l.weight), l.bias ? g.param(l.bias) : null);
  });
  return x;
}

export function buildProjectorGraph(cfg: ProjectorConfig, w: ProjectorWeights, g = new GraphBuilder('projector')): Graph {
  const x = g.input(PROJECTOR_IO.features, 'float32', ['batch', 'tokens', cfg.inDim]);
  g.output(projectorInto(g, x, w), PROJECTOR_IO.projected);
  return g.build();
}
