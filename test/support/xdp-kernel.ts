// The kernel's side of an AF_XDP socket, played for tests and benchmarks of the PMD's side
// (src/dataplane/xdp-rings.ts): the UMEM and the four rings in memfds, laid out as Linux
// 6.18 lays them out (XDP_MMAP_OFFSETS: producer 0, consumer 128, flags 196, descriptors
// 320), the fill ring primed with every receive chunk as the supervisor primes it.
import * as sys from '../../src/sys/libc.ts';
import type { XdpLayout, XdpRingOffsets } from '../../src/sys/xdp.ts';
import type { XdpMappings } from '../../src/dataplane/xdp-rings.ts';

export const RING: XdpRingOffsets = { producer: 0, consumer: 128, flags: 196, desc: 320 };
export const HEADROOM = 256;

interface Region {
  addr: bigint;
  u8: Uint8Array;
  u32: Uint32Array;
}

export interface PlayedKernel {
  layout: XdpLayout;
  umem: Region;
  rx: Region;
  tx: Region;
  fill: Region;
  completion: Region;
  maps: XdpMappings;
  /** posts a descriptor on the rx ring: address (low and high word) and length */
  post(addr: number, len: number, high?: number): void;
  /**
   * Takes a chunk from the fill ring, writes a frame of `len` bytes into it (byte k = seed +
   * k; none with seed null: whatever the chunk holds), posts it; returns the chunk.
   */
  receiveInto(len: number, seed: number | null): number;
  /** takes every descriptor of the tx ring, as sent, and completes each (its address on the completion ring) */
  sendAll(): number;
  close(): void;
}

function region(bytes: number): Region {
  const fd = sys.memfdCreate('xdp-kernel');
  try {
    sys.ftruncate(fd, bytes);
    const addr = sys.mmapShared(fd, bytes);
    const buffer = sys.view(addr, bytes);
    return { addr, u8: new Uint8Array(buffer), u32: new Uint32Array(buffer) };
  } finally {
    sys.closeAll([fd]);
  }
}

/** A kernel with `rxSize` receive chunks (and rx, fill entries) and `txSize` transmit slots, 2 KiB chunks. */
export function playedKernel(rxSize: number, txSize: number): PlayedKernel {
  const chunkBytes = 2048;
  const layout: XdpLayout = { chunkBytes, rxFrames: rxSize, rxSize, txSize, umemBytes: (rxSize + txSize) * chunkBytes, rx: RING, tx: RING, fill: RING, completion: RING };
  const ringBytes = (entries: number) => Math.ceil((RING.desc + entries * 16) / 4096) * 4096;
  const umem = region(layout.umemBytes);
  const rx = region(ringBytes(rxSize));
  const tx = region(ringBytes(txSize));
  const fill = region(ringBytes(rxSize));
  const completion = region(ringBytes(txSize));
  for (let i = 0; i < rxSize; i++) fill.u32[RING.desc / 4 + 2 * i] = i * chunkBytes;
  fill.u32[0] = rxSize;
  const post = (addr: number, len: number, high = 0) => {
    const slot = rx.u32[0] & (rxSize - 1);
    rx.u32.set([addr, high, len, 0], RING.desc / 4 + slot * 4);
    rx.u32[0]++;
  };
  return {
    layout,
    umem,
    rx,
    tx,
    fill,
    completion,
    maps: { umem: umem.addr, rx: rx.addr, tx: tx.addr, fill: fill.addr, completion: completion.addr },
    post,
    receiveInto(len, seed) {
      const cons = fill.u32[RING.consumer / 4];
      const chunk = fill.u32[RING.desc / 4 + 2 * (cons & (rxSize - 1))];
      fill.u32[RING.consumer / 4] = cons + 1;
      if (seed !== null) for (let k = 0; k < len; k++) umem.u8[chunk + HEADROOM + k] = (seed + k) & 0xff;
      post(chunk + HEADROOM, len);
      return chunk;
    },
    sendAll() {
      let cons = tx.u32[RING.consumer / 4];
      const prod = tx.u32[0];
      let done = completion.u32[0];
      const n = (prod - cons) >>> 0;
      for (; cons !== prod; cons = (cons + 1) >>> 0) {
        completion.u32[RING.desc / 4 + 2 * (done & (txSize - 1))] = tx.u32[RING.desc / 4 + 4 * (cons & (txSize - 1))];
        done = (done + 1) >>> 0;
      }
      tx.u32[RING.consumer / 4] = cons;
      completion.u32[0] = done;
      return n;
    },
    close() {
      for (const r of [umem, rx, tx, fill, completion]) sys.munmap(r.addr, r.u8.length);
    },
  };
}
