// Frames between a TAP interface and the packet buffers: one read or write system call
// per frame, straight into or out of the buffer (no copy of our own). A TAP port is the
// host's network stack on the other side: a few hundred thousand frames a second, not a
// guest's rates. Every failure is counted, never thrown: the data path calls these.
import { frameIovec, readFrame, writeFrame } from '../sys/libc.ts';
import { countDrops, DROP, QUEUE_RX_BYTES, QUEUE_RX_PACKETS, QUEUE_TX_BYTES, QUEUE_TX_PACKETS, RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS } from './counters.ts';
import { DATA_ROOM, type PacketPool } from './packet-pool.ts';
import type { Uplink } from './port-runtime.ts';

const ETHER_HDR_LEN = 14;
/**
 * The frame's address and length go into the iovec of readFrame() and writeFrame() as
 * words, here, where the address is a double in a register: given to a call as a number
 * past 2^31, it would be a heap number a frame. (Its length words 2 and 3: 3 stays 0.)
 */
const iovec = frameIovec;

/** A TAP interface (one queue of it, if it has several) as the PMD that polls it sees it. */
export class TapInterface implements Uplink {
  readonly fd: number;
  private readonly counters: Float64Array;
  /** where the port's counters start, and this queue's */
  private readonly counterBase: number;
  private readonly queueCounterBase: number;
  /** longest frame the port takes or delivers */
  private readonly maxFrame: number;

  constructor(fd: number, counters: Float64Array, counterBase: number, queueCounterBase: number, maxFrame: number) {
    this.fd = fd;
    this.counters = counters;
    this.counterBase = counterBase;
    this.queueCounterBase = queueCounterBase;
    // One byte is read past the longest frame (see receive): it must still be the buffer's.
    this.maxFrame = maxFrame < DATA_ROOM - 1 ? maxFrame : DATA_ROOM - 1;
  }

  /**
   * Reads up to `max` frames the kernel sent out of the interface into packet buffers,
   * appending their handles from `start`. Returns how many were taken.
   */
  receive(pool: PacketPool, handles: Uint32Array, start: number, max: number): number {
    const counters = this.counters;
    const base = this.counterBase;
    const room = this.maxFrame;
    let taken = 0;
    let bytes = 0;
    for (let i = 0; i < max; i++) {
      // No buffer: whatever waits stays in the interface's queue for the next round (the
      // kernel counts its own overflow). Not a drop here: there may be nothing to read.
      const handle = pool.alloc();
      if (handle < 0) break;
      // One more byte than a frame may have: a longer one shows as too long, not cut short.
      const at = pool.address + pool.frameOffset(handle);
      iovec[0] = at >>> 0;
      iovec[1] = (at / 4294967296) >>> 0;
      iovec[2] = room + 1;
      const len = readFrame(this.fd);
      if (len < 0) {
        pool.free(handle);
        break;
      }
      if (len < ETHER_HDR_LEN || len > room) {
        countDrops(counters, base, len > room ? DROP.frame_too_long : DROP.frame_too_short);
        pool.free(handle);
        continue;
      }
      pool.length[handle] = len;
      handles[start + taken++] = handle;
      bytes += len;
    }
    counters[base + RX_PACKETS] += taken;
    counters[base + RX_BYTES] += bytes;
    counters[this.queueCounterBase + QUEUE_RX_PACKETS] += taken;
    counters[this.queueCounterBase + QUEUE_RX_BYTES] += bytes;
    return taken;
  }

  /** Writes `count` frames into the interface (the kernel receives them); the buffers stay the caller's. */
  transmit(pool: PacketPool, handles: Uint32Array, count: number): void {
    const counters = this.counters;
    const base = this.counterBase;
    let sent = 0;
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const h = handles[i];
      const len = pool.length[h];
      const at = pool.address + pool.frameOffset(h);
      iovec[0] = at >>> 0;
      iovec[1] = (at / 4294967296) >>> 0;
      iovec[2] = len;
      if (writeFrame(this.fd) === len) {
        sent++;
        bytes += len;
      } else {
        countDrops(counters, base, DROP.interface_refused);
      }
    }
    counters[base + TX_PACKETS] += sent;
    counters[base + TX_BYTES] += bytes;
    counters[this.queueCounterBase + QUEUE_TX_PACKETS] += sent;
    counters[this.queueCounterBase + QUEUE_TX_BYTES] += bytes;
  }
}
