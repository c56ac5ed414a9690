// The forwarding table: routes resolved against the interfaces into next-hop groups, and
// longest-prefix-match tables whose result is a group. Built in the control plane (the
// LPM tables in the job pool: a million routes take seconds, never a PMD's time) into
// SharedArrayBuffers that every PMD reads.
//
// A group is what a lookup returns (1-based; 0 is no route): LOCAL (an address of the
// router), a connected subnet (the next hop is the destination itself), a blackhole, or
// one or more gateways (ECMP: the members of the lowest metric for the prefix).
import { PluginConfigError, formatAddress, read32, type Prefix } from '../../src/pipeline/api.ts';
import { connectedInterface, type Interface } from './interfaces.ts';
import type { RoutingConfig } from './config.ts';
import { Lpm4, LPM4_FORMAT, type Route4Columns } from './lpm4.ts';
import { Lpm6, LPM6_FORMAT, type Route6Columns } from './lpm6.ts';

export const NO_ROUTE = 0;
/** the group of the router's own addresses */
export const LOCAL_GROUP = 1;
export const KIND_CONNECTED = 0;
export const KIND_GATEWAY = 1;
export const KIND_BLACKHOLE = 2;
export const KIND_LOCAL = 3;

/** A member: kind, interface, gateway address (4 words, IPv4 in the first), spare. */
export const MEMBER_WORDS = 8;

/** The next-hop groups as one Int32Array: [groups, members, (start, count) per group, members]. */
export interface NextHops {
  words: Int32Array;
  groupBase: number;
  memberBase: number;
}

export function nextHopsView(buffer: SharedArrayBuffer): NextHops {
  const words = new Int32Array(buffer);
  return { words, groupBase: 2, memberBase: 2 + words[0] * 2 };
}

interface Member {
  kind: number;
  iface: number;
  gateway: Prefix | null;
}

export interface ResolvedFib {
  groups: Member[][];
  v4: { prefix: number[]; length: number[]; group: number[] };
  v6: { prefix: Uint8Array[]; length: number[]; group: number[] };
}

function interfaceByName(interfaces: readonly Interface[], name: string, field: string): number {
  const i = interfaces.findIndex((f) => f.name === name);
  if (i < 0) throw new PluginConfigError(field, `"${name}" is not a port or bridge with addresses (routed: ${interfaces.map((f) => f.name).join(', ') || 'none'})`);
  return i;
}

/**
 * Connected routes from the interfaces' addresses, local host routes, then the static
 * routes (the lowest metric per prefix; several gateways at that metric are an ECMP group).
 * Throws PluginConfigError naming the route at fault.
 */
export function resolveRoutes(config: RoutingConfig, interfaces: readonly Interface[]): ResolvedFib {
  const groups: Member[][] = [[], [{ kind: KIND_LOCAL, iface: -1, gateway: null }]];
  const fib: ResolvedFib = { groups, v4: { prefix: [], length: [], group: [] }, v6: { prefix: [], length: [], group: [] } };
  const add = (p: Prefix, group: number) => {
    if (p.family === 4) {
      fib.v4.prefix.push(read32(p.bytes, 0));
      fib.v4.length.push(p.length);
      fib.v4.group.push(group);
    } else {
      fib.v6.prefix.push(p.bytes);
      fib.v6.length.push(p.length);
      fib.v6.group.push(group);
    }
  };
  // Static routes first: for the same prefix and length, the later entry wins in the LPM
  // compilers, and connected and local routes must win over a static one.
  const byPrefix = new Map<string, number[]>();
  config.routes.forEach((r, i) => {
    const key = `${formatAddress(r.prefix.bytes)}/${r.prefix.length}`;
    byPrefix.set(key, [...(byPrefix.get(key) ?? []), i]);
  });
  for (const indices of byPrefix.values()) {
    const best = Math.min(...indices.map((i) => config.routes[i].metric));
    const members: Member[] = [];
    for (const i of indices) {
      const r = config.routes[i];
      if (r.metric !== best) continue;
      const field = `routes[${i}]`;
      if (r.blackhole) {
        members.push({ kind: KIND_BLACKHOLE, iface: -1, gateway: null });
        continue;
      }
      const named = r.port === null ? -1 : interfaceByName(interfaces, r.port, `${field}.port`);
      if (r.via.length === 0) {
        members.push({ kind: KIND_CONNECTED, iface: named, gateway: null });
        continue;
      }
      r.via.forEach((via, v) => {
        const viaField = r.via.length > 1 ? `${field}.via[${v}]` : `${field}.via`;
        const linkLocal = via.family === 6 && via.bytes[0] === 0xfe && (via.bytes[1] & 0xc0) === 0x80;
        let iface = named;
        if (iface < 0) {
          if (linkLocal) throw new PluginConfigError(`${field}.port`, `is required: ${via.text} is link-local, valid on any port`);
          iface = connectedInterface(interfaces, via);
          if (iface < 0) throw new PluginConfigError(viaField, `${via.text} is in no connected subnet (gateways must be directly reachable)`);
        } else if (!linkLocal && connectedInterface([interfaces[iface]], via) < 0) {
          throw new PluginConfigError(viaField, `${via.text} is not in a subnet of ${r.port}`);
        }
        members.push({ kind: KIND_GATEWAY, iface, gateway: via });
      });
    }
    const mixed = members.some((m) => m.kind === KIND_BLACKHOLE) && members.length > 1;
    if (mixed) throw new PluginConfigError(`routes[${indices[0]}]`, 'a blackhole route and another with the same prefix and metric');
    groups.push(members);
    add(config.routes[indices[0]].prefix, groups.length - 1);
  }
  for (const iface of interfaces) {
    for (const p of [...iface.v4, ...iface.v6]) {
      groups.push([{ kind: KIND_CONNECTED, iface: iface.index, gateway: null }]);
      const network = { ...p, bytes: p.bytes.map((b, i) => (i * 8 >= p.length ? 0 : i * 8 + 8 <= p.length ? b : b & ((0xff00 >> (p.length - i * 8)) & 0xff))) };
      add(network, groups.length - 1);
    }
  }
  for (const iface of interfaces) {
    for (const p of [...iface.v4, ...iface.v6]) add({ ...p, length: p.family === 4 ? 32 : 128 }, LOCAL_GROUP);
    add({ family: 6, bytes: iface.linkLocal, length: 128, text: '' }, LOCAL_GROUP);
  }
  return fib;
}

/** The groups as the one Int32Array the PMDs read. */
export function encodeNextHops(groups: readonly Member[][]): SharedArrayBuffer {
  const memberCount = groups.reduce((n, g) => n + g.length, 0);
  const buffer = new SharedArrayBuffer((2 + groups.length * 2 + memberCount * MEMBER_WORDS) * 4);
  const w = new Int32Array(buffer);
  w[0] = groups.length;
  w[1] = memberCount;
  let m = 0;
  const memberBase = 2 + groups.length * 2;
  groups.forEach((g, i) => {
    w[2 + i * 2] = m;
    w[3 + i * 2] = g.length;
    for (const member of g) {
      const at = memberBase + m * MEMBER_WORDS;
      w[at] = member.kind;
      w[at + 1] = member.iface;
      if (member.gateway !== null) {
        const b = member.gateway.bytes;
        for (let k = 0; k < b.length / 4; k++) w[at + 2 + k] = read32(b, k * 4);
      }
      m++;
    }
  });
  return buffer;
}

/** What the compile job gets and returns (fib-job.ts). */
export interface FibJobInput {
  v4: Route4Columns;
  v6: Route6Columns;
}

export function jobInputOf(fib: ResolvedFib): FibJobInput {
  const v6 = new Uint8Array(fib.v6.prefix.length * 16);
  fib.v6.prefix.forEach((p, i) => v6.set(p, i * 16));
  return {
    v4: { prefix: Uint32Array.from(fib.v4.prefix), length: Uint8Array.from(fib.v4.length), nextHop: Uint32Array.from(fib.v4.group) },
    v6: { prefix: v6, length: Uint8Array.from(fib.v6.length), nextHop: Uint32Array.from(fib.v6.group) },
  };
}

/** Regions the FIB lives in, by name (Plugin.prepare returns them). */
export const FIB_REGIONS = ['lpm4-tbl24', 'lpm4-tbl8', 'lpm6-direct', 'lpm6-nodes', 'fib-meta', 'nexthops'] as const;

/** The readers a PMD builds over the regions. */
export function openFib(shared: Readonly<Record<string, SharedArrayBuffer>>): { lpm4: Lpm4; lpm6: Lpm6; nextHops: NextHops } {
  const meta = new Int32Array(shared['fib-meta']);
  return {
    lpm4: new Lpm4({ format: LPM4_FORMAT, tbl24: shared['lpm4-tbl24'], tbl8: shared['lpm4-tbl8'], tbl8Groups: meta[0] }),
    lpm6: new Lpm6({ format: LPM6_FORMAT, direct: shared['lpm6-direct'], nodes: shared['lpm6-nodes'], nodeCount: meta[1], leafCount: meta[2] }),
    nextHops: nextHopsView(shared.nexthops),
  };
}
