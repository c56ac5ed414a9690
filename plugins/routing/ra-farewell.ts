// The last router advertisements before the PMDs are replaced by ones on a new topology
// (ports removed or changed at run time). A host keeps a default router for the lifetime it
// was given (30 minutes by default) and an address from a prefix for the prefix's: a port
// where vrouter stops being the IPv6 router, or where a prefix goes, tells its hosts so at
// once, as a router that stops does (RFC 4861 6.2.5), rather than leave them sending into
// nothing. The new PMDs do not know what the old topology had: the old ones say it.
import { interfaceByPortName, samePrefix, type Interface } from './interfaces.ts';
import type { Topology } from '../../src/pipeline/api.ts';
import type { PortFarewell, Router } from './router.ts';

/**
 * Plugin.leaving: for each port of an interface that advertises, what changes with `next`.
 * The router goes from the port when the port goes, or its interface in `next` has no IPv6
 * address, sends no advertisements, or has another router MAC (hosts know the router by the
 * link-local address made from it): router lifetime 0. A prefix the port's interface has
 * no more in `next` is advertised with lifetimes 0: a host deprecates its addresses at once
 * (RFC 4862 5.5.3; the valid lifetime it lowers to two hours at least, as it must). From PMD
 * 0, which sends the periodic advertisements; in a batch of one of the interface's ports,
 * as when vrouter stops.
 */
export function sayFarewells(r: Router, next: Topology): void {
  if (r.stopping || r.pmd !== 0) return;
  const after = interfaceByPortName(next);
  for (const iface of r.interfaces) {
    if (!iface.advertises || iface.v6.length === 0) continue;
    let owed = false;
    for (const port of iface.ports) {
      // Told already: the hook comes again for the same change (see Plugin.leaving).
      if (r.farewell[port] !== null) continue;
      const farewell = farewellOf(iface, after(r.portNames[port]));
      if (farewell === null) continue;
      r.farewell[port] = farewell;
      owed = true;
    }
    const up = owed ? r.firstPortUp(iface) : -1;
    if (up < 0) continue;
    r.raDue[iface.index] = -Infinity;
    r.wantBatch(up);
  }
}

/** What a port of `before` is owed when it is on `after` (null: on no routed interface) next; null: nothing. */
export function farewellOf(before: Interface, after: Interface | null): PortFarewell | null {
  const routerGoes = after === null || !after.advertises || after.v6.length === 0 || !samePrefix(after.linkLocal, 0, before.linkLocal, 0, 128);
  const withdrawn = Uint8Array.from(before.v6, (p) => (after !== null && after.v6.some((q) => q.length === p.length && samePrefix(q.bytes, 0, p.bytes, 0, p.length)) ? 0 : 1));
  return routerGoes || withdrawn.includes(1) ? { routerGoes, withdrawn } : null;
}
