// A PMD's view of the router: interfaces, the FIB and neighbour table in shared memory,
// and what is per PMD (ICMP rate limits, packets held while their next hop is resolved).
// The per-packet work is in ipv4.ts, ipv6.ts and neighbour-io.ts; this holds the state
// and the steps they share.
import { EGRESS_CONSUMED, PORT_SLOTS, macHi, macLo, parseMac, read32, TokenBuckets, writeMac, type PacketBatch, type PluginContext } from '../../src/pipeline/api.ts';
import type { RoutingConfig } from './config.ts';
import { interfacesOf, mirrorsOf, neighbourRegionOf, type Interface } from './interfaces.ts';
import { openFib, sameFib, type NextHops } from './fib.ts';
import type { Lpm4 } from './lpm4.ts';
import type { Lpm6 } from './lpm6.ts';
import { NeighbourTable } from './neighbours.ts';

export const DROP_REASONS = [
  ['ip_header_bad', 'IP header malformed: wrong version, IHL below 5, or a frame shorter than its header'],
  ['ip_length_bad', 'the IP length field is past the end of the frame, or shorter than the header'],
  ['ip_checksum_bad', 'IPv4 header checksum wrong'],
  ['ttl_exceeded', 'TTL or hop limit ran out (ICMP time exceeded sent back, within the ICMP rate limit)'],
  ['no_route', 'no route to the destination (ICMP destination unreachable sent back)'],
  ['blackhole', 'routed to a blackhole route'],
  ['mtu_exceeded', 'larger than the egress MTU with DF set, or IPv6 (ICMP fragmentation needed / packet too big sent back)'],
  ['fragmentation_failed', 'larger than the egress MTU and no room in the burst for its fragments'],
  ['neighbour_unreachable', 'the next hop did not answer ARP or neighbour solicitations (ICMP host unreachable sent back)'],
  ['neighbour_queue_full', 'the next hop is being resolved and the queue of packets waiting for resolution is full (or the packet is a super-frame, never held)'],
  ['held_discarded', 'waiting for its next hop to be resolved when vrouter stopped or its PMDs were replaced (ports changed at run time, an upgrade, plugin files loaded again)'],
  ['neighbour_table_full', 'no room in the neighbour table for the next hop (or the port that asked has its share of it)'],
  ['not_routable', 'broadcast, multicast or link-local destination, or a martian source address: never forwarded'],
  ['arp_bad', 'malformed ARP packet, or one from outside the interface\'s subnets'],
  ['arp_not_for_router', 'ARP on a routed port for an address that is not the router\'s'],
  ['ndp_bad', 'invalid NDP message (RFC 4861 validation: hop limit 255, checksum, length, code), or one naming a group link-layer address as a neighbour\'s'],
  ['punt_rate_limited', 'for the port\'s Linux mirror, but over the interface\'s punt rate limit (puntRate, puntBurst)'],
  ['reverse_path', 'the source address fails the interface\'s reverse-path filter (rpf): strict, it is not routed back out of that interface; loose, it has no route or a blackhole; or it is one of the router\'s own addresses'],
  ['source_mac_denied', "port security: the source MAC is not the port's configured mac (frames to the router; the bridge stage counts the others)"],
  ['local_unhandled', 'for one of the router\'s addresses but nothing the router answers (it answers ARP, NDP, ICMP echo, and UDP with port unreachable), and the port has no Linux mirror'],
] as const;

export const COUNTERS = [
  ['routed', 'packets forwarded by the routing stage'],
  ['arp_replies_sent', 'ARP requests for the router\'s addresses answered'],
  ['arp_requests_sent', 'ARP requests sent to resolve next hops'],
  ['neighbour_advertisements_sent', 'neighbour solicitations for the router\'s addresses answered'],
  ['neighbour_solicitations_sent', 'neighbour solicitations sent to resolve next hops'],
  ['router_advertisements_sent', 'router advertisements sent (periodic and solicited)'],
  ['echo_replies_sent', 'ICMP and ICMPv6 echo requests to the router answered'],
  ['icmp_errors_sent', 'ICMP errors sent (time exceeded, unreachable, fragmentation needed, packet too big)'],
  ['icmp_errors_rate_limited', 'ICMP errors not sent: over the ICMP rate limit'],
  ['icmp_errors_no_room', 'ICMP errors not sent: no room left in the burst, or no free buffer, for them'],
  ['fragments_created', 'IPv4 fragments made from packets larger than the egress MTU'],
  ['held_for_resolution', 'packets held while their next hop was being resolved'],
  ['held_released', 'held packets sent once their next hop answered'],
  ['held_dropped', 'held packets dropped: their next hop never answered, or vrouter stopped or replaced its PMDs while they waited'],
  ['punted_to_linux', 'packets for the router that it does not answer itself, handed to the port\'s Linux mirror (and ARP and NDP answers, which Linux needs too)'],
  ['sent_by_linux', 'frames Linux sent from the port\'s mirror, out of the port'],
  ['address_conflicts', 'ARP and NDP from another host that claims one of the router\'s addresses on the link: a duplicate address'],
] as const;

type Reason = (typeof DROP_REASONS)[number][0];
type Counter = (typeof COUNTERS)[number][0];

/** How long a held packet waits for its next hop (Linux: until the entry fails, about 3 s) */
export const HOLD_MS = 3000;
/** How often a PMD holding packets looks for their next hops, resolved by any PMD, or for the ones past HOLD_MS */
export const HELD_CHECK_MS = 1;

/** A port's last advertisements before the PMDs are replaced (see Router.farewell). */
export interface PortFarewell {
  /** the router stops being one on the port: router lifetime 0 (and its DNS options') */
  routerGoes: boolean;
  /** per prefix of the port's interface (Interface.v6): 1 if the next topology has it no more there, advertised with lifetimes 0 */
  withdrawn: Uint8Array;
}

/** Requests to resolve next hops, per ingress port: a second's worth, and a burst. */
export const SOLICIT_RATE = 1000;
export const SOLICIT_BURST = 100;

export class Router {
  readonly interfaces: Interface[];
  /** by port: its interface, or -1 (not routed: the stage leaves its frames alone) */
  readonly byPort: Int32Array;
  /** by interface: the port of its Linux mirror, or -1; by port: the port a mirror's port mirrors, or -1 */
  readonly mirrorPort: Int32Array;
  readonly mirrored: Int32Array;
  // Replaced whole, between bursts, when a reload brings new routes (tablesChanged).
  lpm4: Lpm4;
  lpm6: Lpm6;
  nextHops: NextHops;
  neighbours: NeighbourTable;
  neighbourRegion: ArrayBufferLike;
  /** the region's name (neighbourRegionOf): it changes with the set of interfaces */
  readonly neighbourName: string;
  config: RoutingConfig;
  readonly pmd: number;
  /** port names by index, for describe() */
  readonly portNames: readonly string[];
  readonly drop: Record<Reason, number>;
  readonly counter: Record<Counter, number>;
  readonly count: PluginContext<unknown>['count'];
  /** ms: the batch's time (PacketBatch.now) */
  now = 0;
  /** clock[0]: `now` again, for the token buckets and the neighbour table, which read it rather than be passed it */
  readonly clock = new Float64Array(1);
  /**
   * ICMP errors, by the port the packet at fault came in on (where they go back out): a
   * port whose guest earns errors by the thousand spends its own tokens, not those that
   * carry another port's "fragmentation needed" (path MTU discovery).
   */
  readonly icmpBuckets: TokenBuckets;
  /**
   * "Fragmentation needed" and "packet too big", by the same port and at the same rate, in
   * buckets of their own: traceroutes and scans through an uplink spend the others', and a
   * remote sender that gets no "packet too big" stalls on a path MTU black hole (Linux
   * leaves it out of its per-destination limit, net.ipv6.icmp.ratemask).
   */
  readonly pathMtuBuckets: TokenBuckets;
  /**
   * Requests to resolve next hops, by the port whose packet asks: a guest sending to a
   * thousand absent hosts must not flood, nor keep another port's next hops unresolved.
   */
  readonly solicitBuckets: TokenBuckets;
  /** per interface: the punt policer */
  readonly puntBuckets: TokenBuckets;
  // Held packets: copies of frames (already rewritten but for the destination MAC) with
  // the neighbour they wait for.
  readonly heldData: Uint8Array;
  readonly heldLength: Int32Array;
  readonly heldIface: Int32Array;
  readonly heldFamily: Int32Array;
  readonly heldAddr: Int32Array;
  readonly heldSince: Float64Array;
  readonly heldIngress: Int32Array;
  /** the source MAC each held packet came with (for a later stage that answers its sender) */
  readonly heldSourceHi: Int32Array;
  readonly heldSourceLo: Int32Array;
  /** when betweenBursts() next asks for the batches of the ports with held packets */
  heldCheckDue = 0;
  readonly wantBatch: PluginContext<unknown>['wantBatch'];
  readonly portUp: PluginContext<unknown>['portUp'];
  /** packets held per ingress port: each may hold a quarter of the queue at most (heldPerPort) */
  private readonly heldByPort = new Int32Array(PORT_SLOTS);
  private readonly heldPerPort: number;
  heldCount = 0;
  readonly heldRoom: number;
  /** per interface: when the next unsolicited router advertisement is due, and when one was last sent */
  readonly raDue: Float64Array;
  /** poll rounds since betweenBursts() last looked for advertisements due */
  raCheckRounds = 0;
  /** vrouter stops (Plugin.stopping): advertisements say the router is no default router any more */
  stopping = false;
  /** the PMD is to stop (Plugin.stopping, Plugin.leaving): what is held is dropped, nothing more held (held.ts) */
  discardingHeld = false;
  /**
   * per port: what its advertisements say once the PMDs are to be replaced by ones on a new
   * topology (Plugin.leaving, ra-farewell.ts); null: as usual
   */
  readonly farewell: (PortFarewell | null)[] = new Array<PortFarewell | null>(PORT_SLOTS).fill(null);
  /** per interface: 1 while its addresses are to be announced (announce.ts), and how many are */
  announceDue: Uint8Array;
  announcing = 0;
  readonly raSent: Float64Array;
  /** per interface: its IPv4 addresses (int32: their bits, as the stage reads addresses) and their subnet masks; its IPv6 addresses (16 bytes each, link-local last) */
  readonly addr4: Int32Array[];
  readonly mask4: Uint32Array[];
  readonly addr6: Uint8Array[];
  /** per interface: the source of its ICMPv6 errors (its first global address, or link-local) */
  readonly src6: Uint8Array[];
  /** the neighbour table's next slot to age */
  sweepAt = 0;
  lastSweep = 0;
  // The last next hop resolved in this batch (a burst is mostly a few flows): its key and
  // what the neighbour table said. Valid for one batch: cleared when a batch starts.
  cacheIface = -1;
  /** 4 or 6: an IPv6 address whose last 96 bits are 0 is not an IPv4 one */
  cacheFamily = 0;
  cacheA0 = 0;
  cacheA1 = 0;
  cacheA2 = 0;
  cacheA3 = 0;
  cacheMacHi = 0;
  cacheMacLo = 0;
  cachePort = 0;
  /**
   * The Ethernet addresses the cached next hop gets, as the machine-order words written at
   * a frame's start (aligned: offset is a multiple of 64): dst bytes 0-3, dst 4-5, src 0-1,
   * src 2-5. Four stores instead of twelve.
   */
  cacheWord0 = 0;
  cacheHalf2 = 0;
  cacheHalf3 = 0;
  cacheWord2 = 0;
  /** the other IPv4 next hops resolved in this batch (see NextHopCache) */
  readonly ipv4Hops = new NextHopCache();
  /** the batch's words16 and words32 (PacketBatch), taken at the start of each burst */
  words16: Uint16Array = new Uint16Array(0);
  words32: Uint32Array = new Uint32Array(0);
  /**
   * By interface, the router's MAC as the machine-order words a frame's first 6 bytes read
   * as (words32 at the frame's start, words16 after): one compare each, not six byte loads.
   */
  readonly macWord0: Uint32Array;
  readonly macHalf2: Uint16Array;
  /** packets routed in this batch, counted once at its end */
  routedInBatch = 0;
  /**
   * By port: the only source MAC its frames may have (portSecurity), as macHi and macLo
   * read it; securedHi -1: any. Checked on the frames this stage takes; the bridge stage
   * checks the others.
   */
  readonly securedHi: Int32Array;
  readonly securedLo: Int32Array;

  constructor(ctx: PluginContext<RoutingConfig>) {
    const topology = { ports: ctx.ports, bridges: ctx.bridges, bridgeSettings: ctx.bridgeSettings, pmdCount: ctx.pmdCount };
    const { interfaces, byPort } = interfacesOf(topology);
    this.neighbourName = neighbourRegionOf(topology);
    this.interfaces = interfaces;
    this.byPort = byPort;
    this.macWord0 = new Uint32Array(interfaces.length);
    this.macHalf2 = new Uint16Array(interfaces.length);
    const mac = new Uint8Array(8);
    for (const f of interfaces) {
      writeMac(mac, 0, f.macHi, f.macLo);
      this.macWord0[f.index] = new Uint32Array(mac.buffer, 0, 1)[0];
      this.macHalf2[f.index] = new Uint16Array(mac.buffer, 4, 1)[0];
    }
    this.securedHi = new Int32Array(PORT_SLOTS).fill(-1);
    this.securedLo = new Int32Array(PORT_SLOTS);
    for (const p of ctx.ports) {
      const own = p.settings.portSecurity === true && typeof p.settings.mac === 'string' ? parseMac(p.settings.mac) : null;
      if (own === null) continue;
      this.securedHi[p.index] = own[0];
      this.securedLo[p.index] = own[1];
    }
    ({ mirrorPort: this.mirrorPort, mirrored: this.mirrored } = mirrorsOf(topology, interfaces, byPort));
    const fib = openFib(ctx.shared);
    this.lpm4 = fib.lpm4;
    this.lpm6 = fib.lpm6;
    this.nextHops = fib.nextHops;
    this.neighbourRegion = ctx.shared[this.neighbourName];
    this.neighbours = new NeighbourTable(this.neighbourRegion, ctx.ports.length, this.clock);
    this.config = ctx.config;
    this.pmd = ctx.pmd;
    this.portNames = ctx.ports.map((p) => p.name);
    // Object literals, not Object.fromEntries: a literal has a fixed shape, the fast property
    // loads the data path needs (a built-up object may become a dictionary).
    const d = (n: Reason) => ctx.dropCode(n);
    this.drop = {
      ip_header_bad: d('ip_header_bad'),
      ip_length_bad: d('ip_length_bad'),
      ip_checksum_bad: d('ip_checksum_bad'),
      ttl_exceeded: d('ttl_exceeded'),
      no_route: d('no_route'),
      blackhole: d('blackhole'),
      mtu_exceeded: d('mtu_exceeded'),
      fragmentation_failed: d('fragmentation_failed'),
      neighbour_unreachable: d('neighbour_unreachable'),
      neighbour_queue_full: d('neighbour_queue_full'),
      held_discarded: d('held_discarded'),
      neighbour_table_full: d('neighbour_table_full'),
      not_routable: d('not_routable'),
      arp_bad: d('arp_bad'),
      arp_not_for_router: d('arp_not_for_router'),
      ndp_bad: d('ndp_bad'),
      punt_rate_limited: d('punt_rate_limited'),
      reverse_path: d('reverse_path'),
      source_mac_denied: d('source_mac_denied'),
      local_unhandled: d('local_unhandled'),
    };
    const c = (n: Counter) => ctx.counterId(n);
    this.counter = {
      routed: c('routed'),
      arp_replies_sent: c('arp_replies_sent'),
      arp_requests_sent: c('arp_requests_sent'),
      neighbour_advertisements_sent: c('neighbour_advertisements_sent'),
      neighbour_solicitations_sent: c('neighbour_solicitations_sent'),
      router_advertisements_sent: c('router_advertisements_sent'),
      echo_replies_sent: c('echo_replies_sent'),
      icmp_errors_sent: c('icmp_errors_sent'),
      icmp_errors_rate_limited: c('icmp_errors_rate_limited'),
      icmp_errors_no_room: c('icmp_errors_no_room'),
      fragments_created: c('fragments_created'),
      held_for_resolution: c('held_for_resolution'),
      held_released: c('held_released'),
      held_dropped: c('held_dropped'),
      punted_to_linux: c('punted_to_linux'),
      sent_by_linux: c('sent_by_linux'),
      address_conflicts: c('address_conflicts'),
    };
    this.count = ctx.count;
    this.wantBatch = ctx.wantBatch;
    this.portUp = ctx.portUp;
    this.icmpBuckets = new TokenBuckets(PORT_SLOTS, ctx.config.icmpBurst, this.clock);
    this.pathMtuBuckets = new TokenBuckets(PORT_SLOTS, ctx.config.icmpBurst, this.clock);
    this.solicitBuckets = new TokenBuckets(PORT_SLOTS, SOLICIT_BURST, this.clock);
    this.puntBuckets = new TokenBuckets(interfaces.length, ctx.config.puntBurst, this.clock);
    const held = ctx.config.heldPackets;
    this.heldRoom = 9088;
    this.heldData = new Uint8Array(held * this.heldRoom);
    this.heldLength = new Int32Array(held);
    this.heldIface = new Int32Array(held);
    this.heldFamily = new Int32Array(held);
    this.heldAddr = new Int32Array(held * 4);
    this.heldSince = new Float64Array(held);
    this.heldIngress = new Int32Array(held);
    this.heldSourceHi = new Int32Array(held);
    this.heldSourceLo = new Int32Array(held);
    this.heldPerPort = Math.max(1, Math.floor(held / 4));
    // PMD 0 sends the periodic advertisements (one sender: guests see one router); an
    // interface that sends none is never due (routerSolicited() owes it none either).
    this.raDue = Float64Array.from(interfaces, (f) => (ctx.pmd === 0 && f.advertises ? 0 : Infinity));
    this.raSent = new Float64Array(interfaces.length).fill(-Infinity);
    this.announceDue = new Uint8Array(interfaces.length);
    this.addr4 = interfaces.map((f) => Int32Array.from(f.v4, (p) => read32(p.bytes, 0)));
    this.mask4 = interfaces.map((f) => Uint32Array.from(f.v4, (p) => (p.length === 0 ? 0 : (0xffffffff << (32 - p.length)) >>> 0)));
    this.addr6 = interfaces.map((f) => {
      const all = new Uint8Array((f.v6.length + 1) * 16);
      f.v6.forEach((p, k) => all.set(p.bytes, k * 16));
      all.set(f.linkLocal, f.v6.length * 16);
      return all;
    });
    // An error from a link-local source reaches no sender off the link (RFC 4291 2.5.6): an
    // interface with no global address of its own sends them from another interface's.
    const global = interfaces.find((f) => f.v6.length > 0)?.v6[0].bytes ?? null;
    this.src6 = interfaces.map((f) => (f.v6.length > 0 ? f.v6[0].bytes : (global ?? f.linkLocal)));
  }

  /**
   * A reload's new routes (and config): the FIB readers over the new regions; the
   * neighbour table stays unless its size changed. Between bursts, so that a burst reads
   * one set of regions from start to end (tables changed in place change under it, an
   * entry at a time, each whole).
   */
  switchTables(config: RoutingConfig, shared: Readonly<Record<string, ArrayBufferLike>>): void {
    // Tables changed in place come back in the same buffers: the readers over them stay.
    if (!sameFib(this, shared)) {
      const fib = openFib(shared);
      this.lpm4 = fib.lpm4;
      this.lpm6 = fib.lpm6;
      this.nextHops = fib.nextHops;
    }
    if (shared[this.neighbourName] !== this.neighbourRegion) {
      this.neighbourRegion = shared[this.neighbourName];
      this.neighbours = new NeighbourTable(this.neighbourRegion, this.portNames.length, this.clock);
      this.heldCount = 0;
      this.heldByPort.fill(0);
    }
    this.config = config;
    this.cacheIface = -1;
    this.ipv4Hops.clear();
  }

  /**
   * Hands packet i, for the router, to the Linux mirror of its interface as it came, or
   * drops it over the interface's punt rate (VPP and routers' control-plane policing: a
   * flood to the router's address costs one system call a packet, and would take the PMD
   * from every other port). True when the interface has a mirror, false when it has none.
   */
  punt(batch: PacketBatch, i: number, iface: Interface): boolean {
    const mirror = this.mirrorPort[iface.index];
    if (mirror < 0) return false;
    if (!this.puntBuckets.takeNow(iface.index, this.config.puntRate, this.config.puntBurst)) {
      batch.dropAs(i, this.drop.punt_rate_limited);
      return true;
    }
    batch.egress[i] = mirror;
    this.count(batch.ingress, this.counter.punted_to_linux, 1);
    return true;
  }

  /** Whether a held slot is free for one more packet. */
  get canHold(): boolean {
    return this.heldCount < this.heldLength.length;
  }

  /**
   * Keeps a copy of packet i, to be sent once the neighbour (iface, family, address) is
   * resolved; the packet itself is consumed. Returns false when the queue is full, or holds
   * its port's share (a quarter): a guest sending to absent hosts by the thousand keeps
   * the other ports' first packets to a new neighbour from being dropped.
   */
  hold(batch: PacketBatch, i: number, iface: number, family: number, a0: number, a1: number, a2: number, a3: number): boolean {
    // A super-frame (TSO) is not held: the copy would go out without its offload state, as
    // one frame of all its segments with its checksum not done. It comes on a connection
    // whose next hop answered long ago, mostly; TCP sends it again.
    if (!this.canHold || batch.length(i) > this.heldRoom || batch.segmentLength(i) !== 0 || this.heldByPort[batch.ingress] >= this.heldPerPort) return false;
    // The copy goes out as a new packet, without the original's offload state.
    batch.completeChecksum(i);
    const h = this.heldCount++;
    const len = batch.length(i);
    const off = batch.offset(i);
    this.heldData.set(batch.data.subarray(off, off + len), h * this.heldRoom);
    const source = batch.receivedSource(i);
    this.heldSourceHi[h] = macHi(batch.data, source);
    this.heldSourceLo[h] = macLo(batch.data, source);
    this.heldLength[h] = len;
    this.heldIface[h] = iface;
    this.heldFamily[h] = family;
    this.heldAddr[h * 4] = a0;
    this.heldAddr[h * 4 + 1] = a1;
    this.heldAddr[h * 4 + 2] = a2;
    this.heldAddr[h * 4 + 3] = a3;
    this.heldSince[h] = this.now;
    this.heldIngress[h] = batch.ingress;
    this.heldByPort[batch.ingress]++;
    batch.egress[i] = EGRESS_CONSUMED;
    this.count(batch.ingress, this.counter.held_for_resolution, 1);
    return true;
  }

  /**
   * Asks for the batches of the ports with held packets (PluginContext.wantBatch), in which
   * releaseHeld() sends them on or drops them: once a next hop answered, and every
   * HELD_CHECK_MS while any are held (another PMD may have seen the answer).
   */
  wantHeldBatches(): void {
    for (let h = 0; h < this.heldCount; h++) this.wantBatch(this.heldIngress[h]);
  }

  /** The interface's first port that is up (PluginContext.portUp), or -1. */
  firstPortUp(iface: Interface): number {
    for (let p = 0; p < iface.ports.length; p++) if (this.portUp(iface.ports[p])) return iface.ports[p];
    return -1;
  }

  /** Takes held packet h out: the last one takes its place. */
  removeHeld(h: number): void {
    this.heldByPort[this.heldIngress[h]]--;
    const last = --this.heldCount;
    if (h === last) return;
    this.heldData.copyWithin(h * this.heldRoom, last * this.heldRoom, last * this.heldRoom + this.heldLength[last]);
    this.heldLength[h] = this.heldLength[last];
    this.heldIface[h] = this.heldIface[last];
    this.heldFamily[h] = this.heldFamily[last];
    this.heldAddr.copyWithin(h * 4, last * 4, last * 4 + 4);
    this.heldSince[h] = this.heldSince[last];
    this.heldIngress[h] = this.heldIngress[last];
    this.heldSourceHi[h] = this.heldSourceHi[last];
    this.heldSourceLo[h] = this.heldSourceLo[last];
  }

  /** The first IPv4 address of an interface as a u32, or 0. */
  ipv4Of(iface: Interface): number {
    return iface.v4.length === 0 ? 0 : read32(iface.v4[0].bytes, 0);
  }
}

/** Fills the cache's header words from a frame whose addresses were just written at d[off]. */
export function cacheHeader(r: Router, d: Uint8Array, off: number): void {
  const w16 = r.words16;
  const w32 = r.words32;
  r.cacheWord0 = w32[off >>> 2];
  r.cacheHalf2 = w16[(off >>> 1) + 2];
  r.cacheHalf3 = w16[(off >>> 1) + 3];
  r.cacheWord2 = w32[(off >>> 2) + 2];
}

/** Entries of a NextHopCache (a power of 2). */
const NEXT_HOP_CACHE = 64;

/**
 * The IPv4 next hops resolved in this batch, as VPP's adjacencies: by interface and
 * address, what the router's one-entry cache (Router.cache*) held for each. Direct-mapped
 * by address: a burst to a few next hops in turn (guests on a connected subnet, ECMP
 * members) asks the neighbour table once for each, not at every change of next hop. An
 * entry holds for the batch it was written in (its stamp): the neighbour table decides
 * again at the next, so a changed MAC, a probe due or a reload are seen within a burst.
 */
export class NextHopCache {
  private readonly stamp = new Float64Array(NEXT_HOP_CACHE);
  private readonly iface = new Int32Array(NEXT_HOP_CACHE);
  private readonly address = new Int32Array(NEXT_HOP_CACHE);
  private readonly macHi = new Int32Array(NEXT_HOP_CACHE);
  private readonly macLo = new Int32Array(NEXT_HOP_CACHE);
  private readonly port = new Int32Array(NEXT_HOP_CACHE);
  private readonly word0 = new Uint32Array(NEXT_HOP_CACHE);
  private readonly half2 = new Uint16Array(NEXT_HOP_CACHE);
  private readonly half3 = new Uint16Array(NEXT_HOP_CACHE);
  private readonly word2 = new Uint32Array(NEXT_HOP_CACHE);
  /** the batch's stamp: entries with another are stale (a float: it never wraps) */
  private batch = 1;

  private static at(iface: number, address: number): number {
    return (address ^ (address >>> 6) ^ iface) & (NEXT_HOP_CACHE - 1);
  }

  /** A new batch: every entry is stale. */
  clear(): void {
    this.batch++;
  }

  /** Notes the next hop the router's one-entry cache now holds (IPv4: address in cacheA0). */
  note(r: Router): void {
    const e = NextHopCache.at(r.cacheIface, r.cacheA0);
    this.stamp[e] = this.batch;
    this.iface[e] = r.cacheIface;
    this.address[e] = r.cacheA0;
    this.macHi[e] = r.cacheMacHi;
    this.macLo[e] = r.cacheMacLo;
    this.port[e] = r.cachePort;
    this.word0[e] = r.cacheWord0;
    this.half2[e] = r.cacheHalf2;
    this.half3[e] = r.cacheHalf3;
    this.word2[e] = r.cacheWord2;
  }

  /** If this batch resolved the next hop (address | 0), puts it back in the router's one-entry cache: true; else false. */
  recall(r: Router, iface: number, address: number): boolean {
    const e = NextHopCache.at(iface, address);
    if (this.stamp[e] !== this.batch || this.address[e] !== address || this.iface[e] !== iface) return false;
    r.cacheIface = iface;
    r.cacheFamily = 4;
    r.cacheA0 = address;
    r.cacheA1 = 0;
    r.cacheA2 = 0;
    r.cacheA3 = 0;
    r.cacheMacHi = this.macHi[e];
    r.cacheMacLo = this.macLo[e];
    r.cachePort = this.port[e];
    r.cacheWord0 = this.word0[e];
    r.cacheHalf2 = this.half2[e];
    r.cacheHalf3 = this.half3[e];
    r.cacheWord2 = this.word2[e];
    return true;
  }
}
