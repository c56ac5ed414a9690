// The reverse-path filter (RFC 3704's strict and loose unicast RPF; Linux's rp_filter 1
// and 2): a guest that forges another's source address, or one the router never routes
// back to it, has its packets dropped where they come in.
import { groupLeavesBy } from './next-hops.ts';
import { RPF_LOOSE, type Interface } from './interfaces.ts';
import type { Router } from './router.ts';

/**
 * Whether a source address whose route is `group` (the lookup of the source) passes the
 * filter of `iface`: strict, a member of the group leaves by `iface` (any member, with
 * ECMP, as Linux); loose, a member is not a blackhole. The router's own addresses pass
 * neither (Linux refuses them as sources whatever rp_filter says).
 */
export function sourcePasses(r: Router, group: number, iface: Interface): boolean {
  return groupLeavesBy(r.nextHops, group, iface.rpf === RPF_LOOSE ? -1 : iface.index, false);
}
