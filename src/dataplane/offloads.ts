// Checksum and segmentation offload between guests (virtio-net CSUM, GUEST_CSUM, HOST_TSO4/6,
// GUEST_TSO4/6, HOST_ECN, GUEST_ECN).
//
// A guest that negotiated CSUM may send a TCP or UDP frame whose checksum is left to do
// (the virtio-net header's NEEDS_CSUM: the field at csum_start + csum_offset holds only the
// pseudo-header's sum); one that negotiated HOST_TSO may send a super-frame, up to 64 KiB of
// a TCP stream, to be cut into segments of gso_size bytes. The frame keeps that state in its
// buffer's offload fields. A port that takes it (GUEST_CSUM, GUEST_TSO) gets the frame as it
// is, the header saying what is left: vhost-net and OVS-DPDK pass it between VMs so, and
// nobody sums or cuts anything. For any other port vrouter cuts the segments and completes
// the checksums first.
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6 } from '../virtio/constants.ts';
import { finishChecksum, ipv4HeaderChecksum, ipv4PseudoSum, ipv6PseudoSum } from './checksum.ts';
import { OFFLOAD_CSUM_OFFSET, OFFLOAD_CSUM_START, OFFLOAD_FIELDS, OFFLOAD_GSO_SIZE, OFFLOAD_GSO_TYPE, OFFLOAD_HDR_LEN, type PacketPool } from './packet-pool.ts';

import { OFFLOAD_ECN_FROM_GUEST, OFFLOAD_ECN_TO_GUEST, OFFLOAD_TSO4_FROM_GUEST, OFFLOAD_TSO4_TO_GUEST, OFFLOAD_TSO6_FROM_GUEST, OFFLOAD_TSO6_TO_GUEST } from '../virtio/offload-flags.ts';

export * from '../virtio/offload-flags.ts';

/**
 * The most segments one super-frame may be cut into: Linux sends at most 64 KiB, 45
 * segments of a 1460-byte MSS. A guest asking for more (a gso_size of a few bytes) would
 * make the PMD cut thousands of frames out of one: refused instead.
 */
export const MAX_GSO_SEGMENTS = 64;

const ETHER_HDR_LEN = 14;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
/** The checksum field's offset in the TCP and in the UDP header. */
const TCP_CSUM_OFFSET = 16;
const UDP_CSUM_OFFSET = 6;

/** takeOffloadHeader(): the header is refused (the frame is dropped). */
export const OFFLOAD_HEADER_BAD = 0;
/** Taken: what it leaves to do is recorded in the buffer's offload fields. */
export const OFFLOAD_HEADER_TAKEN = 1;
/** A checksum position that is no TCP or UDP checksum: to be completed before any stage looks at the frame (completeChecksum). */
export const OFFLOAD_COMPLETE_NOW = 2;
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_CWR = 0x80;

/**
 * Reads the virtio-net header the receive path copied just before frame `handle` and
 * records what it leaves to do. OFFLOAD_HEADER_BAD for a header vrouter cannot honour: a
 * segmentation type the connection did not negotiate (or any other than TCP), a checksum
 * position outside the frame, a super-frame whose headers do not parse as the type says,
 * whose segments would be longer than `maxFrame` (the port's) or more than
 * MAX_GSO_SEGMENTS. OFFLOAD_COMPLETE_NOW for a checksum left at any other place than a TCP
 * or UDP header's checksum: the guest chooses every byte the sum covers, so completed
 * after the stages it would write a value of its choosing into a field they judged (a
 * port, an address); the caller completes it first, as DPDK's vhost does with a position
 * it does not know. Without NEEDS_CSUM the offload fields stay as alloc() left them
 * (nothing to do).
 */
export function takeOffloadHeader(pool: PacketPool, handle: number, frameLen: number, offloads: number, maxFrame: number): number {
  const d = pool.data;
  const h = pool.frameOffset(handle) - 12;
  const gsoType = d[h + 1];
  if ((d[h] & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return gsoType === VIRTIO_NET_HDR_GSO_NONE ? OFFLOAD_HEADER_TAKEN : OFFLOAD_HEADER_BAD;
  const start = d[h + 6] | (d[h + 7] << 8);
  const offset = d[h + 8] | (d[h + 9] << 8);
  // Linux (virtio_net_hdr_to_skb) refuses the same: the field must lie inside the frame,
  // after the Ethernet header.
  if (start < ETHER_HDR_LEN || start + offset + 2 > frameLen) return OFFLOAD_HEADER_BAD;
  const fields = handle * OFFLOAD_FIELDS;
  pool.offload[fields + OFFLOAD_CSUM_START] = start + 1;
  pool.offload[fields + OFFLOAD_CSUM_OFFSET] = offset;
  pool.offload[fields + OFFLOAD_GSO_TYPE] = VIRTIO_NET_HDR_GSO_NONE;
  if (gsoType === VIRTIO_NET_HDR_GSO_NONE) return atTransportChecksum(d, pool.frameOffset(handle), frameLen, start, offset) ? OFFLOAD_HEADER_TAKEN : OFFLOAD_COMPLETE_NOW;
  return takeSegmentation(pool, handle, frameLen, offloads, maxFrame, gsoType, d[h + 4] | (d[h + 5] << 8), start, offset) ? OFFLOAD_HEADER_TAKEN : OFFLOAD_HEADER_BAD;
}

/**
 * Whether [start, + 2 at offset) is the checksum of the frame's TCP or UDP header: IPv4
 * (not a fragment) or IPv6 whose next header is TCP or UDP, after Ethernet and one VLAN tag
 * at most. Reads no further than the IP header's first 10 bytes (a frame's head in the
 * buffer holds at least 64: see deferred-payloads.ts).
 */
function atTransportChecksum(d: Uint8Array, f: number, frameLen: number, start: number, offset: number): boolean {
  const l3 = l3Offset(d, f);
  if (frameLen < l3 + 20) return false;
  let protocol: number;
  let l4: number;
  if (d[f + l3 - 2] === 0x08 && d[f + l3 - 1] === 0x00 && d[f + l3] >> 4 === 4) {
    const ihl = d[f + l3] & 15;
    // A later fragment has no transport header; a first one's checksum covers more than it.
    if (ihl < 5 || ((d[f + l3 + 6] & 0x3f) | d[f + l3 + 7]) !== 0) return false;
    protocol = d[f + l3 + 9];
    l4 = l3 + ihl * 4;
  } else if (d[f + l3 - 2] === 0x86 && d[f + l3 - 1] === 0xdd && d[f + l3] >> 4 === 6) {
    protocol = d[f + l3 + 6];
    l4 = l3 + 40;
  } else {
    return false;
  }
  return start === l4 && ((protocol === IPPROTO_TCP && offset === TCP_CSUM_OFFSET) || (protocol === IPPROTO_UDP && offset === UDP_CSUM_OFFSET));
}

function takeSegmentation(pool: PacketPool, handle: number, frameLen: number, offloads: number, maxFrame: number, gsoType: number, gsoSize: number, start: number, offset: number): boolean {
  const type = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
  const v4 = type === VIRTIO_NET_HDR_GSO_TCPV4;
  if (!v4 && type !== VIRTIO_NET_HDR_GSO_TCPV6) return false;
  if ((offloads & (v4 ? OFFLOAD_TSO4_FROM_GUEST : OFFLOAD_TSO6_FROM_GUEST)) === 0) return false;
  if ((gsoType & VIRTIO_NET_HDR_GSO_ECN) !== 0 && (offloads & OFFLOAD_ECN_FROM_GUEST) === 0) return false;
  // The headers as cutting needs them: Ethernet (one VLAN tag at most), IPv4 (IHL 5 or
  // more: below, the TCP header would lie inside the IP header, where cutting writes; not a
  // fragment) or IPv6 without extension headers, of the family the type says, then TCP
  // with the checksum where atTransportChecksum() wants it.
  const d = pool.data;
  const f = pool.frameOffset(handle);
  const l3 = l3Offset(d, f);
  if (frameLen < l3 + 40 || offset !== TCP_CSUM_OFFSET || gsoSize === 0 || !atTransportChecksum(d, f, frameLen, start, offset)) return false;
  if ((d[f + l3 - 2] === 0x08) !== v4) return false;
  const hdrLen = start + (d[f + start + 12] >> 4) * 4;
  // Each segment must be a frame the port could have sent (and fits a small buffer).
  if (hdrLen < start + 20 || hdrLen > frameLen || hdrLen + gsoSize > maxFrame) return false;
  const payload = frameLen - hdrLen;
  const fields = handle * OFFLOAD_FIELDS;
  // A "super-frame" of one segment is a frame: nothing to cut.
  if (payload <= gsoSize) return true;
  if (Math.ceil(payload / gsoSize) > MAX_GSO_SEGMENTS) return false;
  pool.offload[fields + OFFLOAD_GSO_TYPE] = gsoType;
  pool.offload[fields + OFFLOAD_GSO_SIZE] = gsoSize;
  pool.offload[fields + OFFLOAD_HDR_LEN] = hdrLen;
  return true;
}

/** Where the IP header of the frame at `frame` starts: after the Ethernet header and one VLAN tag, if it has one. */
export function l3Offset(d: Uint8Array, frame: number): number {
  return d[frame + 12] === 0x81 && d[frame + 13] === 0x00 ? ETHER_HDR_LEN + 4 : ETHER_HDR_LEN;
}

/** Whether a port whose connection negotiated `offloads` takes frame `handle` as it is (a super-frame of its type). */
export function takesSegmentation(pool: PacketPool, handle: number, offloads: number): boolean {
  const gsoType = pool.offload[handle * OFFLOAD_FIELDS + OFFLOAD_GSO_TYPE];
  const wanted = (gsoType & ~VIRTIO_NET_HDR_GSO_ECN) === VIRTIO_NET_HDR_GSO_TCPV4 ? OFFLOAD_TSO4_TO_GUEST : OFFLOAD_TSO6_TO_GUEST;
  if ((offloads & wanted) === 0) return false;
  return (gsoType & VIRTIO_NET_HDR_GSO_ECN) === 0 || (offloads & OFFLOAD_ECN_TO_GUEST) !== 0;
}

/**
 * Cuts super-frame `handle` into segments in new buffers, their handles into out from
 * `at`: each the headers (IPv4 length, ID + k and header checksum; IPv6 payload length;
 * TCP sequence + k * gso_size, FIN and PSH on the last only, CWR on the first only) and its
 * share of the payload, the TCP checksum left to do (the pseudo-header's sum in the field).
 * Returns the number of segments, or -1 when the pool ran out (none is kept).
 */
export function segmentSuperFrame(pool: PacketPool, handle: number, out: Uint32Array, at: number): number {
  const fields = handle * OFFLOAD_FIELDS;
  const gsoType = pool.offload[fields + OFFLOAD_GSO_TYPE];
  const mss = pool.offload[fields + OFFLOAD_GSO_SIZE];
  const hdrLen = pool.offload[fields + OFFLOAD_HDR_LEN];
  const l4 = pool.offload[fields + OFFLOAD_CSUM_START] - 1;
  const v4 = (gsoType & ~VIRTIO_NET_HDR_GSO_ECN) === VIRTIO_NET_HDR_GSO_TCPV4;
  const d = pool.data;
  const src = pool.frameOffset(handle);
  const len = pool.length[handle];
  const l3 = l3Offset(d, src);
  const payload = len - hdrLen;
  const n = Math.ceil(payload / mss);
  const id = (d[src + l3 + 4] << 8) | d[src + l3 + 5];
  const seq = ((d[src + l4 + 4] << 24) | (d[src + l4 + 5] << 16) | (d[src + l4 + 6] << 8) | d[src + l4 + 7]) >>> 0;
  const flags = d[src + l4 + 13];
  for (let k = 0; k < n; k++) {
    const s = pool.alloc();
    if (s < 0) {
      for (let j = 0; j < k; j++) pool.free(out[at + j]);
      return -1;
    }
    const dst = pool.frameOffset(s);
    const segLen = k === n - 1 ? payload - k * mss : mss;
    // Bounds: takeOffloadHeader() let no super-frame in whose hdrLen + gso_size exceeds its
    // port's largest frame (at most DATA_ROOM), and k * mss + segLen = payload at most.
    d.copyWithin(dst, src, src + hdrLen);
    d.copyWithin(dst + hdrLen, src + hdrLen + k * mss, src + hdrLen + k * mss + segLen);
    const frameLen = hdrLen + segLen;
    pool.length[s] = frameLen;
    const ip = dst + l3;
    if (v4) {
      const total = frameLen - l3;
      d[ip + 2] = total >>> 8;
      d[ip + 3] = total & 0xff;
      const segId = (id + k) & 0xffff;
      d[ip + 4] = segId >>> 8;
      d[ip + 5] = segId & 0xff;
      const check = ipv4HeaderChecksum(d, ip, (d[ip] & 15) * 4);
      d[ip + 10] = check >>> 8;
      d[ip + 11] = check & 0xff;
    } else {
      const payloadLength = frameLen - l3 - 40;
      d[ip + 4] = payloadLength >>> 8;
      d[ip + 5] = payloadLength & 0xff;
    }
    const tcp = dst + l4;
    const segSeq = (seq + k * mss) >>> 0;
    d[tcp + 4] = segSeq >>> 24;
    d[tcp + 5] = (segSeq >>> 16) & 0xff;
    d[tcp + 6] = (segSeq >>> 8) & 0xff;
    d[tcp + 7] = segSeq & 0xff;
    let f = flags;
    if (k < n - 1) f &= ~(TCP_FIN | TCP_PSH);
    if (k > 0) f &= ~TCP_CWR;
    d[tcp + 13] = f;
    // Left to do, as a guest with CSUM would leave it: the pseudo-header's sum, folded (not complemented).
    const tcpLength = frameLen - l4;
    const pseudo = ~finishChecksum(v4 ? ipv4PseudoSum(d, ip, tcpLength, IPPROTO_TCP) : ipv6PseudoSum(d, ip, tcpLength, IPPROTO_TCP)) & 0xffff;
    d[tcp + 16] = pseudo >>> 8;
    d[tcp + 17] = pseudo & 0xff;
    const segFields = s * OFFLOAD_FIELDS;
    pool.offload[segFields + OFFLOAD_CSUM_START] = l4 + 1;
    pool.offload[segFields + OFFLOAD_CSUM_OFFSET] = 16;
    pool.offload[segFields + OFFLOAD_GSO_TYPE] = VIRTIO_NET_HDR_GSO_NONE;
    out[at + k] = s;
  }
  return n;
}

/**
 * Completes the checksum frame `handle` left to do, in its buffer, and clears the state:
 * the one's complement sum of the bytes from csum_start to the end (the field's
 * pseudo-header sum among them), complemented, at csum_start + csum_offset. A stage that
 * shortened the frame under the field leaves nothing to complete: the state is cleared.
 * A super-frame keeps its state (a frame with GSO_TYPE set always has CSUM_START set too).
 */
export function completeChecksum(pool: PacketPool, handle: number): void {
  const fields = handle * OFFLOAD_FIELDS;
  const start = pool.offload[fields + OFFLOAD_CSUM_START] - 1;
  // A super-frame's checksums are its segments', done as they are cut: nothing to do whole.
  if (start >= 0 && pool.offload[fields + OFFLOAD_GSO_TYPE] !== 0) return;
  const offset = pool.offload[fields + OFFLOAD_CSUM_OFFSET];
  pool.offload[fields + OFFLOAD_CSUM_START] = 0;
  const len = pool.length[handle];
  if (start < 0 || start + offset + 2 > len) return;
  const d = pool.data;
  const from = pool.frameOffset(handle) + start;
  const end = pool.frameOffset(handle) + len;
  // RFC 1071: the sum does not depend on byte order, so 16-bit little-endian loads serve
  // and the result is stored little-endian too (csum_offset is even for TCP and UDP).
  // Frames start 64-byte aligned: an odd start (never seen from Linux or DPDK) goes a
  // byte pair at a time.
  let sum = 0;
  const pairs = (end - from) >>> 1;
  if ((from & 1) === 0) {
    const words = pool.words16;
    const w = from >>> 1;
    for (let i = 0; i < pairs; i++) sum += words[w + i];
  } else {
    for (let i = 0; i < pairs; i++) sum += d[from + 2 * i] | (d[from + 2 * i + 1] << 8);
  }
  if (((end - from) & 1) !== 0) sum += d[end - 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  let result = ~sum & 0xffff;
  // UDP (csum_offset 6): 0 means "no checksum", so a sum of 0 goes as 0xffff (RFC 768).
  if (result === 0 && offset === 6) result = 0xffff;
  const at = from + offset;
  d[at] = result & 0xff;
  d[at + 1] = result >>> 8;
}

/** Frame `handle` leaves nothing to do (a frame written anew in its buffer). */
export function forgetOffloads(pool: PacketPool, handle: number): void {
  pool.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = 0;
  pool.offload[handle * OFFLOAD_FIELDS + OFFLOAD_GSO_TYPE] = VIRTIO_NET_HDR_GSO_NONE;
}

/** Whether frame `handle` leaves a checksum to do. */
export function leavesChecksum(pool: PacketPool, handle: number): boolean {
  return pool.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] !== 0;
}

/** Whether frame `handle` is a super-frame (its segments left to cut). */
export function isSegmented(pool: PacketPool, handle: number): boolean {
  const fields = handle * OFFLOAD_FIELDS;
  return pool.offload[fields + OFFLOAD_CSUM_START] !== 0 && pool.offload[fields + OFFLOAD_GSO_TYPE] !== 0;
}
