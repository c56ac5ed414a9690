// One copy per frame where a second is not needed. A frame whose pipeline looks at its
// headers alone, on its way to a guest whose RX queue this PMD serves, goes from the
// sending guest's memory straight into the receiving guest's: the packet buffer gets only
// its head, at least HEADER_BYTES (the copy the stages read and rewrite, which the sender
// cannot change under them, and which is what leaves), and the rest, in the chain's last
// descriptor, stays where the sender put it until the burst is delivered. The sender's TX
// chains are returned only then, so the guest cannot reuse them meanwhile. Anything else
// that reads a frame whole (another PMD, a kernel interface, a capture, a checksum
// completed, a stage that changes its length) has its rest copied into the buffer first
// (materialize()); a pipeline with a stage that reads further leaves no rests at all.
import type { GuestMemory } from '../virtio/guest-memory.ts';
import type { PacketPool } from './packet-pool.ts';
import { publishAndCall, type CalledQueue } from './notify.ts';
import { nativeCopy } from './native-copy.ts';

/** The frame bytes copied into the buffer whatever happens: Ethernet, a VLAN tag and more, one cache line. */
export const HEADER_BYTES = 64;
/**
 * The longest head: a frame whose last descriptor starts further in is copied whole. Linux
 * sends a TCP frame (without TSO) as its headers, 66 bytes or more, and the payload in a
 * page of its own.
 */
export const MAX_HEAD_BYTES = 256;
/**
 * Shorter rests are copied: they cost less in the word loop than the native copy they
 * would save (guest-io.ts, NATIVE_COPY_MIN).
 */
export const MIN_REST_BYTES = 256;

export class DeferredPayloads {
  /** per buffer handle: the window of the sender's memory holding the rest of its frame, or -1 */
  readonly window: Int32Array;
  /** per handle: where the rest (the frame from its head's end on) starts in that window */
  readonly offset: Float64Array;
  /** per handle: the bytes of the frame in the buffer, its head */
  readonly head: Uint32Array;
  /** per handle: the frame's length when its rest was left (its rest: length - head bytes) */
  readonly length: Uint32Array;
  /** the handles whose rest is left in the sender's memory, this burst */
  private readonly left: Uint32Array;
  count = 0;
  /** the burst's sender (one queue's burst) and its memory */
  mem: GuestMemory | null = null;
  private sender: CalledQueue | null = null;
  /** the sender's used position before the burst: its chains are published from there */
  private usedFrom = 0;

  constructor(handleCount: number, burst: number) {
    this.window = new Int32Array(handleCount).fill(-1);
    this.offset = new Float64Array(handleCount);
    this.head = new Uint32Array(handleCount);
    this.length = new Uint32Array(handleCount);
    this.left = new Uint32Array(burst);
  }

  /** A burst from `sender` begins: its chains are held until release(). */
  begin(sender: CalledQueue, usedFrom: number): void {
    this.sender = sender;
    this.mem = sender.queue.mem;
    this.usedFrom = usedFrom;
  }

  /**
   * The rest of frame `handle` (length bytes, `head` of them in its buffer) stays at
   * [offset, + length - head) of window w in the sender's memory: a range the caller
   * proved inside it.
   */
  leave(handle: number, w: number, offset: number, head: number, length: number): void {
    this.window[handle] = w;
    this.offset[handle] = offset;
    this.head[handle] = head;
    this.length[handle] = length;
    this.left[this.count++] = handle;
  }

  /** Frame `handle` is dropped before the stages saw it: its buffer may be taken again in this burst. */
  forget(handle: number): void {
    this.window[handle] = -1;
  }

  /**
   * Copies the rest of frame `handle` into its buffer, if it was left in the sender's
   * memory: `mem`, the burst's sender's, before begin() has named it.
   */
  materialize(pool: PacketPool, handle: number, mem: GuestMemory = this.mem!): void {
    const w = this.window[handle];
    if (w < 0) return;
    // Bounds: the source range was proven by leave()'s caller; the destination is
    // [head, length) of the handle's buffer, and length <= the buffer's room (frames are
    // left only up to the port's longest, at most DATA_ROOM).
    const head = this.head[handle];
    const from = this.offset[handle];
    nativeCopy.call(mem.bytes[w], pool.data, pool.frameOffset(handle) + head, from, from + this.length[handle] - head);
    this.window[handle] = -1;
  }

  /** Every frame of the burst whole in its buffer. */
  materializeAll(pool: PacketPool): void {
    for (let i = 0; i < this.count; i++) this.materialize(pool, this.left[i]);
  }

  /** The burst is delivered: the sender's chains go back to it, no rest is left anywhere. */
  release(): void {
    for (let i = 0; i < this.count; i++) this.window[this.left[i]] = -1;
    this.count = 0;
    const sender = this.sender;
    this.sender = null;
    this.mem = null;
    if (sender !== null) publishAndCall(sender, this.usedFrom);
  }
}
