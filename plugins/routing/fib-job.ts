// A job of the control plane's pool: compiles the FIB's LPM tables (fib.ts jobInputOf).
import { compileLpm4 } from './lpm4.ts';
import { compileLpm6 } from './lpm6.ts';
import type { FibJobInput } from './fib.ts';

export default function compileFib(input: FibJobInput): Record<string, SharedArrayBuffer> {
  const v4 = compileLpm4(input.v4);
  const v6 = compileLpm6(input.v6);
  const meta = new SharedArrayBuffer(16);
  new Int32Array(meta).set([v4.tbl8Groups, v6.nodeCount, v6.leafCount]);
  return { 'lpm4-tbl24': v4.tbl24, 'lpm4-tbl8': v4.tbl8, 'lpm6-direct': v6.direct, 'lpm6-nodes': v6.nodes, 'fib-meta': meta };
}
