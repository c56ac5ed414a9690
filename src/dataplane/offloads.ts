// Checksum offload between guests (VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM): a guest
// that negotiated CSUM may send a TCP or UDP frame whose checksum is left to do (the
// virtio-net header's NEEDS_CSUM: the field at csum_start + csum_offset holds only the
// pseudo-header's sum). The frame keeps that state in its buffer's offload fields; a guest
// that negotiated GUEST_CSUM gets it as it is (vhost-net and OVS-DPDK do the same between
// VMs: nobody sums the bytes), anything else gets it completed here first.
import { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE } from '../virtio/constants.ts';
import { OFFLOAD_CSUM_OFFSET, OFFLOAD_CSUM_START, OFFLOAD_FIELDS, type PacketPool } from './packet-pool.ts';

/** What a guest's connection negotiated, as the data path tests it. */
export const OFFLOAD_CSUM_FROM_GUEST = 1;
export const OFFLOAD_CSUM_TO_GUEST = 2;

const ETHER_HDR_LEN = 14;

/**
 * Reads the virtio-net header the receive path copied just before frame `handle` and
 * records the checksum it leaves to do. Returns false for a header vrouter cannot honour:
 * a segmentation offload (never offered), or a checksum position outside the frame.
 * Without NEEDS_CSUM the offload fields stay as alloc() left them (nothing to do).
 */
export function takeOffloadHeader(pool: PacketPool, handle: number, frameLen: number): boolean {
  const d = pool.data;
  const h = pool.frameOffset(handle) - 12;
  if (d[h + 1] !== VIRTIO_NET_HDR_GSO_NONE) return false;
  if ((d[h] & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return true;
  const start = d[h + 6] | (d[h + 7] << 8);
  const offset = d[h + 8] | (d[h + 9] << 8);
  // Linux (virtio_net_hdr_to_skb) refuses the same: the field must lie inside the frame,
  // after the Ethernet header.
  if (start < ETHER_HDR_LEN || start + offset + 2 > frameLen) return false;
  pool.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] = start + 1;
  pool.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_OFFSET] = offset;
  return true;
}

/**
 * Completes the checksum frame `handle` left to do, in its buffer, and clears the state:
 * the one's complement sum of the bytes from csum_start to the end (the field's
 * pseudo-header sum among them), complemented, at csum_start + csum_offset. A stage that
 * shortened the frame under the field leaves nothing to complete: the state is cleared.
 */
export function completeChecksum(pool: PacketPool, handle: number): void {
  const fields = handle * OFFLOAD_FIELDS;
  const start = pool.offload[fields + OFFLOAD_CSUM_START] - 1;
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

/** Whether frame `handle` leaves a checksum to do. */
export function leavesChecksum(pool: PacketPool, handle: number): boolean {
  return pool.offload[handle * OFFLOAD_FIELDS + OFFLOAD_CSUM_START] !== 0;
}
