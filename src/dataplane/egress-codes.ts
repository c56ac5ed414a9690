// What batch.egress[i] holds, in one number per packet (one array to fill and to read):
// a destination port (>= 0), EGRESS_FLOOD, or a drop. Shared with the plugin API.
import { DROP } from './counters.ts';

/** every member of the ingress port's bridge but the ingress port */
export const EGRESS_FLOOD = -1;
/** from this one down: dropped, for reason EGRESS_DROP - egress (a DROP code, or a plugin's) */
export const EGRESS_DROP = -2;
/**
 * A packet no stage decided for yet: the egress step drops it as no_destination (a drop
 * code, so that the egress step needs one compare), but stages see it as not dropped.
 */
export const EGRESS_UNDECIDED = EGRESS_DROP - DROP.no_destination;

/**
 * A packet a stage took in whole (it keeps a copy, e.g. while the next hop's address is
 * being resolved): freed by the egress step, counted as nothing. Below every drop code.
 */
export const EGRESS_CONSUMED = -0x40000000;
