// Numbers from the virtio 1.x specification (split and packed virtqueues, virtio-net) that the data
// path and the vhost-user negotiation share.

/** Feature bits (VIRTIO v1.2, 5.1.3 and 6). */
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;

/** Names of the feature bits above, for logs and the admin endpoint. */
export const FEATURE_NAMES: Readonly<Record<number, string>> = {
  [VIRTIO_NET_F_CSUM]: 'CSUM',
  [VIRTIO_NET_F_GUEST_CSUM]: 'GUEST_CSUM',
  [VIRTIO_NET_F_MTU]: 'MTU',
  [VIRTIO_NET_F_GUEST_TSO4]: 'GUEST_TSO4',
  [VIRTIO_NET_F_GUEST_TSO6]: 'GUEST_TSO6',
  [VIRTIO_NET_F_GUEST_ECN]: 'GUEST_ECN',
  [VIRTIO_NET_F_HOST_TSO4]: 'HOST_TSO4',
  [VIRTIO_NET_F_HOST_TSO6]: 'HOST_TSO6',
  [VIRTIO_NET_F_HOST_ECN]: 'HOST_ECN',
  [VIRTIO_NET_F_MAC]: 'MAC',
  [VIRTIO_NET_F_MRG_RXBUF]: 'MRG_RXBUF',
  [VIRTIO_NET_F_STATUS]: 'STATUS',
  [VIRTIO_NET_F_CTRL_VQ]: 'CTRL_VQ',
  [VIRTIO_NET_F_GUEST_ANNOUNCE]: 'GUEST_ANNOUNCE',
  [VIRTIO_NET_F_MQ]: 'MQ',
  [VIRTIO_F_NOTIFY_ON_EMPTY]: 'NOTIFY_ON_EMPTY',
  [VIRTIO_F_ANY_LAYOUT]: 'ANY_LAYOUT',
  [VIRTIO_RING_F_INDIRECT_DESC]: 'INDIRECT_DESC',
  [VIRTIO_RING_F_EVENT_IDX]: 'EVENT_IDX',
  [VHOST_USER_F_PROTOCOL_FEATURES]: 'PROTOCOL_FEATURES',
  [VIRTIO_F_VERSION_1]: 'VERSION_1',
  [VIRTIO_F_RING_PACKED]: 'RING_PACKED',
  [VIRTIO_F_IN_ORDER]: 'IN_ORDER',
};

/** The names of the bits set in `features` (unnamed ones as "bit N"). */
export function featureNames(features: bigint): string[] {
  const names: string[] = [];
  for (let n = 0; n < 64; n++) if ((features & (1n << BigInt(n))) !== 0n) names.push(FEATURE_NAMES[n] ?? `bit ${n}`);
  return names;
}

export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** Descriptor flags (VIRTIO v1.2, 2.7.5). */
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;

/** avail->flags (2.7.7): "a crude mechanism for the driver to inform the device that it doesn't want notifications when buffers are used". */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** used->flags (2.7.10): the device's, "analogous to the way drivers can suppress used buffer notifications". */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Packed virtqueue descriptor flags (VIRTIO v1.2, 2.8.1): the driver's and the device's wrap marks. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Event suppression flags of a packed virtqueue (2.8.10). */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** only with EVENT_IDX: notify at the descriptor off_wrap names */
export const RING_EVENT_FLAGS_DESC = 2;

/** The largest queue size a split virtqueue may have (2.7: "The maximum Queue Size value is 32768."). */
export const MAX_QUEUE_SIZE = 32768;
/** A packed virtqueue may have any size up to 2^15 (2.8: "Packed virtqueues support up to 2^15 entries each."), not only powers of 2. */
export const MAX_PACKED_QUEUE_SIZE = 32768;

/** Whether n is a power of 2, up to 2^30: the sizes of rings and pools, whose indices are masked. */
export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 2 ** 30 && (n & (n - 1)) === 0;
}

/** Whether n may be a split virtqueue's size: 2.7, "Queue Size value is always a power of 2.", at most MAX_QUEUE_SIZE. */
export function isSplitQueueSize(n: number): boolean {
  return n <= MAX_QUEUE_SIZE && isPowerOfTwo(n);
}

/**
 * struct virtio_net_hdr with VERSION_1: flags, gso_type, hdr_len, gso_size, csum_start,
 * csum_offset, num_buffers: 12 bytes (5.1.6 lists num_buffers whatever the features; 5.1.6.1:
 * "The legacy driver only presented num_buffers in the struct virtio_net_hdr when
 * VIRTIO_NET_F_MRG_RXBUF was negotiated").
 */
export const NET_HDR_LEN = 12;
export const NET_HDR_NUM_BUFFERS_OFFSET = 10;

/** virtio_net_hdr.flags (5.1.6): the checksum from csum_start is left to do (csum_offset: where it goes) */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** virtio_net_hdr.gso_type: no segmentation offload, TCP over IPv4 or IPv6 to be cut at gso_size; the ECN bit: CWR may be set (on the first segment only) */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;
