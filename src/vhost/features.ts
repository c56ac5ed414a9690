// The features vrouter offers a frontend, the virtio-net device's and vhost-user's
// protocol features, and the data path's view of the ones a connection negotiated.
import {
  bit,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../virtio/constants.ts';
import {
  OFFLOAD_CSUM_FROM_GUEST,
  OFFLOAD_CSUM_TO_GUEST,
  OFFLOAD_ECN_FROM_GUEST,
  OFFLOAD_ECN_TO_GUEST,
  OFFLOAD_TSO4_FROM_GUEST,
  OFFLOAD_TSO4_TO_GUEST,
  OFFLOAD_TSO6_FROM_GUEST,
  OFFLOAD_TSO6_TO_GUEST,
} from '../virtio/offload-flags.ts';
import { ProtocolFeature } from './protocol.ts';

/** The device features a port offers: its queues and its offloads (ports[].offloads) decide some. */
export function offeredFeatures(port: { queues: number; offloads: boolean }): bigint {
  let f = bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | bit(VIRTIO_NET_F_MRG_RXBUF);
  f |= bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_MTU);
  // vrouter returns every chain in the order it took it, whichever layout: IN_ORDER costs it nothing.
  f |= bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_F_IN_ORDER);
  if (port.queues > 1) f |= bit(VIRTIO_NET_F_MQ);
  if (port.offloads) {
    f |= bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM);
    f |= bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN);
    f |= bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN);
  }
  return f;
}

/**
 * The data path's view of negotiated offloads. Segmentation counts only with the checksum
 * offload it needs (virtio 1.2, 5.1.3.1: HOST_TSO4 requires CSUM, GUEST_TSO4 GUEST_CSUM): a
 * frontend that accepts one without the other gets neither.
 */
export function offloadsOf(features: bigint): number {
  const has = (n: number) => (features & bit(n)) !== 0n;
  let o = 0;
  if (has(VIRTIO_NET_F_CSUM)) {
    o |= OFFLOAD_CSUM_FROM_GUEST;
    if (has(VIRTIO_NET_F_HOST_TSO4)) o |= OFFLOAD_TSO4_FROM_GUEST;
    if (has(VIRTIO_NET_F_HOST_TSO6)) o |= OFFLOAD_TSO6_FROM_GUEST;
    if (has(VIRTIO_NET_F_HOST_ECN) && (has(VIRTIO_NET_F_HOST_TSO4) || has(VIRTIO_NET_F_HOST_TSO6))) o |= OFFLOAD_ECN_FROM_GUEST;
  }
  if (has(VIRTIO_NET_F_GUEST_CSUM)) {
    o |= OFFLOAD_CSUM_TO_GUEST;
    if (has(VIRTIO_NET_F_GUEST_TSO4)) o |= OFFLOAD_TSO4_TO_GUEST;
    if (has(VIRTIO_NET_F_GUEST_TSO6)) o |= OFFLOAD_TSO6_TO_GUEST;
    if (has(VIRTIO_NET_F_GUEST_ECN) && (has(VIRTIO_NET_F_GUEST_TSO4) || has(VIRTIO_NET_F_GUEST_TSO6))) o |= OFFLOAD_ECN_TO_GUEST;
  }
  return o;
}

export const OFFERED_PROTOCOL_FEATURES =
  bit(ProtocolFeature.MQ) | bit(ProtocolFeature.REPLY_ACK) | bit(ProtocolFeature.NET_MTU) | bit(ProtocolFeature.STATUS) | bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) | bit(ProtocolFeature.INFLIGHT_SHMFD);
