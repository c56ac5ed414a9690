// The reverse-path filter (RFC 3704's strict and loose unicast RPF; Linux's rp_filter 1
// and 2): a guest that forges another's source address, or one the router never routes
// back to it, has its packets dropped where they come in.
import { KIND_BLACKHOLE, LOCAL_GROUP, MEMBER_WORDS, NO_ROUTE } from './fib.ts';
import { RPF_LOOSE, type Interface } from './interfaces.ts';
import type { Router } from './router.ts';

/**
 * Whether a source address whose route is `group` (the lookup of the source) passes the
 * filter of `iface`: strict, a member of the group leaves by `iface` (any member, with
 * ECMP, as Linux); loose, a member is not a blackhole. The router's own addresses pass
 * neither (Linux refuses them as sources whatever rp_filter says).
 */
export function sourcePasses(r: Router, group: number, iface: Interface): boolean {
  if (group === NO_ROUTE || group === LOCAL_GROUP) return false;
  const hops = r.nextHops;
  const w = hops.words;
  const start = w[hops.groupBase + group * 2];
  const members = w[hops.groupBase + group * 2 + 1];
  const loose = iface.rpf === RPF_LOOSE;
  for (let k = 0; k < members; k++) {
    const m = hops.memberBase + (start + k) * MEMBER_WORDS;
    if (w[m] !== KIND_BLACKHOLE && (loose || w[m + 1] === iface.index)) return true;
  }
  return false;
}
