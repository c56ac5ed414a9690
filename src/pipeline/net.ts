// Headers, checksums and addresses, for plugins: what the routing and ACL stages share
// (and any plugin may use). Frame offsets are into batch.data; nothing here allocates
// except the parsers, which run on config, never per packet.
import { Address4, Address6 } from 'ip-address';
import { finishChecksum, ipv6PseudoSum, onesSum } from '../dataplane/checksum.ts';

export const ETH_HLEN = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_VLAN = 0x8100;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
export const IPV6_HLEN = 40;
/** RFC 1812 4.3.2.3: an ICMPv4 error is at most 576 bytes; RFC 4443 2.4: ICMPv6 at most 1280 */
export const ICMP4_ERROR_MAX = 576;
export const ICMP6_ERROR_MAX = 1280;

// ---- IPv6 extension headers -------------------------------------------------------------

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_AH = 51;
export const IPPROTO_DSTOPTS = 60;
/**
 * Extension headers walked before the upper-layer header. RFC 8200 4.1 recommends each at
 * most once (twice for destination options), so a legitimate chain of the ones walked
 * here has at most 6; a longer one is refused rather than read further.
 */
export const MAX_EXTENSION_HEADERS = 8;

/**
 * Where an IPv6 packet's upper-layer header starts: walks the extension headers from `p`
 * (the first one, of type `next`) up to `end`. Results in the fields, for no allocation.
 */
export class Ipv6Walk {
  /** the upper-layer protocol, or -1 when the chain is malformed or too long */
  protocol = -1;
  offset = 0;
  /** a fragment header with a non-zero offset was met: no upper-layer header follows */
  laterFragment = false;
  /** where the (last) fragment header met starts, or -1 */
  fragmentAt = -1;

  walk(d: Uint8Array, p: number, end: number, next: number): void {
    this.laterFragment = false;
    this.fragmentAt = -1;
    for (let step = 0; step <= MAX_EXTENSION_HEADERS; step++) {
      if (next !== IPPROTO_HOPOPTS && next !== IPPROTO_ROUTING && next !== IPPROTO_DSTOPTS && next !== IPPROTO_FRAGMENT && next !== IPPROTO_AH) {
        this.protocol = next;
        this.offset = p;
        return;
      }
      if (step === MAX_EXTENSION_HEADERS || p + 8 > end) break;
      const after = d[p];
      if (next === IPPROTO_FRAGMENT) {
        this.fragmentAt = p;
        // RFC 8200 4.5: Fragment Offset, the high 13 bits of bytes 2-3, in 8-octet units
        if ((read16(d, p + 2) & 0xfff8) !== 0) {
          this.protocol = after;
          this.offset = p + 8;
          this.laterFragment = true;
          return;
        }
        p += 8;
      } else if (next === IPPROTO_AH) {
        // RFC 4302 2.2: Payload Len is the AH length in 4-octet units, minus 2
        p += (d[p + 1] + 2) * 4;
      } else {
        // RFC 8200 4.3-4.6: Hdr Ext Len in 8-octet units, not counting the first 8
        p += (d[p + 1] + 1) * 8;
      }
      next = after;
      if (p > end) break;
    }
    this.protocol = -1;
  }
}

// ---- addresses, as a user types them -------------------------------------------------------

/** An address or prefix in bytes: 4 for IPv4, 16 for IPv6. */
export interface Prefix {
  family: 4 | 6;
  bytes: Uint8Array;
  /** prefix length (32 or 128 for an address) */
  length: number;
  /** as the user should read it back: "10.0.0.1/24" */
  text: string;
}

/**
 * An IPv4 address with a prefix length, written as vrouter writes them ("10.1.0.0/16": no
 * leading zeros), as one exact number: the address times 64, plus the length; -1 for any
 * other text. A fraction of a parse's cost, and no object made: for tables of a million
 * routes.
 */
export function ipv4PrefixKey(text: string): number {
  let address = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  let i = 0;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return -1;
      octet = octet * 10 + c - 48;
      if (octet > 255) return -1;
      digits++;
    } else if (c === 46 && digits > 0 && dots < 3) {
      address = address * 256 + octet;
      octet = digits = 0;
      dots++;
    } else if (c === 47 && digits > 0 && dots === 3) break;
    else return -1;
  }
  const rest = text.length - i - 1;
  if (rest < 1 || rest > 2 || (rest === 2 && text.charCodeAt(i + 1) === 48)) return -1;
  const length = rest === 1 ? text.charCodeAt(i + 1) - 48 : (text.charCodeAt(i + 1) - 48) * 10 + text.charCodeAt(i + 2) - 48;
  if (!(length >= 0 && length <= 32) || (rest === 2 && !(text.charCodeAt(i + 2) >= 48 && text.charCodeAt(i + 2) <= 57))) return -1;
  return (address * 256 + octet) * 64 + length;
}

/** An address with or without /length; throws Error(reason) for anything else. */
export function parsePrefix(text: unknown): Prefix {
  if (typeof text !== 'string') throw new Error(`must be an IPv4 or IPv6 address or prefix as a string, got ${JSON.stringify(text)}`);
  // Written as vrouter writes it: no parse needed (a config of a million routes).
  const key = ipv4PrefixKey(text);
  if (key >= 0) {
    const a = Math.floor(key / 64);
    return { family: 4, bytes: Uint8Array.of(Math.floor(a / 16777216), (a >>> 16) & 255, (a >>> 8) & 255, a & 255), length: key % 64, text };
  }
  const v6 = text.includes(':');
  const slash = text.indexOf('/');
  // One parse (the constructor checks it all): a route table of a million entries is parsed
  // on the control plane's thread.
  let a: Address4 | Address6;
  try {
    if (slash >= 0 && !/^\/\d{1,3}$/.test(text.slice(slash))) throw new Error('bad length');
    a = v6 ? new Address6(text) : new Address4(text);
  } catch {
    throw new Error(`${JSON.stringify(text)} is not an IPv${v6 ? 6 : 4} address or prefix`);
  }
  if (a.subnetMask > (v6 ? 128 : 32)) throw new Error(`${JSON.stringify(text)}: the prefix length is at most ${v6 ? 128 : 32}`);
  const bytes = Uint8Array.from(v6 ? (a as Address6).toUnsignedByteArray() : (a as Address4).toArray());
  if (bytes.length !== (v6 ? 16 : 4)) throw new Error(`${JSON.stringify(text)} is not an IPv${v6 ? 6 : 4} address or prefix`);
  return { family: v6 ? 6 : 4, bytes, length: a.subnetMask, text: `${a.correctForm()}${slash >= 0 ? `/${a.subnetMask}` : ''}` };
}

/** An address without a prefix length. */
export function parseAddress(text: unknown): Prefix {
  const p = parsePrefix(text);
  if (typeof text === 'string' && text.includes('/')) throw new Error(`${JSON.stringify(text)} must be an address, without a /length`);
  return p;
}

/** A prefix whose host bits are zero ("10.0.0.0/24", not "10.0.0.1/24"). */
export function parseNetwork(text: unknown): Prefix {
  const p = parsePrefix(text);
  const masked = maskBytes(p.bytes, p.length);
  if (!masked.every((b, i) => b === p.bytes[i])) throw new Error(`${JSON.stringify(text)} has host bits set (the network is ${formatAddress(masked)}/${p.length})`);
  return p;
}

export function maskBytes(bytes: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, length - i * 8));
    out[i] = bytes[i] & ((0xff00 >> bits) & 0xff);
  }
  return out;
}

export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16));
  return new Address6(groups.join(':')).correctForm();
}

/**
 * Why no one host can have the address, or null: IPv4's 0/8, loopback, multicast, 240/4 and
 * broadcast, IPv6's unspecified, loopback and multicast (RFC 1812 5.3.7, RFC 4291 2.5.2-2.7).
 */
export function notAUnicastAddress(a: Prefix): string | null {
  const b = a.bytes;
  if (a.family === 6) {
    if (b[0] === 0xff) return 'is a multicast address';
    if (b.every((x, k) => x === 0 || (k === 15 && x === 1))) return b[15] === 1 ? 'is the loopback address' : 'is the unspecified address';
    return null;
  }
  if (b.every((x) => x === 255)) return 'is the broadcast address';
  if (b[0] >= 240) return 'is in 240/4 (reserved)';
  if (b[0] >= 224) return 'is a multicast address';
  if (b[0] === 127) return 'is a loopback address (127/8)';
  if (b[0] === 0) return 'is in 0/8 ("this network")';
  return null;
}

/** Whether an address is one of this host's loopback: 127/8, ::1. */
export function isLoopbackAddress(a: Prefix): boolean {
  return a.family === 4 ? a.bytes[0] === 127 : a.bytes.every((b, i) => b === (i === 15 ? 1 : 0));
}

/** Whether the IPv6 address at d[at] is :: or ::1 (most addresses differ in their first two bytes). */
export function isUnspecifiedOrLoopback6(d: Uint8Array, at: number): boolean {
  if ((d[at] | d[at + 1]) !== 0) return false;
  for (let k = 2; k < 15; k++) if (d[at + k] !== 0) return false;
  return d[at + 15] <= 1;
}

/**
 * Why no packet to any address of a network is ever routed (a route to it would never be
 * used), or null when some are: destinations the routing stage drops as not routable (RFC
 * 1812 5.3.7 for IPv4; IPv6 multicast is the segment's, link-local never leaves its link).
 * Networks that only overlap such a range (0.0.0.0/0) are routed.
 */
export function notRoutedNetwork(p: Prefix): string | null {
  const b = p.bytes;
  if (p.family === 6) {
    if (p.length >= 8 && b[0] === 0xff) return 'is in ff00::/8 (multicast)';
    if (p.length >= 10 && b[0] === 0xfe && (b[1] & 0xc0) === 0x80) return 'is in fe80::/10 (link-local)';
    return null;
  }
  if (p.length >= 3 && b[0] >= 224) return p.length === 3 ? 'is 224/3 (multicast and reserved)' : b[0] >= 240 ? 'is in 240/4 (reserved)' : 'is in 224/4 (multicast)';
  if (p.length >= 8 && b[0] === 127) return 'is in 127/8 (loopback)';
  if (p.length >= 8 && b[0] === 0) return 'is in 0/8 ("this network")';
  return null;
}

/**
 * Whether an IPv4 address is the network or the broadcast address of its subnet of
 * `length` bits (host bits all 0 or all 1), or neither; a /31 or /32 has neither (RFC 3021).
 */
export function ipv4SubnetEdge(address: Uint8Array, length: number): 'network' | 'broadcast' | null {
  if (length >= 31) return null;
  const hostBits = 0xffffffff >>> length;
  const host = (ipv4Number(address) & hostBits) >>> 0;
  return host === 0 ? 'network' : host === hostBits ? 'broadcast' : null;
}

/** An IPv4 address as one unsigned 32-bit number. */
export function ipv4Number(bytes: Uint8Array): number {
  return ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
}

/** "52:54:00:12:34:56" as [high 16 bits, low 32 bits as an int32] (see macLo); throws Error(reason). */
export function parseMac(text: unknown): [number, number] {
  if (typeof text !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) throw new Error(`must look like 52:54:00:12:34:56, got ${JSON.stringify(text)}`);
  const b = text.split(':').map((h) => parseInt(h, 16));
  return [(b[0] << 8) | b[1], (b[2] << 24) | (b[3] << 16) | (b[4] << 8) | b[5]];
}

export function formatMac(hi: number, lo: number): string {
  return [hi >> 8, hi & 0xff, lo >>> 24, (lo >>> 16) & 0xff, (lo >>> 8) & 0xff, lo & 0xff].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * The router's MAC on a port or bridge that names none: locally administered, unicast, and
 * derived from the name (FNV-1a), so that it stays the same across restarts.
 */
export function derivedRouterMac(name: string): string {
  let h = 0x811c9dc5;
  for (const c of Buffer.from(`vrouter:${name}`)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  let g = 0x811c9dc5;
  for (const c of Buffer.from(`${name}:vrouter`)) g = Math.imul(g ^ c, 0x01000193) >>> 0;
  return formatMac(0x0200 | ((h >>> 24) & 0xfe), ((h << 8) | (g & 0xff)) >>> 0).replace(/^../, '02');
}

// ---- bytes -----------------------------------------------------------------------------------

export function read16(d: Uint8Array, o: number): number {
  return (d[o] << 8) | d[o + 1];
}

export function write16(d: Uint8Array, o: number, v: number): void {
  d[o] = (v >>> 8) & 0xff;
  d[o + 1] = v & 0xff;
}

export function read32(d: Uint8Array, o: number): number {
  return ((d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3]) >>> 0;
}

/**
 * The same bits as an int32: on the data path, where what is read feeds bit operations (a
 * hash, a compare of words), rather than read32, whose u32 past 2^31 is a heap number
 * whenever V8 does not inline the call.
 */
export function readInt32(d: Uint8Array, o: number): number {
  return (d[o] << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3];
}

export function write32(d: Uint8Array, o: number, v: number): void {
  d[o] = v >>> 24;
  d[o + 1] = (v >>> 16) & 0xff;
  d[o + 2] = (v >>> 8) & 0xff;
  d[o + 3] = v & 0xff;
}

/** A MAC at d[o..o+6) as its high 16 bits and low 32 bits. */
export function macHi(d: Uint8Array, o: number): number {
  return (d[o] << 8) | d[o + 1];
}

/**
 * The low 32 bits as an int32 (their bits; writeMac and formatMac take either): as a u32,
 * a MAC whose third byte is 0x80 or more (half of all random ones) would be no small
 * integer, and a heap number at every call V8 does not inline.
 */
export function macLo(d: Uint8Array, o: number): number {
  return (d[o + 2] << 24) | (d[o + 3] << 16) | (d[o + 4] << 8) | d[o + 5];
}

export function writeMac(d: Uint8Array, o: number, hi: number, lo: number): void {
  write16(d, o, hi);
  write32(d, o + 2, lo);
}

// ---- checksums (RFC 1071, RFC 1624): the data path's own, one copy for both ---------------

export { adjustChecksum, finishChecksum, ipv4HeaderChecksum, ipv4PseudoSum, ipv6PseudoSum, onesSum } from '../dataplane/checksum.ts';

// ---- frames the router writes --------------------------------------------------------------

/** Writes an Ethernet header at o. */
export function writeEthernet(d: Uint8Array, o: number, dstHi: number, dstLo: number, srcHi: number, srcLo: number, type: number): void {
  writeMac(d, o, dstHi, dstLo);
  writeMac(d, o + 6, srcHi, srcLo);
  write16(d, o + 12, type);
}

/** Writes a 20-byte IPv4 header at ip (TTL 64, no options) with its checksum. */
export function writeIpv4Header(d: Uint8Array, ip: number, totalLength: number, protocol: number, src: number, dst: number, ttl = 64): void {
  d[ip] = 0x45;
  d[ip + 1] = 0;
  write16(d, ip + 2, totalLength);
  write32(d, ip + 4, 0);
  d[ip + 8] = ttl;
  d[ip + 9] = protocol;
  write16(d, ip + 10, 0);
  write32(d, ip + 12, src);
  write32(d, ip + 16, dst);
  write16(d, ip + 10, finishChecksum(onesSum(d, ip, ip + 20)));
}

/**
 * Turns the IPv4 packet of the frame at o (Ethernet header + IP, `length` bytes) into an
 * ICMP error about it (RFC 792), in place: to the sender, from `src` (the router's address),
 * quoting as much of the packet as fits in 576 bytes. The Ethernet addresses are the
 * caller's: dst is the MAC at d[senderMac..+6) (read before anything is written), src is
 * the router's. `rest` is the 4 bytes after the checksum (e.g. the next-hop MTU).
 * Returns the new frame length.
 */
export function icmp4Error(d: Uint8Array, o: number, length: number, type: number, code: number, rest: number, src: number, senderMac: number, routerHi: number, routerLo: number): number {
  const dstHi = macHi(d, senderMac);
  const dstLo = macLo(d, senderMac);
  const ip = o + ETH_HLEN;
  const sender = read32(d, ip + 12);
  const quote = Math.min(length - ETH_HLEN, ICMP4_ERROR_MAX - 28);
  d.copyWithin(ip + 28, ip, ip + quote);
  writeEthernet(d, o, dstHi, dstLo, routerHi, routerLo, ETHERTYPE_IPV4);
  writeIpv4Header(d, ip, 28 + quote, IPPROTO_ICMP, src, sender);
  const icmp = ip + 20;
  d[icmp] = type;
  d[icmp + 1] = code;
  write16(d, icmp + 2, 0);
  write32(d, icmp + 4, rest);
  write16(d, icmp + 2, finishChecksum(onesSum(d, icmp, icmp + 8 + quote)));
  return ETH_HLEN + 28 + quote;
}

/**
 * The ICMPv6 counterpart (RFC 4443): the frame at o becomes an ICMPv6 error to the sender,
 * from `src` (16 bytes at d[src..]; copied first), quoting what fits in 1280 bytes.
 */
export function icmp6Error(d: Uint8Array, o: number, length: number, type: number, code: number, rest: number, src: Uint8Array, senderMac: number, routerHi: number, routerLo: number): number {
  const dstHi = macHi(d, senderMac);
  const dstLo = macLo(d, senderMac);
  const ip = o + ETH_HLEN;
  const quote = Math.min(length - ETH_HLEN, ICMP6_ERROR_MAX - IPV6_HLEN - 8);
  d.copyWithin(ip + 48, ip, ip + quote);
  writeEthernet(d, o, dstHi, dstLo, routerHi, routerLo, ETHERTYPE_IPV6);
  // The quoted packet's source (now at ip + 48 + 8) is the error's destination.
  d.copyWithin(ip + 24, ip + 48 + 8, ip + 48 + 24);
  d.set(src, ip + 8);
  write32(d, ip, 0x60000000);
  write16(d, ip + 4, 8 + quote);
  d[ip + 6] = IPPROTO_ICMPV6;
  d[ip + 7] = 255;
  const icmp = ip + IPV6_HLEN;
  d[icmp] = type;
  d[icmp + 1] = code;
  write16(d, icmp + 2, 0);
  write32(d, icmp + 4, rest);
  write16(d, icmp + 2, finishChecksum(onesSum(d, icmp, icmp + 8 + quote, ipv6PseudoSum(d, ip, 8 + quote, IPPROTO_ICMPV6))));
  return ETH_HLEN + IPV6_HLEN + 8 + quote;
}
