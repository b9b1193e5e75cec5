import { describe, expect, it } from 'vitest';
import { createSession } from '../runtime/session.js';
import { GraphBuilder } from './builder.js';
import { exportOnnx } from './onnx-export.js';

describe('If subgraphs', () => {
  it('branches read outer values and weights by name; their constants and weights land in the outer graph', async () => {
    const g = new GraphBuilder('if');
    const x = g.input('x', 'float32', ['n', 4]);
    const w = g.weight('w', { dtype: 'F32', shape: [4], data: Float32Array.of(1, 2, 3, 4) });
    const rows = g.reshape(g.slice(g.shape(x), [0], [1], [0]), []);
    const cond = g.equal(rows, g.constant({ dtype: 'I64', shape: [], data: BigInt64Array.of(1n) }));
    const thenG = g.subgraph('one_row', (sg) => [sg.mul(x, w)]);
    const elseG = g.subgraph('many_rows', (sg) => [sg.add(x, sg.scalar(100))]);
    expect(thenG.initializers).toEqual([]);
    expect(g.initializers.some((i) => i.data.kind === 'tensor' && i.data.tensor.data[0] === 100)).toBe(true);
    const [y] = g.nodeMulti('If', [cond], { then_branch: { graph: thenG }, else_branch: { graph: elseG } }, [{ dtype: 'float32', shape: null }]);
    g.output(y, 'y');
    const s = await createSession(exportOnnx(g.build()), { threads: 1 });
    const run = async (n: number) => Array.from((await s.run({ x: { dtype: 'float32', dims: [n, 4], data: new Float32Array(4 * n).fill(1) } })).y.data as Float32Array);
    expect(await run(1)).toEqual([1, 2, 3, 4]);
    expect(await run(2)).toEqual(new Array(8).fill(101));
    await s.release();
    expect(() => g.subgraph('bad', (sg) => [sg.input('z', 'float32', [1])])).toThrow(/no inputs/);
  });
});
