// Life locks: robust, process-shared mutexes in shared memory, each held by one thread for
// as long as it lives. However the thread ends (SIGKILL, a crash, a normal exit), the
// kernel lets its lock go as the thread leaves and wakes whoever waits for it (robust
// futexes: glibc lists the robust mutexes a thread holds, and the kernel walks that list
// when the thread exits). That happens as each thread leaves, before the process's memory
// is torn down and long before its parent hears of its end: tearing down a data plane that
// mapped guest memory in 4 KiB pages takes tens of milliseconds on a CPU shared with other
// work, and until it is done no SIGCHLD comes and no socket of the process closes.
import koffi from 'koffi';
import { addressOf, SysError } from './libc.ts';

const libc = koffi.load('libc.so.6');
// Addresses as uintptr_t, plain numbers (as libc.ts does for memcpy).
const c = {
  attrInit: libc.func('int pthread_mutexattr_init(uintptr_t attr)'),
  attrSetPshared: libc.func('int pthread_mutexattr_setpshared(uintptr_t attr, int pshared)'),
  attrSetRobust: libc.func('int pthread_mutexattr_setrobust(uintptr_t attr, int robust)'),
  attrDestroy: libc.func('int pthread_mutexattr_destroy(uintptr_t attr)'),
  init: libc.func('int pthread_mutex_init(uintptr_t mutex, uintptr_t attr)'),
  trylock: libc.func('int pthread_mutex_trylock(uintptr_t mutex)'),
  timedlock: libc.func('int pthread_mutex_timedlock(uintptr_t mutex, uintptr_t abstime)'),
  consistent: libc.func('int pthread_mutex_consistent(uintptr_t mutex)'),
};

const PTHREAD_PROCESS_SHARED = 1;
const PTHREAD_MUTEX_ROBUST = 1;
const { EBUSY, EOWNERDEAD, ETIMEDOUT } = koffi.os.errno as Record<string, number>;

/** Bytes of one lock: a pthread_mutex_t is 40 (x86-64) or 48 (arm64) bytes with glibc. */
export const LIFE_LOCK_BYTES = 64;
/** Locks in a block: one a process's main thread holds, the others its PMD threads claim. */
export const LIFE_LOCKS = 64;
export const LIFE_BLOCK_BYTES = LIFE_LOCK_BYTES * LIFE_LOCKS;

/** The address of lock `index` of a block (shared memory, mapped: its address never moves). */
function lockAt(block: ArrayBufferLike, index: number): number {
  if (!(index >= 0 && index < LIFE_LOCKS) || block.byteLength < LIFE_BLOCK_BYTES) throw new RangeError(`life lock ${index} of a block of ${block.byteLength} bytes`);
  return addressOf(new Uint8Array(block, index * LIFE_LOCK_BYTES, LIFE_LOCK_BYTES));
}

/** pthread calls return the error number itself (not -1 and errno). */
function check(call: string, err: number): void {
  if (err !== 0) throw new SysError(call, err);
}

/** Makes every lock of a block (memory no thread uses yet) robust and process-shared, unlocked. */
export function initLifeLocks(block: ArrayBufferLike): void {
  const attr = new SharedArrayBuffer(64);
  const attrAt = addressOf(new Uint8Array(attr));
  check('pthread_mutexattr_init', c.attrInit(attrAt) as number);
  try {
    check('pthread_mutexattr_setpshared', c.attrSetPshared(attrAt, PTHREAD_PROCESS_SHARED) as number);
    check('pthread_mutexattr_setrobust', c.attrSetRobust(attrAt, PTHREAD_MUTEX_ROBUST) as number);
    for (let i = 0; i < LIFE_LOCKS; i++) check('pthread_mutex_init', c.init(lockAt(block, i), attrAt) as number);
  } finally {
    c.attrDestroy(attrAt);
  }
}

/** Takes a lock whose last holder may have died: it is made consistent, and this thread's. */
function taken(mutex: number, err: number): boolean {
  if (err === EOWNERDEAD) {
    check('pthread_mutex_consistent', c.consistent(mutex) as number);
    return true;
  }
  return err === 0;
}

/**
 * The calling thread takes the first free lock of [from, to) and holds it until it ends
 * (never unlocked: its end lets it go). Returns the lock's index, or -1 when all are held.
 */
export function holdLifeLock(block: ArrayBufferLike, from: number, to: number): number {
  for (let i = from; i < to; i++) {
    const mutex = lockAt(block, i);
    const err = c.trylock(mutex) as number;
    if (taken(mutex, err)) return i;
    if (err !== EBUSY) check('pthread_mutex_trylock', err);
  }
  return -1;
}

/**
 * awaitLifeLock's timespec, one per thread (each has its own module instance): a watcher
 * waits in slices all its life, and a buffer made per slice cost about 1 ms of CPU each
 * (mappings and the collections they bring).
 */
const abstime = new BigInt64Array(new SharedArrayBuffer(16));
const abstimeAt = addressOf(abstime);

/**
 * Waits up to `ms` for lock `index`: true once this thread holds it (its holder has ended,
 * or there was none). The wait is bounded so that the waiting thread can be stopped.
 */
export function awaitLifeLock(block: ArrayBufferLike, index: number, ms: number): boolean {
  const mutex = lockAt(block, index);
  // An absolute CLOCK_REALTIME time, as pthread_mutex_timedlock takes it.
  const until = Date.now() + ms;
  abstime[0] = BigInt(Math.floor(until / 1000));
  abstime[1] = BigInt((until % 1000) * 1_000_000);
  const err = c.timedlock(mutex, abstimeAt) as number;
  if (taken(mutex, err)) return true;
  if (err !== ETIMEDOUT) check('pthread_mutex_timedlock', err);
  return false;
}
