// Shared memory that outlives the data-plane process: one memfd, the arena, made and owned
// by the supervisor and mapped by every process that needs it (the data plane maps it
// from an fd passed over a socket). Every table, counter, ring and control word the PMDs
// share is a region of it: a data plane that dies loses none of them, and the next one maps
// the same arena and finds them as they were. A region crosses a thread or process
// boundary as a SharedRef, its offset, and each side views it at its own mapping:
// postMessage would copy an ArrayBuffer over mapped memory, silently.
//
// The arena is sparse: pages cost memory once written, and a freed region's pages are
// given back (a hole reads as zeros, so a late reader sees zeros, never a fault).
import { ftruncate, memfdCreate, mmapShared, punchHole, view } from './libc.ts';

/** A region of the arena, as it travels: its offset and length. */
export interface SharedRef {
  $shared: number;
  bytes: number;
}

/** Virtual size of the arena: address space only, until pages are written. */
export const ARENA_BYTES = 2 ** 36;
const PAGE = 4096;

interface Mapping {
  fd: number;
  base: bigint;
  size: number;
}

/** The arena as this thread sees it (module state is per thread). */
let arena: Mapping | null = null;
/** true in the thread that allocates (the supervisor's main thread) */
let owner = false;
const offsetOf = new WeakMap<ArrayBufferLike, number>();
/** one view object per region, so that identity (WeakMap keys) survives a round trip */
const views = new Map<number, WeakRef<ArrayBuffer>>();
/** owner only: bytes of each allocated region, and the free ranges by offset */
const allocated = new Map<number, number>();
let free: { offset: number; bytes: number }[] = [];
/** A region no one in this process holds any more is freed (the owner keeps what the data plane uses). */
const collected = new FinalizationRegistry<number>((offset) => freeRegion(offset));

/** Makes the arena (supervisor); returns its fd, to pass to the data plane. */
export function createArena(bytes = ARENA_BYTES): number {
  if (arena !== null) return arena.fd;
  const fd = memfdCreate('vrouter-state');
  ftruncate(fd, bytes);
  arena = { fd, base: mmapShared(fd, bytes, true), size: bytes };
  owner = true;
  free = [{ offset: 0, bytes }];
  return fd;
}

/** Maps an arena received as an fd (the data plane's main thread); the fd is kept open. */
export function attachArena(fd: number, bytes: number): void {
  arena = { fd, base: mmapShared(fd, bytes, true), size: bytes };
}

/** Where this process mapped the arena, for its other threads (useArena). */
export function arenaAddress(): { base: string; size: number } | null {
  return arena === null ? null : { base: arena.base.toString(), size: arena.size };
}

/** A thread of a process that mapped the arena: views regions at that mapping. */
export function useArena(at: { base: string; size: number } | null): void {
  if (at !== null && arena === null) arena = { fd: -1, base: BigInt(at.base), size: at.size };
}

/** Bytes a region of `bytes` takes: whole pages, at least one. */
function pagesFor(bytes: number): number {
  return Math.max(PAGE, Math.ceil(bytes / PAGE) * PAGE);
}

/**
 * A range of the arena lent to a job thread (leaseShared): the regions the job makes are
 * carved from it in turn, so that what it builds (a route table's 80 MiB) is written once,
 * where the data plane reads it, and only the pages it writes cost memory. Copied in after
 * the job instead, it took 200 ms of the supervisor's main thread per 64 MiB (a fault per
 * page written), beside as much in the job.
 */
export interface ArenaLease {
  offset: number;
  bytes: number;
}

/** Virtual bytes of a job's lease: address space only (the arena has 64 GiB of it). */
export const LEASE_BYTES = 2 ** 32;

/** The lease this job thread allocates from (useLease), and the first byte it has not used. */
let lease: { offset: number; end: number; next: number } | null = null;

/**
 * A zero-filled buffer the PMDs may share: a region of the arena in the thread that owns
 * it or in a job thread while it holds a lease with room; a SharedArrayBuffer anywhere
 * else (tests; a job past its lease: what a job returns is copied into the arena by
 * adoptShared).
 */
export function sharedBuffer(bytes: number): ArrayBuffer | SharedArrayBuffer {
  const length = pagesFor(bytes);
  if (!owner && arena !== null && lease !== null && lease.next + length <= lease.end) {
    const offset = lease.next;
    lease.next += length;
    return viewAt(offset, bytes);
  }
  if (!owner || arena === null) return new SharedArrayBuffer(bytes);
  const at = free.findIndex((r) => r.bytes >= length);
  if (at < 0) throw new RangeError(`shared memory exhausted: no ${length} bytes left of ${arena.size}`);
  const offset = takeFree(at, length);
  allocated.set(offset, length);
  const buffer = viewAt(offset, bytes);
  collected.register(buffer, offset, buffer);
  return buffer;
}

/** Takes the first `length` bytes of free range `at` (it holds that many); returns their offset. */
function takeFree(at: number, length: number): number {
  const range = free[at];
  if (range.bytes === length) free.splice(at, 1);
  else free[at] = { offset: range.offset + length, bytes: range.bytes - length };
  return range.offset;
}

function viewAt(offset: number, bytes: number): ArrayBuffer {
  const known = views.get(offset)?.deref();
  if (known !== undefined && known.byteLength === bytes) return known;
  const buffer = view(arena!.base + BigInt(offset), bytes);
  offsetOf.set(buffer, offset);
  views.set(offset, new WeakRef(buffer));
  return buffer;
}

/** Whether v can be shared with the PMDs: a region of the arena or a SharedArrayBuffer. */
export function isSharedBuffer(v: unknown): v is ArrayBufferLike {
  return v instanceof SharedArrayBuffer || (v instanceof ArrayBuffer && offsetOf.has(v));
}

/** Frees a region now (owner): its pages go back to the system. */
export function releaseShared(buffer: ArrayBufferLike): void {
  const offset = offsetOf.get(buffer);
  if (offset === undefined || !owner) return;
  collected.unregister(buffer);
  // A stale reference can no longer be sent anywhere as this region (which a new one may take).
  offsetOf.delete(buffer);
  freeRegion(offset);
}

function freeRegion(offset: number): void {
  const length = allocated.get(offset);
  if (length === undefined || arena === null) return;
  allocated.delete(offset);
  freeRange(offset, length, true);
}

/** Gives a range back to the free list; `written`: its pages may hold data, and are dropped. */
function freeRange(offset: number, length: number, written: boolean): void {
  if (length <= 0 || arena === null) return;
  views.delete(offset);
  if (written) punchHole(arena.fd, offset, length);
  free.push({ offset, bytes: length });
  free.sort((a, b) => a.offset - b.offset);
  const merged: typeof free = [];
  for (const r of free) {
    const last = merged.at(-1);
    if (last !== undefined && last.offset + last.bytes === r.offset) last.bytes += r.bytes;
    else merged.push({ ...r });
  }
  free = merged;
}

/**
 * Lends a job thread a range of the arena (owner): taken from the free list as a region
 * would be, and not a region until endLease says which of it the job's result holds.
 */
export function leaseShared(bytes = LEASE_BYTES): ArenaLease | null {
  if (!owner || arena === null || free.length === 0) return null;
  const wanted = pagesFor(bytes);
  let at = free.findIndex((r) => r.bytes >= wanted);
  // Short of that much, half the largest range left (the rest for the owner meanwhile):
  // past it, the job's regions are SharedArrayBuffers, copied in after.
  if (at < 0) at = free.reduce((best, r, k) => (r.bytes > free[best].bytes ? k : best), 0);
  const length = free[at].bytes >= wanted ? wanted : Math.floor(free[at].bytes / 2 / PAGE) * PAGE;
  if (length === 0) return null;
  return { offset: takeFree(at, length), bytes: length };
}

/** A job thread allocates from `l` from now on (null: no longer). */
export function useLease(l: ArenaLease | null): void {
  lease = l === null ? null : { offset: l.offset, end: l.offset + l.bytes, next: l.offset };
  // The views this thread made of regions since collected: a job thread never frees them.
  if (l === null) for (const [offset, ref] of views) if (ref.deref() === undefined) views.delete(offset);
}

/** Bytes of its lease this job thread has used so far (from its start). */
export function leaseUsed(): number {
  return lease === null ? 0 : lease.next - lease.offset;
}

/**
 * The job that held `l` has ended (owner): the regions of it that `result` holds (as
 * decodeShared views them) become the owner's like any other, freed once no one holds
 * them; the rest goes back to the free list, its first `used` bytes (the job wrote there:
 * regions it dropped) emptied. `used` null: not known (the job's thread failed), all of it.
 */
export function endLease(l: ArenaLease, result: unknown, used: number | null): void {
  const end = l.offset + l.bytes;
  const written = l.offset + (used === null ? l.bytes : Math.min(Math.max(used, 0), l.bytes));
  const kept: { offset: number; length: number }[] = [];
  mapDeep(result, (v) => {
    if (!(v instanceof ArrayBuffer)) return v;
    const offset = offsetOf.get(v);
    if (offset === undefined || offset < l.offset || offset >= end || allocated.has(offset)) return v;
    const length = pagesFor(v.byteLength);
    allocated.set(offset, length);
    collected.register(v, offset, v);
    kept.push({ offset, length });
    return v;
  });
  kept.sort((a, b) => a.offset - b.offset);
  let at = l.offset;
  for (const k of [...kept, { offset: end, length: 0 }]) {
    if (k.offset > at) {
      // Written below `written`, never touched above it.
      const upTo = Math.min(k.offset, Math.max(written, at));
      freeRange(at, upTo - at, true);
      freeRange(upTo, k.offset - upTo, false);
    }
    at = Math.max(at, k.offset + k.length);
  }
}

/** Bytes of the arena in regions (owner): what is allocated and not yet freed. */
export function sharedBytesInUse(): number {
  let sum = 0;
  for (const bytes of allocated.values()) sum += bytes;
  return sum;
}

function isRef(v: unknown): v is SharedRef {
  return typeof v === 'object' && v !== null && typeof (v as SharedRef).$shared === 'number' && typeof (v as SharedRef).bytes === 'number';
}

/** Walks plain objects and arrays (not typed arrays, maps or class instances), mapping leaves. */
function mapDeep(value: unknown, leaf: (v: unknown) => unknown): unknown {
  const mapped = leaf(value);
  if (mapped !== value) return mapped;
  if (Array.isArray(value)) return value.map((v) => mapDeep(v, leaf));
  if (typeof value === 'object' && value !== null && !ArrayBuffer.isView(value)) {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) return value;
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapDeep(v, leaf)]));
  }
  return value;
}

/** One region sent as a SharedRef, viewed at this thread's mapping of the arena. */
export function regionOf(ref: SharedRef): ArrayBuffer {
  return decodeShared(ref) as unknown as ArrayBuffer;
}

/** One region as a SharedRef, to post to another thread or process. */
export function refOf(region: ArrayBufferLike): SharedRef {
  return encodeShared(region, true) as unknown as SharedRef;
}

/**
 * Every arena region in `value` as a SharedRef, to post to another thread or process.
 * `acrossProcesses`: a buffer that is not in the arena cannot be shared there, and throws.
 */
export function encodeShared<T>(value: T, acrossProcesses = false): T {
  return mapDeep(value, (v) => {
    if (!(v instanceof ArrayBuffer || v instanceof SharedArrayBuffer)) return v;
    const offset = offsetOf.get(v);
    if (offset !== undefined) return { $shared: offset, bytes: v.byteLength } satisfies SharedRef;
    if (acrossProcesses) throw new TypeError(`a buffer of ${v.byteLength} bytes is not in shared memory (allocate it with sharedBuffer())`);
    return v;
  }) as T;
}

/** Every SharedRef in `value` as a view of this thread's mapping of the arena. */
export function decodeShared<T>(value: T): T {
  return mapDeep(value, (v) => {
    if (!isRef(v)) return v;
    if (arena === null) throw new Error('a shared region arrived before the arena was mapped');
    if (v.$shared < 0 || v.$shared + v.bytes > arena.size) throw new RangeError(`shared region [${v.$shared}, +${v.bytes}) outside the arena`);
    return viewAt(v.$shared, v.bytes);
  }) as T;
}

/**
 * Every SharedArrayBuffer in `value` copied into a region of the arena (owner), so that
 * the data plane can map it: what a job thread or a plugin made on its own.
 */
export function adoptShared<T>(value: T): T {
  if (!owner) return value;
  return mapDeep(value, (v) => {
    if (!(v instanceof SharedArrayBuffer)) return v;
    const region = sharedBuffer(v.byteLength);
    new Uint8Array(region).set(new Uint8Array(v));
    return region;
  }) as T;
}
