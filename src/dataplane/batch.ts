// A burst on its way through a PMD, as struct-of-arrays metadata: the stages that look at
// it (today the bridge) only write their decisions here, per packet; one egress step then
// counts the drops, delivers the rest and frees the buffers (VPP's error-drop node).
import { DROP } from './counters.ts';
import { BURST } from './guest-io.ts';
import type { PacketPool } from './packet-pool.ts';

/** egress value: every member of the batch's flood domain but the ingress port (the plugin API's EGRESS_FLOOD) */
export const EGRESS_FLOOD = -1;
/** egress values from this one down: dropped, for reason EGRESS_DROP - egress (counters.ts DROP) */
export const EGRESS_DROP = -2;
/**
 * A packet no stage decided for: the egress step drops it as no_destination (a drop code,
 * so that the egress step needs one compare), but stages see it as not dropped.
 */
export const EGRESS_UNDECIDED = EGRESS_DROP - DROP.no_destination;

/** Implements the plugin API's PacketBatch (src/pipeline/api.ts). */
export class Batch {
  private readonly pool: PacketPool;
  /** the packet buffers (see offset()) */
  readonly data: Uint8Array;
  count = 0;
  /** the port the burst came from (a burst is one queue's) */
  ingress = 0;
  /** ports an EGRESS_FLOOD packet goes to (the ingress port is skipped) */
  floodDomain: readonly number[] = [];
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
