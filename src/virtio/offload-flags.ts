// What a guest's connection negotiated of the virtio-net offloads (VIRTIO v1.2, 5.1.3:
// CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, HOST_ECN, GUEST_ECN), as one word the data
// path tests: FROM_GUEST, what the guest may send; TO_GUEST, what it takes.
export const OFFLOAD_CSUM_FROM_GUEST = 1;
export const OFFLOAD_CSUM_TO_GUEST = 2;
export const OFFLOAD_TSO4_FROM_GUEST = 4;
export const OFFLOAD_TSO6_FROM_GUEST = 8;
export const OFFLOAD_ECN_FROM_GUEST = 16;
export const OFFLOAD_TSO4_TO_GUEST = 32;
export const OFFLOAD_TSO6_TO_GUEST = 64;
export const OFFLOAD_ECN_TO_GUEST = 128;
export const OFFLOAD_TSO_FROM_GUEST = OFFLOAD_TSO4_FROM_GUEST | OFFLOAD_TSO6_FROM_GUEST;
