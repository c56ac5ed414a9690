// A lock-free single-producer single-consumer ring of u32 handles in a shared buffer:
// how one PMD hands packet buffers to another. Only the two indices are atomic, read and
// published once per burst; the slots are plain memory ordered by those atomics.
import { isPowerOfTwo } from '../virtio/constants.ts';

/** Index words sit on their own 64-byte cache lines: producer and consumer never share one. */
const HEAD = 0; // written by the producer: slots [tail, head) are full
const TAIL = 16; // written by the consumer
const SLOTS = 32;

export function spscRingBytes(capacity: number): number {
  return 4 * (SLOTS + capacity);
}

export class SpscRing {
  readonly capacity: number;
  private readonly mask: number;
  private readonly words: Int32Array;
  private readonly slots: Uint32Array;
  /** this side's own index, kept locally: only the other side's is loaded atomically */
  private head = 0;
  private tail = 0;

  /** Both ends attach to the same buffer (made with spscRingBytes), one end per thread. */
  constructor(buffer: ArrayBufferLike, capacity: number) {
    if (capacity < 2 || !isPowerOfTwo(capacity)) throw new RangeError(`ring capacity ${capacity} is not a power of 2`);
    if (buffer.byteLength < spscRingBytes(capacity)) throw new RangeError('ring buffer too small');
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.words = new Int32Array(buffer, 0, SLOTS);
    this.slots = new Uint32Array(buffer, 4 * SLOTS, capacity);
    this.head = Atomics.load(this.words, HEAD);
    this.tail = Atomics.load(this.words, TAIL);
  }

  /** Producer: copies up to n handles from src; returns how many fit (never blocks). */
  enqueueBurst(src: Uint32Array, n: number): number {
    // The acquire load of tail makes the consumer's reads of those slots happen before
    // our overwriting them.
    const tail = Atomics.load(this.words, TAIL);
    const free = this.capacity - ((this.head - tail) | 0);
    const count = n < free ? n : free;
    const slots = this.slots;
    const mask = this.mask;
    let head = this.head;
    for (let i = 0; i < count; i++) {
      slots[head & mask] = src[i];
      head = (head + 1) | 0;
    }
    if (count > 0) {
      // Release: the slot writes above are visible before the consumer sees the new head.
      Atomics.store(this.words, HEAD, head);
      this.head = head;
    }
    return count;
  }

  /** Consumer: moves up to max handles into dst from index at; returns how many. */
  dequeueBurst(dst: Uint32Array, max: number, at = 0): number {
    // Acquire: the slots up to head were written before head was published.
    const head = Atomics.load(this.words, HEAD);
    const used = (head - this.tail) | 0;
    if (used === 0) return 0;
    const count = used < max ? used : max;
    const slots = this.slots;
    const mask = this.mask;
    let tail = this.tail;
    for (let i = 0; i < count; i++) {
      dst[at + i] = slots[tail & mask];
      tail = (tail + 1) | 0;
    }
    // Release: our reads of the slots are done before the producer may reuse them.
    Atomics.store(this.words, TAIL, tail);
    this.tail = tail;
    return count;
  }

  /** Entries waiting (either side; a snapshot). */
  size(): number {
    return (Atomics.load(this.words, HEAD) - Atomics.load(this.words, TAIL)) | 0;
  }
}
