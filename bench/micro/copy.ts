// Micro-benchmark of the ways to copy a frame between guest memory (a memfd mapped into a
// SharedArrayBuffer, as the data plane maps it: src/sys/shared-mapping.ts) and the packet
// buffers (a SharedArrayBuffer), both ways, at 64, 256, 512, 1518 and 9000 bytes: the
// 32-bit word loop, Uint8Array.set() from a subarray made beforehand (no allocation),
// copyWithin (only possible inside one memory), libc memcpy through koffi (its two
// addresses are heap numbers at every call), Node's Buffer.prototype.copy (a memmove in
// C++ given the two views and small-integer offsets), and the 64-bit loop (Float64Array
// elements, both sides 8-byte aligned: frames a DPDK guest sends and posts buffers for, and
// the packet buffers). copyBytes() in src/dataplane/guest-io.ts picks per size and
// alignment from these figures.
import { BUFFER_STRIDE, HEADROOM } from '../../src/dataplane/packet-pool.ts';
import { addressOf, close, memcpyAt, memfdCreate, ftruncate } from '../../src/sys/libc.ts';
import { mapIntoSharedBuffer, releaseSharedMapping, type SharedMapping } from '../../src/sys/shared-mapping.ts';
import { nativeCopy } from '../../src/dataplane/native-copy.ts';

export const COPY_SIZES = [64, 256, 512, 1518, 9000];
const SLOTS = 32; // a burst: the frames sit apart as they do in a PMD
const GUEST_STRIDE = 10240;
const SECONDS = 0.25;

type Direction = 'guest to buffer' | 'buffer to guest';
type Method = 'word loop' | '64-bit loop' | 'set(cached subarray)' | 'copyWithin' | 'memcpy (koffi)' | 'Buffer.copy';

interface Side {
  bytes: Uint8Array;
  words: Uint32Array;
  doubles: Float64Array;
  addr: number;
  off: Int32Array;
  /** the same slots at 8-byte aligned offsets (the 64-bit loop's) */
  off8: Int32Array;
}

let memory: { buffer: Side; guest: Side; fd: number; mapping: SharedMapping } | null = null;

function sides() {
  if (memory) return memory;
  const buffers = new SharedArrayBuffer(SLOTS * BUFFER_STRIDE);
  const guestLength = SLOTS * GUEST_STRIDE;
  const fd = memfdCreate('copy-bench');
  ftruncate(fd, guestLength);
  const mapping = mapIntoSharedBuffer(fd, 0, guestLength, 4096);
  const guestBytes = new Uint8Array(mapping.buffer, mapping.offset, guestLength);
  // Offsets as in the data path: a buffer's frame after its headroom, a guest frame after
  // the 12-byte virtio-net header (both 4-byte aligned).
  const bufOff = new Int32Array(SLOTS).map((_, i) => i * BUFFER_STRIDE + HEADROOM);
  const guestOff = new Int32Array(SLOTS).map((_, i) => i * GUEST_STRIDE + 12);
  const guestOff8 = new Int32Array(SLOTS).map((_, i) => i * GUEST_STRIDE + 128);
  const bufferBytes = new Uint8Array(buffers);
  memory = {
    buffer: { bytes: bufferBytes, words: new Uint32Array(buffers), doubles: new Float64Array(buffers), addr: addressOf(bufferBytes), off: bufOff, off8: bufOff },
    guest: {
      bytes: guestBytes,
      words: new Uint32Array(guestBytes.buffer, mapping.offset, guestLength >>> 2),
      doubles: new Float64Array(guestBytes.buffer, mapping.offset, guestLength >>> 3),
      addr: addressOf(guestBytes),
      off: guestOff,
      off8: guestOff8,
    },
    fd,
    mapping,
  };
  for (let i = 0; i < guestLength; i++) guestBytes[i] = i * 7;
  return memory;
}

/** Frees the mapping (after the last run). */
export function releaseCopyMemory(): void {
  if (!memory) return;
  releaseSharedMapping(memory.mapping);
  close(memory.fd);
  memory = null;
}

function wordLoop(dst: Side, src: Side, len: number, rounds: number): void {
  const dw = dst.words;
  const sw = src.words;
  const words = len >>> 2;
  for (let r = 0; r < rounds; r++) {
    for (let s = 0; s < SLOTS; s++) {
      const d = dst.off[s] >>> 2;
      const o = src.off[s] >>> 2;
      for (let i = 0; i < words; i++) dw[d + i] = sw[o + i];
    }
  }
}

/** wordLoop() over 64-bit elements; apart, as one loop over both kinds of array would time V8's polymorphic access */
function doubleLoop(dst: Side, src: Side, len: number, rounds: number): void {
  const dd = dst.doubles;
  const sd = src.doubles;
  const doubles = len >>> 3;
  for (let r = 0; r < rounds; r++) {
    for (let s = 0; s < SLOTS; s++) {
      const d = dst.off8[s] >>> 3;
      const o = src.off8[s] >>> 3;
      for (let i = 0; i < doubles; i++) dd[d + i] = sd[o + i];
    }
  }
}

function setCached(dst: Side, subs: Uint8Array[], len: number, rounds: number): void {
  const db = dst.bytes;
  for (let r = 0; r < rounds; r++) {
    for (let s = 0; s < SLOTS; s++) db.set(subs[s], dst.off[s]);
  }
}

function copyWithin(one: Side, len: number, rounds: number): void {
  const b = one.bytes;
  for (let r = 0; r < rounds; r++) {
    for (let s = 0; s < SLOTS; s++) {
      const from = one.off[s];
      b.copyWithin(one.off[(s + 1) & (SLOTS - 1)], from, from + len);
    }
  }
}

function bufferCopy(dst: Side, src: Side, len: number, rounds: number): void {
  const db = dst.bytes;
  const sb = src.bytes;
  for (let r = 0; r < rounds; r++) {
    for (let s = 0; s < SLOTS; s++) {
      const from = src.off[s];
      nativeCopy.call(sb, db, dst.off[s], from, from + len);
    }
  }
}

function memcpy(dst: Side, src: Side, len: number, rounds: number): void {
  const da = dst.addr;
  const sa = src.addr;
  for (let r = 0; r < rounds; r++) {
    for (let s = 0; s < SLOTS; s++) memcpyAt(da + dst.off[s], sa + src.off[s], len);
  }
}

function measure(method: Method, direction: Direction, len: number): { opsPerSec: number } {
  const m = sides();
  const src = direction === 'guest to buffer' ? m.guest : m.buffer;
  const dst = direction === 'guest to buffer' ? m.buffer : m.guest;
  const subs = Array.from(src.off, (o) => src.bytes.subarray(o, o + len));
  // copyWithin cannot cross memories: it moves frames between slots of the destination.
  const step = (rounds: number) => {
    if (method === 'word loop') wordLoop(dst, src, len, rounds);
    else if (method === '64-bit loop') doubleLoop(dst, src, len, rounds);
    else if (method === 'set(cached subarray)') setCached(dst, subs, len, rounds);
    else if (method === 'copyWithin') copyWithin(dst, len, rounds);
    else if (method === 'Buffer.copy') bufferCopy(dst, src, len, rounds);
    else memcpy(dst, src, len, rounds);
  };
  const rounds = Math.max(1, Math.floor(20000 / len));
  const warm = performance.now() + 50;
  while (performance.now() < warm) step(rounds);
  let copies = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  while (performance.now() < end) {
    step(rounds);
    copies += rounds * SLOTS;
  }
  return { opsPerSec: copies / ((performance.now() - start) / 1000) };
}

const METHODS: Method[] = ['word loop', '64-bit loop', 'set(cached subarray)', 'copyWithin', 'memcpy (koffi)', 'Buffer.copy'];
const DIRECTIONS: Direction[] = ['guest to buffer', 'buffer to guest'];

export const micro = COPY_SIZES.flatMap((len) =>
  DIRECTIONS.flatMap((direction) =>
    METHODS.map((method) => ({
      name: `copy ${len} B ${direction}, ${method}${method === 'copyWithin' ? ` (inside the ${direction === 'guest to buffer' ? 'buffers' : 'guest memory'})` : ''}`,
      run: async () => measure(method, direction, len),
    })),
  ),
);

if (import.meta.main) {
  const ns = new Map<string, number>();
  for (const m of micro) ns.set(m.name, 1e9 / (await m.run()).opsPerSec);
  releaseCopyMemory();
  console.log(`ns per copy (bursts of ${SLOTS} frames, cache-warm)`);
  console.log(`${'size  direction'.padEnd(24)}${METHODS.map((x) => x.padStart(22)).join('')}`);
  for (const len of COPY_SIZES) {
    for (const d of DIRECTIONS) {
      const cells = METHODS.map((method) => [...ns].find(([k]) => k.startsWith(`copy ${len} B ${d}, ${method}`))![1].toFixed(1).padStart(22));
      console.log(`${`${String(len).padStart(4)}  ${d}`.padEnd(24)}${cells.join('')}`);
    }
  }
}
