// Packet buffers: fixed-size slots in one SharedArrayBuffer, named by u32 handles. Frames
// are copied out of guest memory into these (the copy is the security boundary), and rings
// between actors carry handles, never bytes.

/** Bytes before the frame, kept free for encapsulation. */
export const HEADROOM = 128;
/** Room for the largest frame: MTU 9000 + Ethernet header + one VLAN tag, rounded up. */
export const DATA_ROOM = 9088;
export const BUFFER_STRIDE = HEADROOM + DATA_ROOM;

export class PacketPool {
  readonly capacity: number;
  readonly data: Uint8Array;
  /** the same memory as 32-bit words, for aligned copies */
  readonly words: Uint32Array;
  /** frame length of each buffer, by handle */
  readonly length: Uint32Array;
  private readonly freeStack: Uint32Array;
  private freeCount: number;

  constructor(capacity: number) {
    this.capacity = capacity;
    // SharedArrayBuffer pages are committed on first touch, and the LIFO free stack keeps
    // reusing the same few buffers: resident memory follows the traffic, not the capacity.
    const memory = new SharedArrayBuffer(capacity * BUFFER_STRIDE);
    this.data = new Uint8Array(memory);
    this.words = new Uint32Array(memory);
    this.length = new Uint32Array(capacity);
    this.freeStack = new Uint32Array(capacity);
    for (let i = 0; i < capacity; i++) this.freeStack[i] = capacity - 1 - i;
    this.freeCount = capacity;
  }

  get available(): number {
    return this.freeCount;
  }

  /** A free buffer's handle, or -1 when the pool is empty. */
  alloc(): number {
    if (this.freeCount === 0) return -1;
    return this.freeStack[--this.freeCount];
  }

  free(handle: number): void {
    this.freeStack[this.freeCount++] = handle;
  }

  /** Byte offset of a buffer's frame in `data`. */
  frameOffset(handle: number): number {
    return handle * BUFFER_STRIDE + HEADROOM;
  }
}
