// A job of the control plane's pool: compiles the FIB's LPM tables (fib-tables.ts), with
// room and depths for the changes made in place afterwards.
import { sharedBuffer } from '../../src/pipeline/api.ts';
import { compileLpm4, type Lpm4Depths, type Route4Columns } from './lpm4.ts';
import { compileLpm6, type Route6Columns } from './lpm6.ts';

export interface FibJobInput {
  v4: Route4Columns;
  v6: Route6Columns;
  /** tbl8 groups and trie nodes to leave free */
  spareGroups: number;
  spareNodes: number;
}

export interface FibJobOutput {
  /** the regions the PMDs read, but the next hops */
  regions: Record<string, ArrayBufferLike>;
  depths: Lpm4Depths;
}

export default function compileFib(input: FibJobInput): FibJobOutput {
  const v4 = compileLpm4(input.v4, { spareGroups: input.spareGroups, depths: true });
  const v6 = compileLpm6(input.v6, { spareNodes: input.spareNodes });
  const meta = sharedBuffer(16);
  new Int32Array(meta).set([v4.tbl8Groups, v6.nodeCount, v6.leafCount]);
  return {
    regions: { 'lpm4-tbl24': v4.tbl24, 'lpm4-tbl8': v4.tbl8, 'lpm6-direct': v6.direct, 'lpm6-nodes': v6.nodes, 'fib-meta': meta },
    depths: v4.depths!,
  };
}
