// What a router advertisement says beyond the interface's prefixes and MTU, from the
// routing config: its flags (M, O, the default router preference), the router lifetime,
// and the DNS options of RFC 8106 (RDNSS, DNSSL), which hosts configured by SLAAC alone
// take their resolvers from. Encoded once per config: advertisements are few, but a PMD
// sends them on its poll thread.
import { parseAddress } from '../../src/pipeline/api.ts';
import type { RoutingConfig } from './config.ts';

const OPT_RDNSS = 25;
const OPT_DNSSL = 31;
/** RFC 4861 6.2.1's floor for AdvDefaultLifetime when it is left to the router */
const ROUTER_LIFETIME_MIN_S = 1800;

let encodedFor: RoutingConfig | null = null;
let encoded: Uint8Array = new Uint8Array(0);

/** The RDNSS and DNSSL options of advertisements under `config` (empty without DNS settings). */
export function dnsOptions(config: RoutingConfig): Uint8Array {
  if (encodedFor !== config) {
    encoded = encodeDnsOptions(config);
    encodedFor = config;
  }
  return encoded;
}

function encodeDnsOptions(config: RoutingConfig): Uint8Array {
  // RFC 8106 5.1: lifetimes of at least three advertisement intervals by default
  const lifetime = 3 * config.raInterval;
  const parts: number[] = [];
  if (config.raDns.length > 0) {
    parts.push(OPT_RDNSS, 1 + 2 * config.raDns.length, 0, 0, ...u32(lifetime));
    for (const text of config.raDns) parts.push(...parseAddress(text).bytes);
  }
  if (config.raSearchDomains.length > 0) {
    // Each name as DNS labels (RFC 1035 3.1), each ending in the root's empty label.
    const names: number[] = [];
    for (const name of config.raSearchDomains) {
      for (const label of name.split('.')) names.push(label.length, ...Array.from(label, (ch) => ch.charCodeAt(0)));
      names.push(0);
    }
    // RFC 8106 5.2: padded with zeros to a multiple of 8 bytes
    while ((8 + names.length) % 8 !== 0) names.push(0);
    parts.push(OPT_DNSSL, (8 + names.length) / 8, 0, 0, ...u32(lifetime), ...names);
  }
  return Uint8Array.from(parts);
}

function u32(v: number): number[] {
  return [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

/** The advertisement's byte of flags: M, O, and the default router preference (RFC 4191 2.2). */
export function advertisementFlags(config: RoutingConfig): number {
  return (config.raManaged ? 0x80 : 0) | (config.raOtherConfig ? 0x40 : 0) | (config.raPreference << 3);
}

/**
 * Seconds hosts keep the router as a default router: the config's, else three intervals,
 * 1800 at least (RFC 4861 6.2.1: with a long interval one lost advertisement would end the
 * hosts' default route).
 */
export function routerLifetime(config: RoutingConfig): number {
  if (config.raRouterLifetime !== null) return config.raRouterLifetime;
  const lifetime = 3 * config.raInterval;
  return lifetime > ROUTER_LIFETIME_MIN_S ? lifetime : ROUTER_LIFETIME_MIN_S;
}
