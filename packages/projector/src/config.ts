/**
 * LLaVA's `mm_projector_type`: 'linear', or `mlp{N}x_gelu` = N Linears with an exact GELU
 * between each pair (mlp2x_gelu is LLaVA-1.5's, and llava-hf's linear_1 → gelu → linear_2).
 */
export type ProjectorType = 'linear' | 'mlp2x_gelu' | `mlp${number}x_gelu`;

export interface ProjectorConfig {
  readonly type: ProjectorType;
  /** Vision feature width (mm_hidden_size). */
  readonly inDim: number;
  /** Language model width (hidden_size). */
  readonly outDim: number;
}

export class ProjectorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProjectorError';
  }
}

/** Number of Linear layers of a projector type ('linear' → 1, 'mlp3x_gelu' → 3). */
export function projectorDepth(type: string): number {
  if (type === 'linear') return 1;
  const m = /^mlp([1-9]\d*)x_gelu$/.exec(type);
  if (!m) throw new ProjectorError(`projector type ${JSON.stringify(type)} is not supported (linear or mlp<N>x_gelu)`);
  return Number(m[1]);
}

/** The type name for a depth: 1 → 'linear', n → `mlp${n}x_gelu`. */
export function projectorTypeOf(depth: number): ProjectorType {
  return depth === 1 ? 'linear' : `mlp${depth}x_gelu`;
}

/** The projector fields of a LLaVA or llava-hf config.json. */
export interface HfProjectorConfigJson {
  mm_projector_type?: string;
  mm_hidden_size?: number;
  hidden_size?: number;
  /** llava-hf. */
  projector_hidden_act?: string;
  vision_config?: { hidden_size?: number };
  text_config?: { hidden_size?: number };
}
