// The router's interfaces, from the topology: one per port with addresses (an L3 port) and
// one per bridge with addresses (the router's leg in that L2 segment, VPP's BVI). Built the
// same way in the control plane (to validate routes) and in every PMD (to forward).
import { formatAddress, ipv4SubnetEdge, maskBytes, parseMac, parsePrefix, type Prefix, type Topology } from '../../src/pipeline/api.ts';

export interface Interface {
  index: number;
  /** the port or bridge name */
  name: string;
  /** the ports frames leave by: the port itself, or every member of the bridge */
  ports: number[];
  /** the bridge's name, or null for an L3 port */
  bridge: string | null;
  macHi: number;
  macLo: number;
  mtu: number;
  v4: Prefix[];
  v6: Prefix[];
  /** fe80::/64 with the EUI-64 of the router MAC (RFC 4291 2.5.1): NDP and RAs come from it */
  linkLocal: Uint8Array;
  /** the reverse-path filter of the packets it takes: RPF_OFF, RPF_STRICT or RPF_LOOSE */
  rpf: number;
  /** whether it sends router advertisements (with IPv6 addresses): the config's routerAdvertisements */
  advertises: boolean;
}

export const RPF_OFF = 0;
/** the source's route must leave by this interface (one of its members, with ECMP) */
export const RPF_STRICT = 1;
/** the source must have a route, and not a blackhole */
export const RPF_LOOSE = 2;
const RPF_MODES: Readonly<Record<string, number>> = { strict: RPF_STRICT, loose: RPF_LOOSE };

/** Every interface, and by port the interface the port is part of (or -1). */
export function interfacesOf(topology: Topology): { interfaces: Interface[]; byPort: Int32Array } {
  const interfaces: Interface[] = [];
  const byPort = new Int32Array(topology.ports.length).fill(-1);
  const add = (name: string, bridge: string | null, ports: number[], settings: Readonly<Record<string, unknown>>, mtu: number) => {
    const addresses = (settings.addresses as string[] | undefined) ?? [];
    if (addresses.length === 0) return;
    const [hi, lo] = parseMac(settings.routerMac);
    const prefixes = addresses.map((a) => parsePrefix(a));
    const iface: Interface = {
      index: interfaces.length,
      name,
      ports,
      bridge,
      macHi: hi,
      macLo: lo,
      mtu,
      v4: prefixes.filter((p) => p.family === 4),
      v6: prefixes.filter((p) => p.family === 6),
      linkLocal: linkLocalOf(hi, lo),
      rpf: typeof settings.rpf === 'string' && Object.hasOwn(RPF_MODES, settings.rpf) ? RPF_MODES[settings.rpf] : RPF_OFF,
      advertises: settings.routerAdvertisements !== false,
    };
    interfaces.push(iface);
    for (const p of ports) byPort[p] = iface.index;
  };
  for (const port of topology.ports) {
    if (port.bridge === null) add(port.name, null, [port.index], port.settings, Number(port.settings.mtu ?? 1500));
  }
  for (const bridge of topology.bridges) {
    const settings = topology.bridgeSettings[bridge] ?? {};
    const members = topology.ports.filter((p) => p.bridge === bridge);
    add(bridge, bridge, members.map((p) => p.index), settings, Number(settings.mtu ?? Math.min(...members.map((p) => Number(p.settings.mtu ?? 1500)))));
  }
  return { interfaces, byPort };
}

/**
 * The interfaces of another topology (the one the PMDs go to, or came from), found by a
 * port's name: the interface the port of that name is on there, or null (no such port, or
 * on no routed interface). Slots may differ between the two; names do not.
 */
export function interfaceByPortName(topology: Topology): (name: string) => Interface | null {
  const { interfaces, byPort } = interfacesOf(topology);
  const slotByName = new Map(topology.ports.filter((p) => p.name !== '').map((p) => [p.name, p.index]));
  return (name) => {
    const slot = slotByName.get(name);
    const at = slot === undefined ? -1 : byPort[slot];
    return at < 0 ? null : interfaces[at];
  };
}

/**
 * Linux mirrors (a port's `linuxMirror`, VPP's linux-cp): by interface, the port of its
 * mirror's TAP interface (or -1); by port, the port a mirror's port mirrors (or -1).
 */
export function mirrorsOf(topology: Topology, interfaces: readonly Interface[], byPort: Int32Array): { mirrorPort: Int32Array; mirrored: Int32Array } {
  const mirrorPort = new Int32Array(interfaces.length).fill(-1);
  const mirrored = new Int32Array(topology.ports.length).fill(-1);
  for (const port of topology.ports) {
    const of = (port.settings.mirror as { of?: string } | null | undefined)?.of;
    const parent = of === undefined ? undefined : topology.ports.find((p) => p.name === of);
    if (parent === undefined || byPort[parent.index] < 0) continue;
    mirrorPort[byPort[parent.index]] = port.index;
    mirrored[port.index] = parent.index;
  }
  return { mirrorPort, mirrored };
}

/**
 * The name of the neighbour table's region: entries are keyed by interface index and name
 * a port, so a new set of interfaces (ports added or removed at run time) gets a table of
 * its own, and neighbours are learned again, rather than read under the wrong interface.
 */
export function neighbourRegionOf(topology: Topology): string {
  const { interfaces } = interfacesOf(topology);
  const text = JSON.stringify(interfaces.map((f) => [f.name, f.ports.map((p) => [p, topology.ports[p].name])]));
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return `neighbours.${(h >>> 0).toString(16).padStart(8, '0')}`;
}

export function linkLocalOf(hi: number, lo: number): Uint8Array {
  const a = new Uint8Array(16);
  a[0] = 0xfe;
  a[1] = 0x80;
  // EUI-64: the MAC split by ff:fe, with the universal/local bit inverted.
  a[8] = (hi >>> 8) ^ 0x02;
  a[9] = hi & 0xff;
  a[10] = lo >>> 24;
  a[11] = 0xff;
  a[12] = 0xfe;
  a[13] = (lo >>> 16) & 0xff;
  a[14] = (lo >>> 8) & 0xff;
  a[15] = lo & 0xff;
  return a;
}

/** Whether the first `length` bits of a and b (at their offsets) are equal. */
export function samePrefix(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number, length: number): boolean {
  let i = 0;
  for (; i + 8 <= length; i += 8) if (a[aOff + (i >> 3)] !== b[bOff + (i >> 3)]) return false;
  const rest = length - i;
  if (rest === 0) return true;
  const mask = (0xff00 >> rest) & 0xff;
  return (a[aOff + (i >> 3)] & mask) === (b[bOff + (i >> 3)] & mask);
}

/** The interface that has `address` (a host address) as one of its own, link-local included, or null. */
export function ownerOf(interfaces: readonly Interface[], address: Prefix): Interface | null {
  const width = address.family === 4 ? 32 : 128;
  for (const iface of interfaces) {
    for (const p of address.family === 4 ? iface.v4 : iface.v6) if (samePrefix(p.bytes, 0, address.bytes, 0, width)) return iface;
    if (address.family === 6 && samePrefix(iface.linkLocal, 0, address.bytes, 0, width)) return iface;
  }
  return null;
}

/**
 * What `address` is if it is the network or broadcast address of one of the interface's
 * IPv4 subnets (a /31 or /32 has neither), such as "the broadcast address of 10.0.1.0/24",
 * or null: no host has it, and a packet sent there reaches every host or none (Linux's
 * local table types it broadcast, and refuses it as a gateway).
 */
export function subnetEdgeOf(iface: Interface, address: Prefix): string | null {
  if (address.family !== 4) return null;
  for (const p of iface.v4) {
    if (!samePrefix(p.bytes, 0, address.bytes, 0, p.length)) continue;
    const edge = ipv4SubnetEdge(address.bytes, p.length);
    if (edge !== null) return `the ${edge} address of ${formatAddress(maskBytes(p.bytes, p.length))}/${p.length}`;
  }
  return null;
}

/** The interface whose connected subnet holds the address, or -1 (first match). */
export function connectedInterface(interfaces: readonly Interface[], address: Prefix): number {
  for (const iface of interfaces) {
    for (const p of address.family === 4 ? iface.v4 : iface.v6) if (samePrefix(p.bytes, 0, address.bytes, 0, p.length)) return iface.index;
  }
  return -1;
}
