// A burst on its way through a PMD, as struct-of-arrays metadata: the stages that look at
// it (today the bridge) only write their decisions here, per packet; one egress step then
// counts the drops, delivers the rest and frees the buffers (VPP's error-drop node).
import { EGRESS_DROP, EGRESS_UNDECIDED } from './egress-codes.ts';
export { EGRESS_DROP, EGRESS_FLOOD, EGRESS_UNDECIDED } from './egress-codes.ts';
import { BURST } from './guest-io.ts';
import type { PacketPool } from './packet-pool.ts';

/** Implements the plugin API's PacketBatch (src/pipeline/api.ts). */
export class Batch {
  private readonly pool: PacketPool;
  /** the packet buffers (see offset()) */
  readonly data: Uint8Array;
  count = 0;
  /** the port the burst came from (a burst is one queue's) */
  ingress = 0;
  readonly handles = new Uint32Array(BURST);
  /**
   * Per packet, one number for speed (one array to fill and to read): the destination
   * port, EGRESS_FLOOD, or a drop: EGRESS_DROP - reason.
   */
  readonly egress = new Int32Array(BURST);

  constructor(pool: PacketPool) {
    this.pool = pool;
    this.data = pool.data;
  }

  /** Where packet i's frame starts in data. */
  offset(i: number): number {
    return this.pool.frameOffset(this.handles[i]);
  }

  length(i: number): number {
    return this.pool.length[this.handles[i]];
  }

  /** Starts a burst of `count` handles already in `handles`, nothing decided yet. */
  begin(ingress: number, count: number): void {
    this.ingress = ingress;
    this.count = count;
    this.egress.fill(EGRESS_UNDECIDED, 0, count);
  }

  /** Marks packet i dropped for `reason` (counters.ts DROP). */
  dropAs(i: number, reason: number): void {
    this.egress[i] = EGRESS_DROP - reason;
  }

  /** Whether a stage dropped packet i. */
  dropped(i: number): boolean {
    const e = this.egress[i];
    return e <= EGRESS_DROP && e !== EGRESS_UNDECIDED;
  }
}
