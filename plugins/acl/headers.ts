// Header parsing for the acl stage: each frame of a batch read once into the classifier's
// flow keys and the offsets the later steps need (conntrack, reject). Frames are guest
// input: every length is checked against the frame and the IP packet's own length before
// a byte is read, and the IPv6 extension-header walk has a step limit. A frame that
// cannot be read is marked BAD (the stage drops it: a filter fails closed); frames that
// are not IP are marked NOT_IP (the stage leaves them alone).
import { ETH_HLEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_HLEN, Ipv6Walk, read16, read32 } from '../../src/pipeline/api.ts';
import type { PacketBatch } from '../../src/pipeline/api.ts';
import { FRAGMENT, type FlowKeys } from './classifier.ts';
import { FC_DST, FC_MARK, FC_NOTED, FC_PORTS, FC_PROTO, FC_PROTO_BITS, FC_SEQ, FC_SLOT, FC_SRC, FlowCache, SET_WORDS } from './flow-cache.ts';

/** IP, with its upper-layer header at l4 (the first fragment, or a whole packet) */
export const HEADERS_L4 = 0;
/** IP, a fragment after the first: no upper-layer header (l4 is 0) */
export const HEADERS_LATER_FRAGMENT = 1;
/** IP, with a protocol whose header the ACL does not read (l4 is where it starts) */
export const HEADERS_IP = 2;
export const HEADERS_NOT_IP = 3;
export const HEADERS_BAD = 4;
/** dropped or consumed by an earlier stage: left alone */
export const HEADERS_SKIP = 5;
/** passed by the flow cache as a packet of a tracked connection (parseBurst()): nothing more to do */
export const HEADERS_ESTABLISHED = 6;

/** Whether the host stores the low byte of a word first, as x86-64 and arm64 do. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const ETHERTYPE_QINQ = 0x88a8;
const IPPROTO_SCTP = 132;
/** Per packet of a batch: what the parse found (offsets from the frame's start). */
export interface Headers {
  readonly keys: FlowKeys;
  /** HEADERS_* */
  readonly status: Uint8Array;
  /** the IP header */
  readonly l3: Uint16Array;
  /** the upper-layer header (TCP, UDP, ICMP...), see status */
  readonly l4: Uint16Array;
  /** the end of the IP packet (the frame may be longer: Ethernet padding) */
  readonly end: Uint16Array;
  /** the batch's data as 16-bit words on a little-endian host (else null), and the data it views */
  words: Uint16Array | null;
  wordsOf: Uint8Array | null;
  /**
   * The burst's fragments, by index, listed by parseFrame() (parseBurst() empties the
   * lists): first fragments (their upper-layer header read, or BAD) and later ones
   * (HEADERS_LATER_FRAGMENT). For each: its Identification; the protocol its packet's
   * fragments all carry (IPv4's; for IPv6 the Fragment header's Next Header, as headers
   * may follow it); the bytes it carries of its packet (after the IP header and any
   * Fragment header); and for a last fragment (More Fragments clear) where the packet
   * ends, else 0. Lists, so that a burst without fragments costs no store per packet.
   */
  readonly firstFragments: Uint8Array;
  firstCount: number;
  readonly laterFragments: Uint8Array;
  laterCount: number;
  readonly fragmentId: Uint32Array;
  readonly fragmentProtocol: Uint8Array;
  readonly fragmentBytes: Uint32Array;
  readonly fragmentEnd: Uint32Array;
}

export function createHeaders(keys: FlowKeys, capacity: number): Headers {
  return {
    keys,
    status: new Uint8Array(capacity),
    l3: new Uint16Array(capacity),
    l4: new Uint16Array(capacity),
    end: new Uint16Array(capacity),
    words: null,
    wordsOf: null,
    firstFragments: new Uint8Array(capacity),
    firstCount: 0,
    laterFragments: new Uint8Array(capacity),
    laterCount: 0,
    fragmentId: new Uint32Array(capacity),
    fragmentProtocol: new Uint8Array(capacity),
    fragmentBytes: new Uint32Array(capacity),
    fragmentEnd: new Uint32Array(capacity),
  };
}

function noteFirstFragment(h: Headers, i: number, id: number, protocol: number, bytes: number): void {
  h.fragmentId[i] = id;
  h.fragmentProtocol[i] = protocol;
  h.fragmentBytes[i] = bytes;
  h.fragmentEnd[i] = 0;
  h.firstFragments[h.firstCount++] = i;
}

/** `offset`: where in its packet the fragment's bytes go; `last`: More Fragments clear */
function noteLaterFragment(h: Headers, i: number, id: number, protocol: number, bytes: number, offset: number, last: boolean): void {
  h.status[i] = HEADERS_LATER_FRAGMENT;
  h.l4[i] = 0;
  h.fragmentId[i] = id;
  h.fragmentProtocol[i] = protocol;
  h.fragmentBytes[i] = bytes;
  h.fragmentEnd[i] = last ? offset + bytes : 0;
  h.laterFragments[h.laterCount++] = i;
}

function setL4(h: Headers, i: number, d: Uint8Array, off: number, l4: number, end: number, protocol: number, version: number): void {
  const k = h.keys;
  let need = 0;
  if (protocol === IPPROTO_TCP) need = 20;
  else if (protocol === IPPROTO_UDP) need = 8;
  else if (protocol === IPPROTO_SCTP) need = 12;
  else if ((protocol === IPPROTO_ICMP && version === 4) || (protocol === IPPROTO_ICMPV6 && version === 6)) need = 8;
  h.l4[i] = l4 - off;
  if (need === 0) {
    h.status[i] = HEADERS_IP;
    return;
  }
  // A first fragment too short for the upper-layer header is the tiny-fragment attack
  // (RFC 1858 3; RFC 7112 5 for IPv6): it could hide the ports, so it is refused.
  if (l4 + need > end) {
    h.status[i] = HEADERS_BAD;
    return;
  }
  h.status[i] = HEADERS_L4;
  if (need === 8 && protocol !== IPPROTO_UDP) {
    k.icmpType[i] = d[l4];
    k.icmpCode[i] = d[l4 + 1];
    return;
  }
  k.srcPort[i] = read16(d, l4);
  k.dstPort[i] = read16(d, l4 + 2);
  if (protocol === IPPROTO_TCP) {
    // RFC 9293 3.1: Data Offset, the TCP header's length in 32-bit words, at least 5
    const dataOffset = (d[l4 + 12] >>> 4) * 4;
    if (dataOffset < 20 || l4 + dataOffset > end) h.status[i] = HEADERS_BAD;
    k.tcpFlags[i] = d[l4 + 13];
  }
}

function parseIpv4(h: Headers, i: number, d: Uint8Array, off: number, length: number, ip: number): void {
  const k = h.keys;
  const frameEnd = off + length;
  if (ip + 20 > frameEnd || d[ip] >>> 4 !== 4) {
    h.status[i] = HEADERS_BAD;
    return;
  }
  const ihl = (d[ip] & 0x0f) * 4;
  const total = read16(d, ip + 2);
  // RFC 791 3.1: IHL is at least 5 words; Total Length covers header and data
  if (ihl < 20 || total < ihl || ip + total > frameEnd) {
    h.status[i] = HEADERS_BAD;
    return;
  }
  const end = ip + total;
  h.l3[i] = ip - off;
  h.end[i] = end - off;
  const protocol = d[ip + 9];
  k.protocol[i] = protocol;
  k.src4[i] = read32(d, ip + 12);
  k.dst4[i] = read32(d, ip + 16);
  // RFC 791 3.1: Fragment Offset, the low 13 bits of bytes 6-7, non-zero after the first
  // fragment; More Fragments (0x2000) set on all but the last
  const fragment = read16(d, ip + 6);
  const fragmentOffset = fragment & 0x1fff;
  if (fragmentOffset !== 0) {
    // RFC 1858 3.2: a TCP fragment at offset 1 (8 bytes) can only be there to overwrite
    // the first fragment's flags at reassembly
    if (protocol === IPPROTO_TCP && fragmentOffset === 1) {
      h.status[i] = HEADERS_BAD;
      return;
    }
    k.ipVersion[i] = 4 | FRAGMENT;
    noteLaterFragment(h, i, read16(d, ip + 4), protocol, total - ihl, fragmentOffset * 8, (fragment & 0x2000) === 0);
    return;
  }
  k.ipVersion[i] = 4;
  setL4(h, i, d, off, ip + ihl, end, protocol, 4);
  if ((fragment & 0x2000) !== 0) noteFirstFragment(h, i, read16(d, ip + 4), protocol, total - ihl);
}

function parseIpv6(h: Headers, walk: Ipv6Walk, i: number, d: Uint8Array, off: number, length: number, ip: number): void {
  const k = h.keys;
  const frameEnd = off + length;
  if (ip + IPV6_HLEN > frameEnd || d[ip] >>> 4 !== 6) {
    h.status[i] = HEADERS_BAD;
    return;
  }
  // RFC 8200 3: Payload Length counts what follows the fixed header (0 is a jumbogram,
  // RFC 2675, which no port here can carry)
  const payload = read16(d, ip + 4);
  const end = ip + IPV6_HLEN + payload;
  if (payload === 0 || end > frameEnd) {
    h.status[i] = HEADERS_BAD;
    return;
  }
  h.l3[i] = ip - off;
  h.end[i] = end - off;
  const s = k.src6;
  const t = k.dst6;
  const w = i << 2;
  s[w] = read32(d, ip + 8);
  s[w + 1] = read32(d, ip + 12);
  s[w + 2] = read32(d, ip + 16);
  s[w + 3] = read32(d, ip + 20);
  t[w] = read32(d, ip + 24);
  t[w + 1] = read32(d, ip + 28);
  t[w + 2] = read32(d, ip + 32);
  t[w + 3] = read32(d, ip + 36);
  walk.walk(d, ip + IPV6_HLEN, end, d[ip + 6]);
  if (walk.protocol < 0) {
    h.status[i] = HEADERS_BAD;
    return;
  }
  k.protocol[i] = walk.protocol;
  // RFC 8200 4.5: the Fragment header's Next Header (byte 0), Fragment Offset (the high 13
  // bits of bytes 2-3, in 8-octet units), M flag (bit 0 of byte 3) and Identification
  // (bytes 4-7); the fragment's bytes of its packet follow the header
  const fragment = walk.fragmentAt;
  if (walk.laterFragment) {
    k.ipVersion[i] = 6 | FRAGMENT;
    noteLaterFragment(h, i, read32(d, fragment + 4), d[fragment], end - fragment - 8, read16(d, fragment + 2) & 0xfff8, (d[fragment + 3] & 1) === 0);
    return;
  }
  k.ipVersion[i] = 6;
  setL4(h, i, d, off, walk.offset, end, walk.protocol, 6);
  // (a Fragment header with offset 0 and M clear is a whole packet: RFC 6946's atomic fragment)
  if (fragment >= 0 && (d[fragment + 3] & 1) !== 0) noteFirstFragment(h, i, read32(d, fragment + 4), d[fragment], end - fragment - 8);
}

/**
 * Parses the frames of a burst into h, and with `ports` their ports into the keys (inPort,
 * and outPort: the port routing chose, or -1 for a flood or no decision, which rules
 * naming one do not match; without, those keys are left as they are: no rule reads them).
 * Frames an earlier stage dropped and the router's own packets are SKIP: not
 * filtered, as Linux's FORWARD chain never sees the router's output.
 *
 * The common frame is read here, in the loop: untagged IPv4, not a fragment, TCP or
 * UDP with its whole header inside the packet; parseFrame() takes the others (and would
 * find the same for these). NB: a call per frame cost 23-33 ns per packet (frames 2 KiB
 * apart, cache-hot) where the same reads in this loop took 10: the call was too big for
 * V8 to inline, and every call loaded each of the dozen arrays anew.
 *
 * With a flow cache (connection tracking), such a frame of a flow the cache holds, that
 * would change nothing in its entry (no SYN, FIN or RST; the entry's expiry already
 * pushed on this second `now`), is passed at once: HEADERS_ESTABLISHED, its mark set, and
 * no keys written. Returns how many were.
 */
export function parseBurst(h: Headers, walk: Ipv6Walk, batch: PacketBatch, ports: boolean, cache: FlowCache | null, now: number): number {
  const count = batch.count;
  const d = batch.data;
  const egress = batch.egress;
  const local = batch.local;
  const marks = batch.mark;
  const ingress = batch.ingress;
  const k = h.keys;
  const status = h.status;
  const l3 = h.l3;
  const l4At = h.l4;
  const endAt = h.end;
  const ipVersion = k.ipVersion;
  const protocols = k.protocol;
  const src4 = k.src4;
  const dst4 = k.dst4;
  const srcPort = k.srcPort;
  const dstPort = k.dstPort;
  const tcpFlags = k.tcpFlags;
  const inPort = k.inPort;
  const outPort = k.outPort;
  const entries = cache === null ? null : cache.entries;
  const table = cache === null ? null : cache.table;
  const seed = cache === null ? 0 : cache.seed;
  const epoch = cache === null ? 0 : cache.sync();
  if (h.wordsOf !== d) {
    h.wordsOf = d;
    h.words = LITTLE_ENDIAN && d.byteOffset === 0 ? new Uint16Array(d.buffer, 0, d.buffer.byteLength >>> 1) : null;
  }
  const w = h.words;
  h.firstCount = 0;
  h.laterCount = 0;
  let established = 0;
  for (let i = 0; i < count; i++) {
    if (batch.dropped(i) || local[i] === 1) {
      status[i] = HEADERS_SKIP;
      continue;
    }
    const off = batch.offset(i);
    const length = batch.length(i);
    const ip = off + ETH_HLEN;
    const frameEnd = off + length;
    if (ip + 20 <= frameEnd && d[off + 12] === 0x08 && d[off + 13] === 0x00) {
      const vihl = d[ip];
      const ihl = (vihl & 0x0f) << 2;
      const total = (d[ip + 2] << 8) | d[ip + 3];
      const protocol = d[ip + 9];
      const l4 = ip + ihl;
      const end = ip + total;
      // RFC 791 3.1: version 4, IHL at least 5 words, Total Length covering header and data,
      // not a fragment (More Fragments and Fragment Offset, the low 14 bits of bytes 6-7,
      // zero); a UDP or a TCP header (RFC 9293 3.1: Data Offset, its length in 32-bit words,
      // at least 5) inside the packet
      if (
        vihl >>> 4 === 4 && ihl >= 20 && total >= ihl && end <= frameEnd && ((d[ip + 6] & 0x3f) | d[ip + 7]) === 0 &&
        (protocol === IPPROTO_UDP ? l4 + 8 <= end : protocol === IPPROTO_TCP && l4 + 20 <= end && d[l4 + 12] >= 0x50 && l4 + ((d[l4 + 12] >>> 4) << 2) <= end)
      ) {
        let src: number;
        let dst: number;
        let ports: number;
        if (w !== null) {
          // Two 16-bit loads per 32-bit field, byte swapped, rather than four byte loads: ip
          // and l4 are even (frames start 64-byte aligned, IHL counts 32-bit words).
          const a = ip >>> 1;
          const b = l4 >>> 1;
          const s0 = w[a + 6];
          const s1 = w[a + 7];
          const t0 = w[a + 8];
          const t1 = w[a + 9];
          const p0 = w[b];
          const p1 = w[b + 1];
          src = ((s0 & 0xff) << 24) | ((s0 & 0xff00) << 8) | ((s1 & 0xff) << 8) | (s1 >>> 8);
          dst = ((t0 & 0xff) << 24) | ((t0 & 0xff00) << 8) | ((t1 & 0xff) << 8) | (t1 >>> 8);
          ports = ((p0 & 0xff) << 24) | ((p0 & 0xff00) << 8) | ((p1 & 0xff) << 8) | (p1 >>> 8);
        } else {
          src = (d[ip + 12] << 24) | (d[ip + 13] << 16) | (d[ip + 14] << 8) | d[ip + 15];
          dst = (d[ip + 16] << 24) | (d[ip + 17] << 16) | (d[ip + 18] << 8) | d[ip + 19];
          ports = (d[l4] << 24) | (d[l4 + 1] << 16) | (d[l4 + 2] << 8) | d[l4 + 3];
        }
        const flags = protocol === IPPROTO_TCP ? d[l4 + 13] : 0;
        if (entries !== null) {
          let c = FlowCache.at(seed, src, dst, ports);
          // The set's second way, unless the first holds the flow.
          if (entries[c + FC_SRC] !== src || entries[c + FC_DST] !== dst || entries[c + FC_PORTS] !== ports) c += SET_WORDS >>> 1;
          // TCP flags FIN, SYN, RST: the entry would change
          const protoWord = entries[c + FC_PROTO];
          let cached = entries[c + FC_SRC] === src && entries[c + FC_DST] === dst && entries[c + FC_PORTS] === ports && (protoWord & 0xff) === protocol && (flags & 0x07) === 0 && entries[c + FC_NOTED] === now;
          // The slot is read only when the table changed since the entry's epoch (flow-cache.ts).
          if (cached && protoWord >>> FC_PROTO_BITS !== epoch) {
            cached = table![entries[c + FC_SLOT]] === entries[c + FC_SEQ];
            if (cached) entries[c + FC_PROTO] = protocol | (epoch << FC_PROTO_BITS);
          }
          if (cached) {
            const mark = entries[c + FC_MARK];
            if (mark !== 0) marks[i] = mark;
            status[i] = HEADERS_ESTABLISHED;
            established++;
            continue;
          }
        }
        status[i] = HEADERS_L4;
        l3[i] = ETH_HLEN;
        l4At[i] = ETH_HLEN + ihl;
        endAt[i] = ETH_HLEN + total;
        ipVersion[i] = 4;
        protocols[i] = protocol;
        src4[i] = src >>> 0;
        dst4[i] = dst >>> 0;
        srcPort[i] = ports >>> 16;
        dstPort[i] = ports & 0xffff;
        tcpFlags[i] = flags;
      } else {
        parseFrame(h, walk, i, d, off, length);
      }
    } else {
      parseFrame(h, walk, i, d, off, length);
    }
    if (ports) {
      inPort[i] = ingress;
      const e = egress[i];
      outPort[i] = e >= 0 ? e : -1;
    }
  }
  return established;
}

/**
 * Parses frame i (at data[off, off + length)) into h. One 802.1Q tag is read through;
 * a second tag (or an 802.1ad one) is BAD: the ACL would not see the IP packet inside,
 * and a filter that cannot look must not let it through.
 */
export function parseFrame(h: Headers, walk: Ipv6Walk, i: number, d: Uint8Array, off: number, length: number): void {
  const k = h.keys;
  // Keys of fields a packet lacks stay as the previous burst left them: the classifier
  // reads only those that apply (FlowKeys), and the stage reads no more than the status says.
  if (length < ETH_HLEN) {
    h.status[i] = HEADERS_BAD;
    return;
  }
  let type = read16(d, off + 12);
  let ip = off + ETH_HLEN;
  if (type === ETHERTYPE_VLAN) {
    if (length < ETH_HLEN + 4) {
      h.status[i] = HEADERS_BAD;
      return;
    }
    type = read16(d, off + 16);
    ip += 4;
  }
  if (type === ETHERTYPE_IPV4) parseIpv4(h, i, d, off, length, ip);
  else if (type === ETHERTYPE_IPV6) parseIpv6(h, walk, i, d, off, length, ip);
  else if (type === ETHERTYPE_VLAN || type === ETHERTYPE_QINQ) h.status[i] = HEADERS_BAD;
  else {
    h.status[i] = HEADERS_NOT_IP;
    k.ipVersion[i] = 0;
  }
}
