// A burst on its way through a PMD, as struct-of-arrays metadata: the stages that look at
// it (today the bridge) only write their decisions here, per packet; one egress step then
// counts the drops, delivers the rest and frees the buffers (VPP's error-drop node).
import { DROP } from './counters.ts';
import { BURST } from './guest-io.ts';

/** egress value: every member of the batch's flood domain but the ingress port */
export const EGRESS_FLOOD = -1;
/** egress values from this one down: dropped, for reason EGRESS_DROP - egress (counters.ts DROP) */
export const EGRESS_DROP = -2;
/** what a packet no stage decided for gets: dropped, it has no destination */
const UNDECIDED = EGRESS_DROP - DROP.no_destination;

export class Batch {
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

  /** Starts a burst of `count` handles already in `handles`, nothing decided yet. */
  begin(ingress: number, count: number): void {
    this.ingress = ingress;
    this.count = count;
    this.egress.fill(UNDECIDED, 0, count);
  }

  /** Marks packet i dropped for `reason` (counters.ts DROP). */
  dropAs(i: number, reason: number): void {
    this.egress[i] = EGRESS_DROP - reason;
  }

  dropped(i: number): boolean {
    return this.egress[i] <= EGRESS_DROP;
  }
}
