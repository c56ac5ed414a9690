// The inflight record of a split queue (vhost-user "Inflight I/O tracking", protocol
// feature INFLIGHT_SHMFD): a buffer the frontend keeps across backend restarts, in which
// the device marks the chains it took and has not yet returned, so that a new backend
// process (vrouter restarted whole) resumes without losing or repeating any.
//
// Layout of one queue's area (little-endian), as the specification gives it:
//   0  u64 features (unused)   8  u16 version (1)   10 u16 desc_num
//   12 u16 last_batch_head     14 u16 used_idx
//   16 + 16 i: descriptor i: u8 inflight, 5 padding, u16 next, u64 counter
// The frontend holds the file and may write anything in it: every read here is bounded.

export const INFLIGHT_VERSION = 1;
export const INFLIGHT_HEADER_BYTES = 16;
export const INFLIGHT_DESC_BYTES = 16;
/** each queue's area starts on this boundary */
const INFLIGHT_ALIGN = 64;

export const OFF_VERSION = 8;
export const OFF_DESC_NUM = 10;
export const OFF_LAST_BATCH_HEAD = 12;
export const OFF_USED_IDX = 14;
/** within a descriptor's entry */
export const DESC_INFLIGHT = 0;
export const DESC_NEXT = 6;
export const DESC_COUNTER = 8;

/** Where descriptor `head`'s entry starts in a queue's area. */
export const inflightEntry = (head: number): number => INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * head;

/** Bytes of one queue's area for queues of up to queueSize descriptors. */
export function inflightQueueBytes(queueSize: number): number {
  const bytes = INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * queueSize;
  return Math.ceil(bytes / INFLIGHT_ALIGN) * INFLIGHT_ALIGN;
}

/** What a queue's record held when the queue started. */
export interface InflightState {
  /** chains taken and not returned by the previous owner, oldest first */
  heads: number[];
  /** the counter the next chain taken gets: above every counter in the record */
  nextCounter: number;
  /** the record was blank, or for another queue size, and was started afresh */
  fresh: boolean;
}

/**
 * Reads (and repairs) the record of a queue of `size` descriptors whose used ring says
 * `ringUsedIdx`. A record not of version 1 and this size is started afresh. Otherwise, as
 * the specification says: if the record's used_idx lags the ring's, the previous owner
 * stopped between publishing a batch and clearing its marks, so the last batch (the list
 * from last_batch_head) is unmarked; what stays marked was taken and never returned.
 */
export function readInflight(area: Uint8Array, size: number, ringUsedIdx: number): InflightState {
  const dv = new DataView(area.buffer, area.byteOffset, area.byteLength);
  if (dv.getUint16(OFF_VERSION, true) !== INFLIGHT_VERSION || dv.getUint16(OFF_DESC_NUM, true) !== size) {
    area.fill(0, 0, INFLIGHT_HEADER_BYTES + INFLIGHT_DESC_BYTES * size);
    dv.setUint16(OFF_VERSION, INFLIGHT_VERSION, true);
    dv.setUint16(OFF_DESC_NUM, size, true);
    dv.setUint16(OFF_USED_IDX, ringUsedIdx, true);
    return { heads: [], nextCounter: 1, fresh: true };
  }
  const recordUsed = dv.getUint16(OFF_USED_IDX, true);
  if (recordUsed !== ringUsedIdx) {
    const batch = Math.min(size, (ringUsedIdx - recordUsed) & 0xffff);
    let head = dv.getUint16(OFF_LAST_BATCH_HEAD, true);
    for (let i = 0; i < batch && head < size; i++) {
      area[inflightEntry(head) + DESC_INFLIGHT] = 0;
      head = dv.getUint16(inflightEntry(head) + DESC_NEXT, true);
    }
    dv.setUint16(OFF_USED_IDX, ringUsedIdx, true);
  }
  const marked: { head: number; counter: number }[] = [];
  let highest = 0;
  for (let head = 0; head < size; head++) {
    const counter = dv.getUint32(inflightEntry(head) + DESC_COUNTER, true) + dv.getUint32(inflightEntry(head) + DESC_COUNTER + 4, true) * 2 ** 32;
    if (counter > highest) highest = counter;
    if (area[inflightEntry(head) + DESC_INFLIGHT] !== 0) marked.push({ head, counter });
  }
  marked.sort((a, b) => a.counter - b.counter);
  // A counter near 2^53 cannot be counted past: start again, the marked ones first.
  const nextCounter = highest < 2 ** 52 ? highest + 1 : marked.length + 1;
  if (highest >= 2 ** 52) marked.forEach((m, i) => writeCounter(dv, inflightEntry(m.head), i + 1));
  return { heads: marked.map((m) => m.head), nextCounter, fresh: false };
}

function writeCounter(dv: DataView, at: number, counter: number): void {
  dv.setUint32(at + DESC_COUNTER, counter % 2 ** 32, true);
  dv.setUint32(at + DESC_COUNTER + 4, Math.floor(counter / 2 ** 32), true);
}
